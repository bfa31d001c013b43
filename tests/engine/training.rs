//! Training: losses and gradients through time against PyTorch, the loss going down, exact
//! resume, checkpoints that survive a kill, and the `train` command.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atheria::app::{self, TrainOptions, TrainStart};
use atheria::backend::DeviceRequest;
use atheria::dynamics::{advance, Simulation};
use atheria::io::model_dir::load_model;
use atheria::io::state_file::HostState;
use atheria::io::weights::WeightFile;
use atheria::io::HostTensor;
use atheria::models::{Architecture, Model, ModelConfig};
use atheria::state::Universe;
use atheria::training::checkpoint::{read_state, resolve, LAST};
use atheria::training::loss::{self, LossKind, LossWeights};
use atheria::training::{named_gradients, TrainConfig};
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::optim::GradientsParams;

use crate::support::{
    assert_fails_with, assert_one_line_error, atheria_command, fixtures, relative_error, scratch, Fixture,
};

type Cpu = NdArray;
type Train = Autodiff<NdArray>;

/// The reference of scripts/make_training_fixtures.py for one case.
struct Reference {
    config: ModelConfig,
    weights: WeightFile,
    psi0: HostState,
    gamma: f64,
    steps: usize,
    loss: LossKind,
    metadata: HashMap<String, String>,
    gradients: HashMap<String, HostTensor>,
}

fn reference(case: &str) -> Reference {
    let fixture = Fixture::load(&format!("training/{case}.safetensors"));
    let read = |name: &str| fixture.tensor(name).clone();
    let gradients = fixture
        .tensors
        .keys()
        .filter_map(|name| name.strip_prefix("grad.").map(|param| (param.to_string(), read(name))))
        .collect();
    let metadata = fixture.metadata.clone();
    let arch: Architecture = metadata["arch"].parse().unwrap();
    let number = |key: &str| metadata[key].parse::<f64>().unwrap();
    Reference {
        config: ModelConfig::new(arch, number("d_state") as usize, number("hidden") as usize),
        weights: WeightFile::read(&fixtures().join(format!("{arch}.safetensors"))).unwrap(),
        psi0: HostState { re: read("psi0_re"), im: read("psi0_im"), memory: None, step: 0 },
        gamma: number("gamma"),
        steps: number("steps") as usize,
        loss: metadata["loss"].parse().unwrap(),
        gradients,
        metadata,
    }
}

#[test]
fn losses_and_gradients_through_time_match_pytorch() {
    for case in ["unet_evolutionary", "unet-unitary_evolutionary", "mlp_structure"] {
        let reference = reference(case);
        let device = Default::default();
        let model =
            Model::<Train>::from_weights(reference.config.clone(), &reference.weights, &device).unwrap();
        let psi0 = Universe::<Train>::from_host(&reference.psi0, &device).psi;
        let mut simulation =
            Simulation::new(model.clone(), Universe::new(psi0.clone()), reference.gamma).unwrap();
        advance(&mut simulation, reference.steps as u64);
        let psi = simulation.universe.psi;

        for (kind, name) in [
            (LossKind::Evolutionary, "evolutionary"),
            (LossKind::MseEnergy, "mse-energy"),
            (LossKind::Structure, "structure"),
        ] {
            let output = loss::compute(kind, &LossWeights::default(), psi0.clone(), psi.clone()).unwrap();
            let (total, terms) = output.values().unwrap();
            let expected = |key: &str| reference.metadata[&format!("{name}.{key}")].parse::<f64>().unwrap();
            // Survival and the energy MSE sit near (or at) their floor after renormalisation:
            // compare them absolutely, the others relatively.
            let close = |got: f64, want: f64| (got - want).abs() <= 1e-4 * want.abs().max(1.0);
            assert!(close(total, expected("total")), "{case} {name}: total {total} vs {}", expected("total"));
            for (term, value) in terms {
                assert!(close(value, expected(term)), "{case} {name}.{term}: {value} vs {}", expected(term));
            }
        }

        let output = loss::compute(reference.loss, &LossWeights::default(), psi0, psi).unwrap();
        let gradients = GradientsParams::from_grads(output.total.backward(), &model.law);
        let ours: HashMap<String, HostTensor> =
            named_gradients(&model, &gradients).unwrap().into_iter().collect();
        let mut names: Vec<&String> = reference.gradients.keys().collect();
        names.sort();
        assert_eq!(ours.len(), reference.gradients.len(), "{case}: parameters with a gradient");
        let mut worst = 0.0f64;
        for name in names {
            let want = &reference.gradients[name];
            let got = ours.get(name).unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            assert_eq!(got.shape, want.shape, "{case} {name}");
            let norm = want.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            // Tensors whose gradient is (numerically) zero in the reference are compared
            // absolutely; the rest relatively.
            let error = if norm < 1e-7 {
                got.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
            } else {
                relative_error(&got.data, &want.data)
            };
            assert!(error <= 2e-3, "{case}: gradient of {name} off by {error:.3e}");
            worst = worst.max(error);
        }
        eprintln!("{case}: worst gradient error {worst:.2e}");
    }
}

fn small_config() -> TrainConfig {
    TrainConfig {
        arch: Architecture::Mlp,
        d_state: 3,
        hidden: 8,
        grid: 8,
        qca_steps: 3,
        batch: 2,
        episodes: 6,
        checkpoint_every: 3,
        frame_every: 0,
        // Full noise from the first episode, so that resume has to restore the noise stream.
        noise_ramp_episodes: 1,
        max_noise: 0.2,
        bit_flip_chance: 0.5,
        lr: 1e-3,
        seed: 11,
        ..TrainConfig::default()
    }
}

fn options(start: TrainStart, out: &Path) -> TrainOptions {
    TrainOptions {
        start,
        out: out.to_path_buf(),
        device: DeviceRequest::Cpu,
        strict_device: true,
        progress: false,
        command: "test".into(),
        observer: None,
        parallel: None,
    }
}

fn weights_of(dir: &Path) -> Vec<HostTensor> {
    let model = load_model::<Cpu>(dir, &Default::default()).unwrap();
    model.export_weights(dir).unwrap().tensors.into_values().collect()
}

/// metrics.csv without the wall-clock column.
fn metric_rows(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|line| line.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

#[test]
fn a_resumed_run_reproduces_the_uninterrupted_one() {
    let dir = scratch("train-resume");
    let (whole, split) = (dir.join("whole"), dir.join("split"));
    app::train(&options(TrainStart::New(small_config()), &whole), &|_| {}).unwrap();

    let first_half = TrainConfig { episodes: 3, ..small_config() };
    app::train(&options(TrainStart::New(first_half), &split), &|_| {}).unwrap();
    let halfway = weights_of(&resolve(&split, LAST).unwrap());
    let report = app::train(&options(TrainStart::Resume { episodes: Some(6) }, &split), &|_| {}).unwrap();
    assert_eq!((report.episodes_run, report.episodes_total), (3, 6));

    let (a, b) = (weights_of(&resolve(&whole, LAST).unwrap()), weights_of(&resolve(&split, LAST).unwrap()));
    assert_ne!(halfway, b, "the second half changed nothing");
    assert!(a == b, "resumed weights differ from the uninterrupted run's");
    assert_eq!(metric_rows(&whole), metric_rows(&split));
    assert_eq!(metric_rows(&whole).len(), 7);
    let state = read_state(&resolve(&split, LAST).unwrap()).unwrap();
    assert_eq!(state.episode, 6);
}

#[test]
fn training_lowers_the_loss_and_writes_what_a_person_reads() {
    let dir = scratch("train-lowers");
    let out = dir.join("run");
    let config = TrainConfig {
        loss: LossKind::Structure,
        episodes: 40,
        checkpoint_every: 20,
        frame_every: 20,
        max_noise: 0.0,
        lr: 1e-2,
        qca_steps: 4,
        grid: 12,
        ..small_config()
    };
    app::train(&options(TrainStart::New(config), &out), &|_| {}).unwrap();
    let losses: Vec<f64> = std::fs::read_to_string(out.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 40);
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let (early, late) = (mean(&losses[..5]), mean(&losses[35..]));
    assert!(late < 0.9 * early, "loss went from {early} to {late}");

    for file in ["metrics.png", "train.toml", "frames/frame_000020.png", "frames/frame_000040.png"] {
        let path = out.join(file);
        assert!(path.is_file(), "{} missing", path.display());
    }
    let plot = image::open(out.join("metrics.png")).unwrap().to_rgb8();
    assert!(plot.height() >= 4 * 100, "one panel per curve: loss, two terms, metric, lr, grad norm");
    // The trained checkpoint is a model directory that `run` loads.
    let model = load_model::<Cpu>(&resolve(&out, "best").unwrap(), &Default::default()).unwrap();
    assert!(model.config.trained);
}

fn train_command(out: &Path, pause_ms: u64, episodes: u64) -> Command {
    let mut command = atheria_command();
    command
        .args(["train", "--device", "cpu", "--quiet", "--out", out.to_str().unwrap()])
        .args(["--arch", "mlp", "--d-state", "3", "--hidden", "8", "--grid", "8", "--qca-steps", "2"])
        .args(["--episodes", &episodes.to_string()])
        .env("ATHERIA_FAULT_PAUSE_MS", pause_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// A temporary checkpoint directory, i.e. a checkpoint being written right now.
fn checkpoint_in_flight(out: &Path) -> bool {
    std::fs::read_dir(out.join("checkpoints"))
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().contains(".tmp-")))
        .unwrap_or(false)
}

#[test]
fn a_run_killed_while_writing_a_checkpoint_resumes_from_a_complete_one() {
    let dir = scratch("train-kill");
    let out = dir.join("run");
    let config = dir.join("train.toml");
    std::fs::write(&config, "checkpoint_every = 1\nkeep_last = 2\nkeep_best = 1\n").unwrap();
    let mut command = train_command(&out, 1500, 40);
    command.args(["--config", config.to_str().unwrap()]);
    let mut child = command.spawn().unwrap();

    // Wait until a checkpoint is in flight while an earlier one is published, and kill the
    // process between writing the new one's files and publishing them (each checkpoint pauses
    // there for 1.5 s). Which episode that is depends on how busy the machine is.
    let started = Instant::now();
    let published = loop {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint was written");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be killed");
        if checkpoint_in_flight(&out) {
            if let Some(last) = resolve(&out, LAST) {
                let episode = read_state(&last).unwrap().episode;
                child.kill().unwrap();
                break episode;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.wait().unwrap();

    let last = resolve(&out, LAST).expect("a last checkpoint survives the kill");
    assert_eq!(read_state(&last).unwrap().episode, published);
    load_model::<Cpu>(&last, &Default::default()).unwrap();
    assert!(checkpoint_in_flight(&out), "the interrupted checkpoint was left half-written");

    // Resuming cleans up and finishes the run (extended to three episodes past the kill).
    let episodes = published + 3;
    let output = atheria_command()
        .args(["train", "--device", "cpu", "--quiet", "--resume", "--episodes", &episodes.to_string()])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!checkpoint_in_flight(&out));
    assert_eq!(read_state(&resolve(&out, LAST).unwrap()).unwrap().episode, episodes);
    let rows = std::fs::read_to_string(out.join("metrics.csv")).unwrap().lines().count() as u64;
    assert_eq!(rows, 1 + episodes, "metrics.csv holds each episode once");
}

#[test]
fn train_command_refuses_what_would_lose_or_mix_runs() {
    let dir = scratch("train-cli");
    let out = dir.join("run");
    let run = |extra: &[&str]| {
        let mut command = train_command(&out, 0, 2);
        command.args(extra);
        command.output().unwrap()
    };
    let first = run(&[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_one_line_error(&run(&[]), "already holds a training run");

    let resume = ["train", "--device", "cpu", "--quiet", "--resume", "--out", out.to_str().unwrap()];
    assert_fails_with(&[&resume[..], &["--lr", "0.5"]].concat(), "only --episodes may change (drop --lr)");
    let fresh = dir.join("empty");
    assert_fails_with(
        &["train", "--device", "cpu", "--resume", "--out", fresh.to_str().unwrap()],
        "no checkpoint to resume from",
    );

    let bad_config = dir.join("bad.toml");
    std::fs::write(&bad_config, "learning_rate = 3\n").unwrap();
    let (config, x) = (bad_config.to_str().unwrap(), dir.join("x"));
    assert_fails_with(
        &["train", "--device", "cpu", "--config", config, "--out", x.to_str().unwrap()],
        "learning_rate",
    );
    let y = dir.join("y");
    assert_fails_with(
        &["train", "--device", "cpu", "--grid", "18", "--out", y.to_str().unwrap()],
        "multiples of 4",
    );
}

/// The evolutionary loss of a rollout from a fixed universe, on any backend.
fn rollout_loss<B: atheria::EngineBackend>(
    model: &Model<B>,
    psi0: &HostState,
    steps: usize,
) -> loss::LossOutput<B> {
    let device = model.law.devices()[0].clone();
    let psi0 = Universe::<B>::from_host(psi0, &device).psi;
    let mut simulation = Simulation::new(model.clone(), Universe::new(psi0.clone()), 0.05).unwrap();
    advance(&mut simulation, steps as u64);
    loss::compute(LossKind::Evolutionary, &LossWeights::default(), psi0, simulation.universe.psi).unwrap()
}

#[test]
fn gradients_agree_with_finite_differences_on_tiny_models() {
    use rand::{Rng, SeedableRng};

    for config in
        [ModelConfig::new(Architecture::Mlp, 2, 4), ModelConfig::new(Architecture::UnetUnitary, 2, 4)]
    {
        let device = Default::default();
        let psi0 = atheria::state::generate(&atheria::state::InitialState::Random, 1, 8, 8, 2, 21).unwrap();
        let seeded = Model::<Cpu>::seeded(config.clone(), 5, &device).unwrap();
        // Make the learned term large enough to matter (outc starts at N(0, 1e-5)).
        let mut weights = seeded.export_weights(Path::new("tiny")).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for (name, tensor) in weights.tensors.iter_mut() {
            if name.starts_with("outc") {
                tensor.data.iter_mut().for_each(|v| *v = rng.gen_range(-0.3..0.3));
            }
        }

        let trained = Model::<Train>::from_weights(config.clone(), &weights, &device).unwrap();
        let output = rollout_loss(&trained, &psi0, 3);
        let gradients = GradientsParams::from_grads(output.total.backward(), &trained.law);
        let gradients: HashMap<String, HostTensor> =
            named_gradients(&trained, &gradients).unwrap().into_iter().collect();

        // A direction mixing the gradient with noise, normalised over all parameters.
        let mut direction: HashMap<String, Vec<f32>> = HashMap::new();
        for (name, gradient) in &gradients {
            direction.insert(
                name.clone(),
                gradient.data.iter().map(|g| g + rng.gen_range(-1.0..1.0) * 0.05).collect(),
            );
        }
        let norm = direction.values().flatten().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let analytic: f64 = gradients
            .iter()
            .map(|(name, gradient)| {
                gradient.data.iter().zip(&direction[name]).map(|(g, v)| *g as f64 * *v as f64).sum::<f64>()
            })
            .sum::<f64>()
            / norm;

        let shifted = |epsilon: f64| {
            let mut moved = weights.clone();
            for (name, tensor) in moved.tensors.iter_mut() {
                for (value, v) in tensor.data.iter_mut().zip(&direction[name]) {
                    *value += (epsilon * *v as f64 / norm) as f32;
                }
            }
            let model = Model::<Cpu>::from_weights(config.clone(), &moved, &device).unwrap();
            rollout_loss(&model, &psi0, 3).values().unwrap().0
        };
        let epsilon = 1e-2;
        let numeric = (shifted(epsilon) - shifted(-epsilon)) / (2.0 * epsilon);
        assert!(
            analytic.abs() > 1e-3,
            "{}: the check needs a non-trivial slope, got {analytic}",
            config.arch
        );
        assert!(
            (numeric - analytic).abs() <= 2e-2 * analytic.abs(),
            "{}: directional derivative {analytic} by backprop, {numeric} by finite differences",
            config.arch
        );
    }
}

#[test]
fn training_runs_on_wgpu() {
    crate::support::wgpu_device();
    let dir = scratch("train-wgpu");
    let out = dir.join("run");
    let config = TrainConfig { episodes: 3, checkpoint_every: 3, batch: 1, ..small_config() };
    let mut options = options(TrainStart::New(config), &out);
    options.device = DeviceRequest::Wgpu;
    let report = app::train(&options, &|_| {}).unwrap();
    assert_eq!(report.backend, "wgpu");
    assert_eq!(report.episodes_total, 3);
    assert!(report.last_metrics.iter().all(|(_, value)| value.is_finite()), "{:?}", report.last_metrics);
    let untrained =
        Model::<Cpu>::seeded(ModelConfig::new(Architecture::Mlp, 3, 8), 11, &Default::default()).unwrap();
    let before: Vec<HostTensor> = untrained.export_weights(&out).unwrap().tensors.into_values().collect();
    assert_ne!(
        weights_of(&resolve(&out, LAST).unwrap()),
        before,
        "three AdamW steps on wgpu changed nothing"
    );
}

#[test]
fn the_shipped_model_beats_its_untrained_initialisation() {
    use atheria::app::EvalOptions;
    use atheria::io::model_dir::ModelSource;

    let evaluate = |model: ModelSource| {
        let options = EvalOptions {
            model,
            device: DeviceRequest::Cpu,
            strict_device: true,
            grid: 32,
            steps: 40,
            universes: 2,
            seed: 3,
            loss: LossKind::Evolutionary,
            gamma: None,
        };
        app::evaluate(&options, &|_| {}).unwrap()
    };
    let trained = evaluate(ModelSource::Default);
    let untrained =
        evaluate(ModelSource::Seeded { config: ModelConfig::new(Architecture::Unet, 8, 16), seed: 0 });
    assert!(
        trained.loss < 0.8 * untrained.loss,
        "shipped {:.4} vs untrained {:.4}",
        trained.loss,
        untrained.loss
    );
    let config: serde_json::Value =
        serde_json::from_slice(atheria::io::model_dir::DEFAULT_MODEL_CONFIG).unwrap();
    assert_eq!(config["trained"], true);
    assert!(config["provenance"]["trained_with"].as_str().unwrap().starts_with("atheria train"));
}
