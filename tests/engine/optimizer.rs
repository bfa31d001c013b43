//! The training optimizer against PyTorch's AdamW (scripts/make_adamw_fixture.py, float64):
//! the fused CPU update and the generic path wgpu takes, step by step.

use atheria::io::HostTensor;
use atheria::training::optimizer::FusedAdamW;
use atheria::EngineBackend;
use burn::backend::{NdArray, Wgpu};
use burn::optim::{AdamWState, SimpleOptimizer};
use burn::tensor::{Tensor, TensorData};

use crate::support::{wgpu_device, Fixture};

/// f32 keeps about 7 digits; four steps of rounding in the parameter and its update.
const PARAM_TOLERANCE: f32 = 2e-6;
/// The betas are f32, as burn's: `1 - 0.999f32` is 1.3e-5 (relative) below 0.001, and the second
/// moment carries that factor; the bias correction, computed the same way, cancels it in the
/// update. Twice that, for the rounding of a few terms.
const MOMENT_TOLERANCE: f32 = 3e-5;

fn tensor<B: EngineBackend>(host: &HostTensor, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(host.data.clone(), host.shape.clone()), device)
}

fn values<B: EngineBackend>(tensor: &Tensor<B, 4>) -> Vec<f32> {
    tensor.to_data().to_vec().unwrap()
}

/// Largest `|got - want| / max(1, |want|)`.
fn worst_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(got, want)| (got - want).abs() / want.abs().max(1.0)).fold(0.0, f32::max)
}

fn check_against_pytorch<B: EngineBackend>(device: &B::Device) {
    let fixture = Fixture::load("training/adamw.safetensors");
    let meta = |key: &str| fixture.metadata[key].parse::<f64>().unwrap();
    let steps = meta("steps") as usize;
    let optimizer = FusedAdamW::new(meta("weight_decay") as f32, meta("eps") as f32);
    let mut param = tensor::<B>(fixture.tensor("param.0"), device);
    let mut state: Option<AdamWState<B, 4>> = None;
    for step in 0..steps {
        let grad = tensor::<B>(fixture.tensor(&format!("grad.{step}")), device);
        (param, state) = optimizer.step(meta(&format!("lr.{step}")), param, grad, state);
        let want = fixture.values(&format!("param.{}", step + 1));
        let error = worst_error(&values(&param), want);
        assert!(error <= PARAM_TOLERANCE, "{} step {step}: parameter error {error:.3e}", B::engine_name());
    }
    let momentum = state.expect("AdamW keeps its moments").momentum;
    assert_eq!(momentum.time, steps);
    for (got, name) in [(&momentum.moment_1, "exp_avg"), (&momentum.moment_2, "exp_avg_sq")] {
        let want = fixture.values(name);
        let scale = want.iter().fold(0.0f32, |max, value| max.max(value.abs()));
        let error = worst_error(&values(got), want) / scale.min(1.0);
        assert!(error <= MOMENT_TOLERANCE, "{} {name}: error {error:.3e}", B::engine_name());
    }
    // The reference must move the parameter well beyond the tolerance, or this proves nothing.
    let moved = worst_error(fixture.values(&format!("param.{steps}")), fixture.values("param.0"));
    assert!(moved > 1e3 * PARAM_TOLERANCE, "the fixture barely moves: {moved:.3e}");
}

#[test]
fn adamw_steps_match_pytorch_on_the_cpu() {
    check_against_pytorch::<NdArray>(&Default::default());
}

#[test]
fn adamw_steps_match_pytorch_on_wgpu() {
    check_against_pytorch::<Wgpu>(&wgpu_device());
}
