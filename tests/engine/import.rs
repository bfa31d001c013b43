//! `atheria import` and the weight readers: every wrapping of the lab's checkpoints imports with
//! no flags and matches PyTorch; flags that contradict the tensors, and every kind of bad file,
//! are typed errors naming the file and the tensor; a failed import leaves nothing behind; and no
//! corruption of a file makes a reader panic or silently change a PyTorch tensor.

use std::path::{Path, PathBuf};

use atheria::app::{import, ImportOptions, ImportReport};
use atheria::io::model_dir::{load_model, CONFIG_FILE, RECORD_FILE};
use atheria::io::state_file::{load_state, parse_state, save_state};
use atheria::io::weights::WeightFile;
use atheria::models::detect::ConfigHints;
use atheria::models::{Architecture, Model};
use atheria::state::Universe;
use atheria::{Error, Simulation};
use burn::backend::NdArray;

use crate::support::{
    assert_fails_with, atheria, fixtures, relative_error, scratch, state_error, trajectory, Trajectory,
};

type B = NdArray;

const ONE_STEP_TOLERANCE: f64 = 1e-5;

fn options(checkpoint: &Path, out: &Path, hints: ConfigHints) -> ImportOptions {
    ImportOptions { checkpoint: checkpoint.to_path_buf(), out: out.to_path_buf(), hints, force: false }
}

pub fn import_into(checkpoint: &Path, out: &Path, hints: ConfigHints) -> atheria::Result<ImportReport> {
    import(&options(checkpoint, out, hints))
}

/// One step of a model loaded from `dir`, from the fixture's psi0, against PyTorch's psi1.
fn one_step_error(dir: &Path, fixture: &Trajectory) -> f64 {
    let device = Default::default();
    let model = load_model::<B>(dir, &device).unwrap();
    let universe = Universe::from_host(&fixture.states[&0], &device);
    let mut simulation = Simulation::new(model, universe, fixture.gamma).unwrap();
    simulation.step();
    state_error(&simulation.universe.to_host().unwrap(), &fixture.states[&1])
}

/// Every file holding the weights of `arch`, as the lab (or a user) may have saved them.
fn variants(arch: Architecture) -> Vec<PathBuf> {
    let dir = fixtures();
    let mut files = vec![
        dir.join(format!("{arch}.safetensors")),
        dir.join(format!("pytorch/{arch}.pth")),
        dir.join(format!("pytorch/{arch}_checkpoint.pth")),
    ];
    match arch {
        Architecture::Unet => files.push(dir.join("pytorch/unet_compiled.pt")),
        Architecture::Mlp => {
            for name in ["mlp_compiled.pt", "mlp_dataparallel.pt", "mlp_legacy.pth", "mlp_f64.pth"] {
                files.push(dir.join("pytorch").join(name));
            }
        }
        _ => {}
    }
    files
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap()
}

#[test]
fn every_wrapping_of_every_architecture_imports_without_flags_and_matches_pytorch() {
    let scratch = scratch("import-variants");
    let mut prefixed = Vec::new();
    for (index, arch) in Architecture::all().enumerate() {
        let fixture = trajectory(arch);
        // A UNet-unitary's weights are a UNet's: without --arch it imports as unet; an RMSNorm
        // U-Net imports as the lab ran it, without the unitary product.
        let expected = match arch {
            Architecture::UnetUnitary => Architecture::Unet,
            Architecture::UnetUnitaryRmsnorm => Architecture::UnetRmsnorm,
            other => other,
        };
        for (number, file) in variants(arch).iter().enumerate() {
            let out = scratch.join(format!("{arch}-{number}"));
            let report = import_into(file, &out, ConfigHints::default())
                .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
            let what = file.display();
            assert_eq!(report.config.arch, expected, "{what}");
            assert_eq!(report.config.d_state, fixture.config.d_state, "{what}");
            assert_eq!(report.config.hidden_channels, fixture.config.hidden_channels, "{what}");
            assert!(
                report.notes.iter().any(|n| n.starts_with(&format!("inferred {expected}"))),
                "{what}: {:?}",
                report.notes
            );
            assert!(
                report.notes.iter().any(|n| n.contains("inferred d_state 3 and hidden")),
                "{what}: {:?}",
                report.notes
            );
            if expected != arch {
                assert!(
                    report.notes.iter().any(|n| n.contains(&format!("--arch {arch}"))),
                    "{:?}",
                    report.notes
                );
            } else {
                let error = one_step_error(&out, &fixture);
                assert!(error <= ONE_STEP_TOLERANCE, "{what}: 1-step error {error:.3e}");
            }

            let config = config_json(&out);
            assert_eq!(config["trained"], true, "{what}");
            let provenance = &config["provenance"];
            assert_eq!(provenance["imported_from"], file.display().to_string());
            if file.to_string_lossy().contains("_checkpoint") {
                // Written by scripts/make_fixtures.py: episode 1500 + the architecture's index.
                assert_eq!(provenance["episode"], 1500 + index as i64, "{what}");
                assert_eq!(provenance["metrics"]["loss"], 1.25, "{what}");
                assert!(provenance["state_dict_key"].is_string(), "{what}");
            } else {
                assert!(provenance.get("episode").is_none(), "{what}");
            }
            if provenance.get("stripped_prefixes").is_some() {
                prefixed.push(arch);
            }
        }
    }
    // The fixtures put torch.compile's prefix on some file of every architecture.
    for arch in Architecture::all() {
        assert!(prefixed.contains(&arch), "no prefixed variant of {arch} was recognised");
    }

    // The unitary choices, made explicitly, match PyTorch's unitary references.
    for arch in [Architecture::UnetUnitary, Architecture::UnetUnitaryRmsnorm] {
        let fixture = trajectory(arch);
        let out = scratch.join(format!("explicit-{arch}"));
        let hints = ConfigHints { arch: Some(arch), ..ConfigHints::default() };
        let file = fixtures().join(format!("pytorch/{arch}_checkpoint.pth"));
        let report = import_into(&file, &out, hints).unwrap();
        assert_eq!(report.config.arch, arch);
        assert!(report.notes.iter().all(|n| !n.contains("--arch")), "{:?}", report.notes);
        let error = one_step_error(&out, &fixture);
        assert!(error <= ONE_STEP_TOLERANCE, "explicit {arch}: {error:.3e}");
    }
}

#[test]
fn other_float_dtypes_are_converted_and_said_so() {
    let scratch = scratch("import-dtypes");
    let reference = trajectory(Architecture::Mlp).weights;
    let values = |w: &WeightFile| -> Vec<f32> { w.tensors.values().flat_map(|t| t.data.clone()).collect() };
    // f64 copies of f32 values convert back exactly; f16 and bf16 round to 11 and 8 bits.
    for (name, dtype, tolerance) in [("f64", "F64", 0.0), ("f16", "F16", 1e-3), ("bf16", "BF16", 8e-3)] {
        let file = fixtures().join(format!("pytorch/mlp_{name}.pth"));
        let weights = WeightFile::read(&file).unwrap();
        assert_eq!(weights.origin.converted_dtypes(), vec![dtype]);
        let error = relative_error(&values(&weights), &values(&reference));
        assert!(error <= tolerance, "{name}: {error:.3e}");
        if name != "f64" {
            assert!(error > 0.0, "{name} should have lost precision");
        }
        let report = import_into(&file, &scratch.join(name), ConfigHints::default()).unwrap();
        assert!(
            report.notes.iter().any(|n| n == &format!("converted {dtype} tensors to f32")),
            "{:?}",
            report.notes
        );
    }
}

fn import_error(file: &Path, hints: ConfigHints) -> Error {
    let out = scratch("import-error").join("out");
    match import_into(file, &out, hints) {
        Ok(report) => panic!("{} imported: {}", file.display(), report.summary()),
        Err(error) => {
            assert!(!out.exists(), "a failed import left {}", out.display());
            error
        }
    }
}

#[test]
fn flags_that_contradict_the_tensors_are_named() {
    let pytorch = fixtures().join("pytorch");
    let cases: [(&str, ConfigHints, &str, &str); 6] = [
        (
            "mlp.pth",
            ConfigHints { arch: Some(Architecture::Unet), ..Default::default() },
            "--arch",
            "net.0.weight",
        ),
        (
            "unet.pth",
            ConfigHints { arch: Some(Architecture::Mlp), ..Default::default() },
            "--arch",
            "inc.conv_block.1.bias",
        ),
        (
            "unet-unitary-rmsnorm.pth",
            ConfigHints { arch: Some(Architecture::UnetUnitary), ..Default::default() },
            "--arch",
            "inc.conv_block.1.weight",
        ),
        (
            "unet-convlstm.pth",
            ConfigHints { arch: Some(Architecture::Unet), ..Default::default() },
            "--arch",
            "conv_gates.weight",
        ),
        (
            "unet.pth",
            ConfigHints { d_state: Some(4), ..Default::default() },
            "--d-state",
            "inc.conv_block.0.weight",
        ),
        (
            "mlp_checkpoint.pth",
            ConfigHints { hidden: Some(8), ..Default::default() },
            "--hidden",
            "net.0.weight",
        ),
    ];
    for (file, hints, flag, tensor) in cases {
        let path = pytorch.join(file);
        match import_error(&path, hints) {
            Error::FlagMismatch { path: reported, flag: got_flag, tensor: got_tensor, .. } => {
                assert_eq!(reported, path);
                assert_eq!((got_flag.as_str(), got_tensor.as_str()), (flag, tensor), "{file}");
            }
            other => panic!("{file}: {other}"),
        }
    }
    // Flags that agree are accepted, and then nothing is reported as inferred.
    let hints = ConfigHints { arch: Some(Architecture::Mlp), d_state: Some(3), hidden: Some(16) };
    let report = import_into(&pytorch.join("mlp.pth"), &scratch("import-agree").join("out"), hints).unwrap();
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn files_that_are_not_usable_weights_are_typed_errors() {
    let pytorch = fixtures().join("pytorch");
    match import_error(&pytorch.join("mlp_int.pth"), ConfigHints::default()) {
        Error::DType { name, found, .. } => assert_eq!((name.as_str(), found.as_str()), ("step", "I64")),
        other => panic!("{other}"),
    }
    // A pickled nn.Module is not a state_dict.
    let module = pytorch.join("mlp_module.pth");
    let error = import_error(&module, ConfigHints::default());
    assert!(matches!(error, Error::Format { ref path, .. } if path == &module), "{error}");

    let dir = scratch("import-bad-files");
    let missing = dir.join("absent.pth");
    assert!(
        matches!(import_error(&missing, ConfigHints::default()), Error::Io { path, .. } if path == missing)
    );

    // Tensors of no known architecture.
    let strange = dir.join("strange.safetensors");
    write_f32_safetensors(&strange, &[("encoder.weight", vec![2, 2], vec![0.5; 4])]);
    let error = import_error(&strange, ConfigHints::default());
    assert!(matches!(error, Error::UnknownLayout { .. }), "{error}");
    assert!(error.to_string().contains("encoder.weight"), "{error}");

    // A NaN weight (a diverged run) is named.
    let mut weights = trajectory(Architecture::Mlp).weights;
    let bias = weights.tensors.get_mut("net.2.bias").unwrap();
    bias.data[3] = f32::NAN;
    let named: Vec<(&str, Vec<usize>, Vec<f32>)> =
        weights.tensors.iter().map(|(n, t)| (n.as_str(), t.shape.clone(), t.data.clone())).collect();
    let diverged = dir.join("diverged.safetensors");
    write_f32_safetensors(&diverged, &named);
    match import_error(&diverged, ConfigHints::default()) {
        Error::NonFinite { name, count, .. } => assert_eq!((name.as_str(), count), ("net.2.bias", 1)),
        other => panic!("{other}"),
    }

    // Missing, unexpected and misshapen tensors of an inferred architecture.
    let without = |skip: &str| -> Vec<(&str, Vec<usize>, Vec<f32>)> {
        named
            .iter()
            .filter(|(n, _, _)| *n != skip)
            .map(|(n, s, _)| (*n, s.clone(), vec![0.1; s.iter().product()]))
            .collect()
    };
    let partial = dir.join("partial.safetensors");
    write_f32_safetensors(&partial, &without("net.4.bias"));
    match import_error(&partial, ConfigHints::default()) {
        Error::MissingTensor { name, arch, .. } => {
            assert_eq!((name.as_str(), arch.as_str()), ("net.4.bias", "mlp"))
        }
        other => panic!("{other}"),
    }
    let mut extra = without("");
    extra.push(("net.6.weight", vec![1], vec![0.0]));
    write_f32_safetensors(&partial, &extra);
    assert!(
        matches!(import_error(&partial, ConfigHints::default()), Error::UnexpectedTensors { names, .. } if names == ["net.6.weight"])
    );
    let mut reshaped = without("net.2.weight");
    reshaped.push(("net.2.weight", vec![16, 16], vec![0.1; 256]));
    write_f32_safetensors(&partial, &reshaped);
    assert!(
        matches!(import_error(&partial, ConfigHints::default()), Error::ShapeMismatch { name, .. } if name == "net.2.weight")
    );
}

fn write_f32_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            (
                name.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn the_output_directory_is_replaced_only_with_force_and_whole() {
    let dir = scratch("import-atomic");
    let mlp = fixtures().join("pytorch/mlp.pth");
    let unet = fixtures().join("pytorch/unet.pth");
    let out = dir.join("model");

    // An empty directory is fine.
    std::fs::create_dir_all(&out).unwrap();
    import_into(&mlp, &out, ConfigHints::default()).unwrap();
    let first = std::fs::read(out.join(RECORD_FILE)).unwrap();

    // A full one is refused and left alone, also when the refusal comes before reading.
    match import_into(&unet, &out, ConfigHints::default()) {
        Err(Error::OutputExists { path }) => assert_eq!(path, out),
        other => panic!("{:?}", other.map(|r| r.summary())),
    }
    assert_eq!(std::fs::read(out.join(RECORD_FILE)).unwrap(), first);

    // --force replaces it whole.
    let forced = ImportOptions { force: true, ..options(&unet, &out, ConfigHints::default()) };
    assert_eq!(import(&forced).unwrap().config.arch, Architecture::Unet);
    assert_eq!(config_json(&out)["arch"], "unet");

    // A failing forced import keeps the previous model.
    let before = std::fs::read(out.join(RECORD_FILE)).unwrap();
    let bad = ImportOptions {
        force: true,
        ..options(&fixtures().join("pytorch/mlp_int.pth"), &out, ConfigHints::default())
    };
    assert!(import(&bad).is_err());
    assert_eq!(std::fs::read(out.join(RECORD_FILE)).unwrap(), before);

    // Nothing but the model directory is left next to it.
    let entries: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(entries, ["model"]);
    let mut files: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, [CONFIG_FILE, RECORD_FILE]);
}

#[test]
fn an_imported_record_and_its_states_round_trip_exactly() {
    let device = Default::default();
    let dir = scratch("import-roundtrip");
    let fixture = trajectory(Architecture::UnetConvlstm);
    let file = fixtures().join("pytorch/unet-convlstm_checkpoint.pth");
    let out = dir.join("model");
    import_into(&file, &out, ConfigHints::default()).unwrap();

    // The record holds exactly the checkpoint's tensors: same outputs as building from them.
    let direct =
        Model::<B>::from_weights(fixture.config.clone(), &WeightFile::read(&file).unwrap(), &device).unwrap();
    let loaded = load_model::<B>(&out, &device).unwrap();
    let run = |model: Model<B>, host: &atheria::io::state_file::HostState, steps: usize| {
        let mut simulation =
            Simulation::new(model, Universe::from_host(host, &device), fixture.gamma).unwrap();
        atheria::dynamics::advance(&mut simulation, steps as u64);
        simulation.universe.to_host().unwrap()
    };
    let from_direct = run(direct.clone(), &fixture.states[&0], 2);
    let from_loaded = run(loaded.clone(), &fixture.states[&0], 2);
    assert_eq!(from_direct, from_loaded);
    assert!(from_loaded.memory.is_some());

    // The state, memory included, survives a file: continuing from it equals not stopping.
    let path = dir.join("state.safetensors");
    save_state(&path, &from_loaded).unwrap();
    let reread = load_state(&path).unwrap();
    assert_eq!(reread, from_loaded);
    assert_eq!(run(loaded.clone(), &reread, 1), run(direct, &from_direct, 1));
    assert_eq!(parse_state(&path, &std::fs::read(&path).unwrap()).unwrap(), reread);
}

#[test]
fn run_infers_the_architecture_of_weights() {
    let dir = scratch("import-run");
    let out = dir.join("final.safetensors");
    let weights = fixtures().join("pytorch/unet-convlstm_checkpoint.pth");
    let output = atheria(&[
        "run",
        "--device",
        "cpu",
        "--weights",
        weights.to_str().unwrap(),
        "--grid",
        "8",
        "--steps",
        "2",
        "--save-state",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("inferred unet-convlstm"), "{text}");
    assert!(text.contains("ran 2 steps of unet-convlstm d3 h7"), "{text}");
    let state = load_state(&out).unwrap();
    let (hidden, _) = state.memory.expect("the ConvLSTM memory is saved");
    assert_eq!(hidden.shape, vec![1, 28, 2, 2]);
}

#[test]
fn the_import_command_says_what_it_inferred_or_fails_in_one_line() {
    let dir = scratch("import-cli");
    let out = dir.join("model");
    let checkpoint = fixtures().join("pytorch/unet-unitary_checkpoint.pth");
    let output = atheria(&["import", checkpoint.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("inferred unet"), "{text}");
    assert!(text.contains("pass --arch unet-unitary"), "{text}");
    assert!(text.contains("imported unet d_state 3 hidden 7"), "{text}");

    let bad_file = dir.join("garbage.pth");
    std::fs::write(&bad_file, b"not a checkpoint at all").unwrap();
    let (other_x, other_y) = (dir.join("x"), dir.join("y"));
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["import", checkpoint.to_str().unwrap(), "--out", out.to_str().unwrap()], "--force"),
        (
            vec!["import", checkpoint.to_str().unwrap(), "--out", other_x.to_str().unwrap(), "--arch", "mlp"],
            "--arch mlp does not match",
        ),
        (vec!["import", bad_file.to_str().unwrap(), "--out", other_y.to_str().unwrap()], "garbage.pth"),
        (vec!["run", "--device", "cpu", "--weights", bad_file.to_str().unwrap()], "garbage.pth"),
    ];
    for (args, needle) in cases {
        assert_fails_with(&args, needle);
    }
    assert!(!dir.join("x").exists() && !dir.join("y").exists());
}
