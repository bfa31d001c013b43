//! The state stays on the device: a step reads nothing back, and a run reads back only what
//! its outputs need (a picture per frame, the metrics in batches). On the CPU backend a
//! read-back is nearly free, so these count them instead of timing them.

use atheria::observables::{step_metrics, MetricsBuffer};
use atheria::state::{generate, InitialState, Universe};
use atheria::{Architecture, EngineBackend, Model, ModelConfig, Simulation};
use burn::backend::{NdArray, Wgpu};

use crate::support::{atheria, scratch, stderr, wgpu_device};

/// `bench --json` records of one device.
fn bench_records(device: &str, train: bool) -> Vec<serde_json::Value> {
    let mut args =
        vec!["bench", "--device", device, "--grid", "16", "--steps", "3", "--warmup", "1", "--json"];
    if train {
        args.push("--train");
    }
    let output = atheria(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

#[test]
fn a_bench_without_outputs_reads_nothing_back() {
    for device in ["wgpu", "cpu"] {
        let records = bench_records(device, false);
        assert_eq!(records.len(), 1, "{device}: {records:?}");
        assert_eq!(records[0]["backend"], device);
        assert_eq!(records[0]["readbacks_per_step"], 0.0, "{device}: {records:?}");
    }
    // A training step reads back its loss terms (one tensor) and its gradient norm (on the
    // CPU kernels' pool thread): counted, wherever they happen.
    let train = bench_records("cpu", true);
    assert_eq!(train[0]["readbacks_per_step"], 2.0, "{train:?}");
}

/// The read-backs `run -v` reports.
fn run_readbacks(device: &str, steps: u64, every: u64, metrics: bool) -> (u64, String) {
    let dir = scratch(&format!("readbacks-{device}-{steps}-{every}-{metrics}"));
    let frames = dir.join("frames");
    let csv = dir.join("metrics.csv");
    let (steps_text, every_text) = (steps.to_string(), every.to_string());
    let mut args = vec!["-v", "run", "--device", device, "--strict-device", "--grid", "12", "--steps"];
    args.extend([steps_text.as_str(), "--every", &every_text, "--view", "density"]);
    args.extend(["--frames", frames.to_str().unwrap()]);
    if metrics {
        args.extend(["--metrics", csv.to_str().unwrap()]);
    }
    let output = atheria(&args);
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    let line = text.lines().find(|line| line.contains("tensors back to the host")).expect("run -v logs them");
    let count = line.split("read ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap();
    let rows = if metrics { std::fs::read_to_string(&csv).unwrap().lines().count() - 1 } else { 0 };
    (count.parse().unwrap(), format!("{line} ({rows} metric rows)"))
}

#[test]
fn a_run_reads_back_one_picture_per_frame_and_its_metrics_in_batches() {
    let batch = MetricsBuffer::<NdArray>::RUN_CAPACITY as u64;
    for device in ["cpu", "wgpu"] {
        // 130 steps, a frame every 50: pictures after 0, 50, 100 and 130 steps; the mean
        // update energy of the summary once at the end.
        let (pictures_only, said) = run_readbacks(device, 130, 50, false);
        assert_eq!(pictures_only, 4 + 1, "{device}: {said}");
        // Metrics of 131 states (0..=130) in batches: two read-backs per batch.
        let (with_metrics, said) = run_readbacks(device, 130, 50, true);
        let batches = 131u64.div_ceil(batch);
        assert_eq!(with_metrics, 4 + 1 + 2 * batches, "{device}: {said}");
        assert!(said.ends_with("(131 metric rows)"), "{device}: {said}");
    }
}

/// Metrics gathered over several steps and read back together are those read after each step.
fn batched_metrics_match_per_step<B: EngineBackend>(device: &B::Device) {
    let config = ModelConfig::new(Architecture::Unet, 3, 8);
    let model = Model::<B>::seeded(config, 5, device).unwrap();
    let host = generate(&InitialState::Random, 2, 12, 16, 3, 9).unwrap();
    let mut simulation = Simulation::new(model, Universe::from_host(&host, device), 0.01).unwrap();
    let mut buffer = MetricsBuffer::new(3);
    let (mut batched, mut each) = (vec![], vec![]);
    for step in 0..7u64 {
        let (psi, delta) = (simulation.universe.psi.clone(), simulation.last_delta.clone());
        batched.extend(buffer.push(step, psi.clone(), delta.clone(), 0.9).unwrap());
        each.extend(step_metrics(psi, delta, 0.9).unwrap().into_iter().map(|metrics| (step, metrics)));
        simulation.step();
    }
    assert_eq!(batched.len(), 6 * 2, "two full batches of three steps, two universes");
    batched.extend(buffer.drain().unwrap());
    assert!(buffer.drain().unwrap().is_empty());
    assert_eq!(batched.len(), each.len());
    // The same sums, though a GPU backend may fuse them into other kernels: f32 rounding apart.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (1.0 + b.abs());
    for ((step, got), (want_step, want)) in batched.iter().zip(&each) {
        assert_eq!((step, got.universe, got.cells_above), (want_step, want.universe, want.cells_above));
        assert!(close(got.total_energy, want.total_energy) && close(got.mean_entropy, want.mean_entropy));
    }
    assert!(each.iter().any(|(_, metrics)| metrics.total_energy > 0.0 && metrics.cells_above > 0));
}

#[test]
fn metrics_read_back_in_batches_are_those_of_each_step() {
    batched_metrics_match_per_step::<NdArray>(&Default::default());
    batched_metrics_match_per_step::<Wgpu>(&wgpu_device());
}
