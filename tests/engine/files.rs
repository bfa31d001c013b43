//! Model directories, state files and weight files: round trips, and a typed error (never a
//! panic, never a half-loaded model) for every kind of bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atheria::io::model_dir::{load_model, save_model, CONFIG_FILE, RECORD_FILE};
use atheria::io::state_file::{load_state, save_state, HostState};
use atheria::io::weights::WeightFile;
use atheria::io::HostTensor;
use atheria::models::{Architecture, Model, ModelConfig};
use atheria::state::{generate, InitialState, Universe};
use atheria::{step, Error};
use burn::backend::NdArray;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};

use crate::support::{fixtures, scratch, to_vec, trajectory};

type B = NdArray;

fn outputs(model: &Model<B>, grid: usize) -> Vec<f32> {
    let device = Default::default();
    let host = generate(&InitialState::Random, 1, grid, grid, model.config.d_state, 4).unwrap();
    let psi = Universe::<B>::from_host(&host, &device).psi;
    to_vec(step(model, 0.01, psi, None).psi)
}

#[test]
fn model_directories_round_trip_exactly() {
    let device = Default::default();
    for arch in Architecture::all() {
        let dir = scratch(&format!("roundtrip-{arch}"));
        let mut config = ModelConfig::new(arch, 2, 8);
        config.gamma = 0.02;
        config.description = Some("test".into());
        let model = Model::<B>::seeded(config.clone(), 11, &device).unwrap();
        save_model(&dir, &model).unwrap();
        let loaded = load_model::<B>(&dir, &device).unwrap();
        assert_eq!(loaded.config, config);
        assert_eq!(outputs(&loaded, 8), outputs(&model, 8), "{arch}");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "temporary files left behind: {leftovers:?}");
    }
}

#[test]
fn the_record_is_burns_named_mpk_format() {
    let device = Default::default();
    let dir = scratch("mpk");
    let model = Model::<B>::seeded(ModelConfig::new(Architecture::Unet, 2, 8), 3, &device).unwrap();
    save_model(&dir, &model).unwrap();
    let skeleton = Model::<B>::seeded(ModelConfig::new(Architecture::Unet, 2, 8), 99, &device).unwrap();
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let law = skeleton.law.load_file(dir.join(RECORD_FILE), &recorder, &device).unwrap();
    let reloaded = Model { config: model.config.clone(), law };
    assert_eq!(outputs(&reloaded, 8), outputs(&model, 8));
}

fn saved_model(name: &str, arch: Architecture) -> PathBuf {
    let dir = scratch(name);
    let model = Model::<B>::seeded(ModelConfig::new(arch, 2, 8), 1, &Default::default()).unwrap();
    save_model(&dir, &model).unwrap();
    dir
}

fn load_error(dir: &Path) -> Error {
    match load_model::<B>(dir, &Default::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(error) => error,
    }
}

#[test]
fn bad_model_directories_are_typed_errors() {
    let missing = load_error(Path::new("/nonexistent/model"));
    assert!(matches!(missing, Error::Io { .. }), "{missing}");

    let dir = saved_model("bad-config", Architecture::Unet);
    for (text, expected) in [
        ("{not json", "invalid model config"),
        (r#"{"arch":"transformer","d_state":2,"hidden_channels":8}"#, "unknown variant"),
        (r#"{"arch":"unet","d_state":0,"hidden_channels":8}"#, "d_state"),
        (r#"{"arch":"unet","d_state":2,"hidden_channels":8,"gamma":7}"#, "gamma"),
    ] {
        std::fs::write(dir.join(CONFIG_FILE), text).unwrap();
        let error = load_error(&dir);
        assert!(matches!(error, Error::Format { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(CONFIG_FILE) && message.contains(expected), "{message}");
    }

    // A record of another architecture or size than the config says.
    let dir = saved_model("wrong-arch", Architecture::Unet);
    std::fs::write(dir.join(CONFIG_FILE), r#"{"arch":"mlp","d_state":2,"hidden_channels":8}"#).unwrap();
    assert!(matches!(load_error(&dir), Error::Format { .. }));
    let dir = saved_model("wrong-size", Architecture::Unet);
    std::fs::write(dir.join(CONFIG_FILE), r#"{"arch":"unet","d_state":2,"hidden_channels":16}"#).unwrap();
    let error = load_error(&dir);
    assert!(matches!(error, Error::ShapeMismatch { .. } | Error::Format { .. }), "{error}");

    // Truncated and garbage records: the checksum in config.json catches them.
    let dir = saved_model("truncated", Architecture::Unet);
    let record = std::fs::read(dir.join(RECORD_FILE)).unwrap();
    for cut in [0, 1, 100, record.len() / 2, record.len() - 1] {
        std::fs::write(dir.join(RECORD_FILE), &record[..cut]).unwrap();
        let error = load_error(&dir);
        assert!(matches!(error, Error::ChecksumMismatch { .. }), "cut {cut}: {error}");
    }
    std::fs::write(dir.join(RECORD_FILE), vec![0xAB; 4096]).unwrap();
    assert!(matches!(load_error(&dir), Error::ChecksumMismatch { .. }));
    // Without a checksum (an older directory), burn's decoder still refuses them.
    let config = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let mut fields = config.as_object().unwrap().clone();
    fields.remove("record_sha256");
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(&fields).unwrap()).unwrap();
    for cut in [0, 1, 100, record.len() / 2, record.len() - 1] {
        std::fs::write(dir.join(RECORD_FILE), &record[..cut]).unwrap();
        let error = load_error(&dir);
        assert!(matches!(error, Error::Format { .. }), "cut {cut}: {error}");
    }
    std::fs::write(dir.join(RECORD_FILE), vec![0xAB; 4096]).unwrap();
    assert!(matches!(load_error(&dir), Error::Format { .. }));
}

fn state(batch: usize) -> HostState {
    generate(&InitialState::Random, batch, 8, 12, 3, 5).unwrap()
}

#[test]
fn state_files_round_trip_with_memory() {
    let dir = scratch("state");
    let path = dir.join("state.safetensors");
    let mut original = state(2);
    original.step = 42;
    let memory = HostTensor { shape: vec![2, 5, 2, 3], data: (0..60).map(|i| i as f32).collect() };
    original.memory = Some((memory.clone(), memory));
    save_state(&path, &original).unwrap();
    assert_eq!(load_state(&path).unwrap(), original);

    // Through the engine and back.
    let device = Default::default();
    let mut plain = state(1);
    plain.step = 3;
    let universe = Universe::<B>::from_host(&plain, &device);
    assert_eq!(universe.to_host().unwrap(), plain);
}

fn write_tensors(path: &Path, tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (name.to_string(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn bad_state_files_are_typed_errors() {
    let dir = scratch("bad-state");
    let path = dir.join("s.safetensors");
    let good = f32_bytes(&[0.5; 2 * 4 * 4 * 2]);
    let shape = vec![2, 4, 4, 2];

    let mut with_nan = good.clone();
    with_nan[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    write_tensors(
        &path,
        vec![
            ("re", safetensors::Dtype::F32, shape.clone(), with_nan),
            ("im", safetensors::Dtype::F32, shape.clone(), good.clone()),
        ],
    );
    assert!(matches!(load_state(&path), Err(Error::NonFinite { count: 1, .. })));

    let doubles: Vec<u8> = [0.5f64; 64].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_tensors(
        &path,
        vec![
            ("re", safetensors::Dtype::F64, shape.clone(), doubles),
            ("im", safetensors::Dtype::F32, shape.clone(), good.clone()),
        ],
    );
    assert!(matches!(load_state(&path), Err(Error::DType { .. })));

    write_tensors(&path, vec![("re", safetensors::Dtype::F32, shape.clone(), good.clone())]);
    let error = load_state(&path).unwrap_err();
    assert!(error.to_string().contains("missing tensor 'im'"), "{error}");

    write_tensors(
        &path,
        vec![
            ("re", safetensors::Dtype::F32, shape.clone(), good.clone()),
            ("im", safetensors::Dtype::F32, vec![2, 4, 2, 4], good.clone()),
        ],
    );
    assert!(load_state(&path).unwrap_err().to_string().contains("differ in shape"));

    save_state(&path, &state(1)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 7, 60, bytes.len() - 3] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(matches!(load_state(&path), Err(Error::Format { .. })), "cut {cut}");
    }
    assert!(matches!(load_state(&dir.join("absent.safetensors")), Err(Error::Io { .. })));
}

/// The unet fixture's weights with one change applied.
fn edited_weights(edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) -> WeightFile {
    let mut weights = trajectory(Architecture::Unet).weights;
    edit(&mut weights.tensors);
    weights
}

fn weights_error(weights: &WeightFile) -> Error {
    let config = trajectory(Architecture::Unet).config;
    match Model::<B>::from_weights(config, weights, &Default::default()) {
        Ok(_) => panic!("loaded"),
        Err(error) => error,
    }
}

#[test]
fn weights_that_do_not_fit_the_architecture_are_named() {
    let missing = edited_weights(|t| {
        t.remove("down2.1.conv_block.3.weight");
    });
    match weights_error(&missing) {
        Error::MissingTensor { name, expected, .. } => {
            assert_eq!(name, "down2.1.conv_block.3.weight");
            assert_eq!(expected, vec![28, 28, 3, 3]);
        }
        other => panic!("{other}"),
    }

    let extra = edited_weights(|t| {
        t.insert("head.weight".into(), HostTensor { shape: vec![1], data: vec![0.0] });
    });
    match weights_error(&extra) {
        Error::UnexpectedTensors { names, .. } => assert_eq!(names, vec!["head.weight".to_string()]),
        other => panic!("{other}"),
    }

    let reshaped = edited_weights(|t| {
        let tensor = t.get_mut("outc.weight").unwrap();
        tensor.shape = vec![6, 7, 1, 1, 1];
    });
    match weights_error(&reshaped) {
        Error::ShapeMismatch { name, expected, found, .. } => {
            assert_eq!(name, "outc.weight");
            assert_eq!(expected, vec![6, 7, 1, 1]);
            assert_eq!(found, vec![6, 7, 1, 1, 1]);
        }
        other => panic!("{other}"),
    }

    // The lab's MLP checkpoint is not a U-Net: every U-Net tensor is missing.
    let mlp = WeightFile::read(&fixtures().join("mlp.safetensors")).unwrap();
    assert!(matches!(weights_error(&mlp), Error::MissingTensor { .. }));
}

#[test]
fn unreadable_weight_files_are_typed_errors() {
    let dir = scratch("bad-weights");
    let safetensors = std::fs::read(fixtures().join("unet.safetensors")).unwrap();
    let pickle = std::fs::read(fixtures().join("pytorch/unet.pth")).unwrap();
    for (name, bytes) in [("cut.safetensors", &safetensors), ("cut.pth", &pickle)] {
        for cut in [0, 10, bytes.len() / 3, bytes.len() - 5] {
            let path = dir.join(name);
            std::fs::write(&path, &bytes[..cut]).unwrap();
            match WeightFile::read(&path) {
                Err(Error::Format { path: reported, .. }) => assert_eq!(reported, path),
                other => panic!("{name} cut at {cut}: {:?}", other.map(|w| w.tensors.len())),
            }
        }
    }
    let path = dir.join("ints.safetensors");
    write_tensors(&path, vec![("outc.bias", safetensors::Dtype::I64, vec![2], vec![0; 16])]);
    match WeightFile::read(&path) {
        Err(Error::DType { name, .. }) => assert_eq!(name, "outc.bias"),
        other => panic!("{:?}", other.map(|w| w.tensors.len())),
    }
    assert!(matches!(WeightFile::read(&dir.join("absent.pth")), Err(Error::Io { .. })));
}
