//! The lab's own files (scripts/make_lab_fixtures.py): TorchScript exports, experiments (a
//! folder in the lab's layout and the zip it exports), the first engine's checkpoints and
//! saved states. Each imports with no flags as the lab ran it and matches PyTorch after 1 step
//! within 1e-5 and after 20 within 1e-3, on the CPU backend and on wgpu.

use std::path::{Path, PathBuf};

use atheria::io::model_dir::load_model;
use atheria::io::state_file::{load_state, HostState};
use atheria::models::detect::ConfigHints;
use atheria::models::{Architecture, Model};
use atheria::{EngineBackend, Error};
use burn::backend::{NdArray, Wgpu};

use crate::import::import_into;
use crate::support::{
    atheria, fixtures, replay, scratch, state_error, stderr, trajectory, universe, wgpu_device, Fixture,
};

const ONE_STEP: f64 = 1e-5;
const MANY_STEPS: f64 = 1e-3;

fn lab(name: &str) -> PathBuf {
    fixtures().join("lab").join(name)
}

/// `model` from `start` against PyTorch's states after 1 and `steps` steps, on the CPU backend
/// and on wgpu.
fn assert_matches(
    what: &str,
    dir: &Path,
    start: &HostState,
    gamma: f64,
    references: (&HostState, &HostState),
    steps: u64,
) {
    fn on<B: EngineBackend>(
        dir: &Path,
        start: &HostState,
        gamma: f64,
        steps: u64,
        device: &B::Device,
    ) -> (HostState, HostState) {
        replay::<B>(load_model::<B>(dir, device).unwrap(), start, gamma, steps, device)
    }
    for (backend, (first, last)) in [
        ("cpu", on::<NdArray>(dir, start, gamma, steps, &Default::default())),
        ("wgpu", on::<Wgpu>(dir, start, gamma, steps, &wgpu_device())),
    ] {
        let one = state_error(&first, references.0);
        let many = state_error(&last, references.1);
        assert!(one <= ONE_STEP, "{what} on {backend}: 1-step error {one:.3e}");
        assert!(many <= MANY_STEPS, "{what} on {backend}: {steps}-step error {many:.3e}");
    }
}

/// Imports `file` with no flags into a fresh directory.
fn import(file: &Path, name: &str) -> (PathBuf, atheria::app::ImportReport) {
    let out = scratch(&format!("lab-{name}")).join("model");
    let report = import_into(file, &out, ConfigHints::default())
        .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    (out, report)
}

#[test]
fn torchscript_exports_import_as_their_class_and_match_pytorch() {
    for (file, arch) in [
        ("unet_traced.pt", Architecture::Unet),
        ("unet-unitary_traced.pt", Architecture::UnetUnitary),
        // The lab's engine ran UNetUnitaryRMSNorm without the unitary product.
        ("unet-rmsnorm_traced.pt", Architecture::UnetRmsnorm),
        ("deep-qca_traced.pt", Architecture::DeepQca),
    ] {
        let (out, report) = import(&lab(file), file);
        assert_eq!(report.config.arch, arch, "{file}");
        assert!(
            report.notes.iter().any(|note| note.contains("the archive's class")),
            "{file}: {:?}",
            report.notes
        );
        let fixture = trajectory(arch);
        let references = (&fixture.states[&1], &fixture.states[&fixture.steps]);
        assert_matches(file, &out, &fixture.states[&0], fixture.gamma, references, fixture.steps);
    }
}

#[test]
fn torchscript_of_a_class_atheria_lacks_is_refused_naming_it() {
    let out = scratch("lab-mock").join("model");
    match import_into(&lab("mock_traced.pt"), &out, ConfigHints::default()) {
        Err(Error::UnknownLayout { reason, .. }) => assert!(reason.contains("'MockModel'"), "{reason}"),
        other => panic!("expected UnknownLayout, got {:?}", other.map(|report| report.config)),
    }
    assert!(!out.exists());
}

#[test]
fn lab_experiments_import_with_their_settings_and_newest_checkpoint() {
    let fixture = trajectory(Architecture::UnetUnitary);
    let folder = lab("output/experiments/LabUnitary");
    for (what, path) in [("folder", folder), ("zip", lab("LabUnitary.zip"))] {
        let (out, report) = import(&path, what);
        let config = &report.config;
        assert_eq!(config.arch, Architecture::UnetUnitary, "{what}");
        assert_eq!((config.d_state, config.hidden_channels), (3, 7), "{what}");
        assert_eq!(config.gamma, fixture.gamma, "{what}: GAMMA_DECAY");
        assert_eq!(config.run_defaults.grid, Some(32), "{what}");
        assert_eq!(config.run_defaults.training_grid, Some(16), "{what}");
        assert_eq!(config.run_defaults.init.as_deref(), Some("complex-noise"), "{what}");
        assert!(
            report.notes.iter().any(|note| note.contains("checkpoint_ep20.pth")),
            "{what}: {:?}",
            report.notes
        );
        // Only the newest checkpoint holds the reference weights: a match proves the choice.
        let references = (&fixture.states[&1], &fixture.states[&fixture.steps]);
        assert_matches(what, &out, &fixture.states[&0], config.gamma, references, fixture.steps);
    }
}

#[test]
fn a_run_of_an_imported_experiment_starts_as_the_lab_did() {
    let (out, _) = import(&lab("LabUnitary.zip"), "defaults");
    let state = scratch("lab-defaults-run").join("state.safetensors");
    let output = atheria(
        &["run", "--device", "cpu", "--model", out.to_str().unwrap(), "--steps", "1"]
            .into_iter()
            .chain(["--save-state", state.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("at 32x32"), "{}", stderr(&output));
    // The model was trained on 16x16: the 32x32 start is a 16x16 complex-noise state, tiled.
    let start = atheria::state::generate(
        &atheria::state::InitialState::ComplexNoise { strength: 0.1 },
        1,
        16,
        16,
        3,
        0,
    )
    .unwrap();
    let tiled = atheria::state::tile(&start, 32, 32).unwrap();
    let device = Default::default();
    let model = load_model::<NdArray>(&out, &device).unwrap();
    let (first, _) = replay::<NdArray>(model, &tiled, 0.05, 1, &device);
    assert_eq!(load_state(&state).unwrap(), first);
}

#[test]
fn the_first_engine_imports_from_its_checkpoints_and_runs_without_flags() {
    let fixture = trajectory(Architecture::QcaOperatorDeep);
    assert_eq!(fixture.gamma, 0.0, "the first engine had no decay");
    for (what, path) in [
        ("bare state_dict", fixtures().join("pytorch/qca-operator-deep.pth")),
        ("training checkpoint", lab("qca_checkpoint_eps0.pth")),
        ("experiment", lab("FirstEngine.zip")),
    ] {
        let (out, report) = import(&path, what);
        assert_eq!(report.config.arch, Architecture::QcaOperatorDeep, "{what}");
        assert_eq!(report.config.gamma, 0.0, "{what}: the model carries the engine's rule");
        let references = (&fixture.states[&1], &fixture.states[&fixture.steps]);
        assert_matches(what, &out, &fixture.states[&0], report.config.gamma, references, fixture.steps);
    }
    // `atheria import PEF.pth --out m && atheria run --model m`, nothing else.
    let dir = scratch("lab-first-engine-cli");
    let out = dir.join("m");
    let pef = fixtures().join("pytorch/qca-operator-deep.pth");
    let imported = atheria(&["import", pef.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(stderr(&imported).contains("inferred qca-operator-deep"), "{}", stderr(&imported));
    let ran = atheria(&[
        "run",
        "--device",
        "cpu",
        "--model",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--grid",
        "12x20",
    ]);
    assert!(ran.status.success(), "{}", stderr(&ran));
    assert!(stderr(&ran).contains("ran 2 steps of qca-operator-deep d3 h12"), "{}", stderr(&ran));
}

#[test]
fn a_conv_neighbors_that_is_not_the_fixed_pattern_is_refused() {
    let mut weights = trajectory(Architecture::DeepQca).weights;
    weights.tensors.get_mut("conv_neighbors.weight").unwrap().data[4] = 1.0;
    let config = atheria::ModelConfig::new(Architecture::DeepQca, 3, 10);
    match Model::<NdArray>::from_weights(config, &weights, &Default::default()) {
        Err(Error::Format { message, .. }) => assert!(message.contains("conv_neighbors.weight"), "{message}"),
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn lab_snapshots_are_initial_states() {
    let fixture = trajectory(Architecture::Unet);
    let snapshot = load_state(&lab("snapshot.pt")).unwrap();
    assert_eq!(snapshot.step, 7, "the step of the snapshot manager's JSON");
    let start = universe(&fixture.states[&0], 0);
    assert_eq!((&snapshot.re, &snapshot.im), (&start.re, &start.im), "complex64 psi read exactly");
    let wide = load_state(&lab("snapshot_c128.pt")).unwrap();
    let second = universe(&fixture.states[&0], 1);
    assert_eq!((&wide.re, &wide.im, wide.step), (&second.re, &second.im, 0), "complex128 [H, W, d]");

    let (out, _) = import(&fixtures().join("unet.safetensors"), "snapshot-model");
    let snapshot = HostState { step: 0, ..snapshot };
    let references = (universe(&fixture.states[&1], 0), universe(&fixture.states[&fixture.steps], 0));
    assert_matches("snapshot", &out, &snapshot, fixture.gamma, (&references.0, &references.1), fixture.steps);

    // The first engine's large-simulation checkpoint: real x_real and x_imag.
    let first_engine = trajectory(Architecture::QcaOperatorDeep);
    let large = load_state(&lab("large_sim_state_step_5.pth")).unwrap();
    assert_eq!(large.step, 5);
    let start = universe(&first_engine.states[&0], 0);
    assert_eq!((&large.re, &large.im), (&start.re, &start.im));
}

#[test]
fn a_convlstm_snapshot_brings_its_memory() {
    let state = load_state(&lab("convlstm_state.pt")).unwrap();
    let (hidden, _) = state.memory.as_ref().expect("the snapshot's h_state and c_state");
    assert_eq!(hidden.shape, [1, 28, 4, 5]);
    let reference = Fixture::load("lab/convlstm_state_reference.safetensors");
    let states = |step: u64| HostState {
        re: reference.tensor(&format!("psi{step}_re")).clone(),
        im: reference.tensor(&format!("psi{step}_im")).clone(),
        memory: None,
        step,
    };
    let (out, _) = import(&fixtures().join("unet-convlstm.safetensors"), "convlstm-snapshot");
    let (one, ten) = (states(1), states(10));
    assert_matches("convlstm snapshot", &out, &state, reference.number("gamma"), (&one, &ten), 10);
}

#[test]
fn a_lab_state_that_is_not_complex_is_refused() {
    // A real tensor saved where psi belongs: the first-layer weights of a state_dict.
    match load_state(&fixtures().join("pytorch/mlp.pth")) {
        Err(Error::Format { message, .. }) => assert!(message.contains("no lab state"), "{message}"),
        other => panic!("expected a format error, got {:?}", other.map(|state| state.dims())),
    }
}
