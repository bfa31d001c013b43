//! The engine against PyTorch (float64 reference trajectories from scripts/make_fixtures.py):
//! every architecture, one step within 1e-5 and 20 steps within 1e-3 relative L2 error, on the
//! CPU backend and on wgpu; and the two backends within 1e-4 of each other.

use atheria::io::state_file::HostState;
use atheria::models::{Architecture, Model};
use atheria::EngineBackend;
use burn::backend::{NdArray, Wgpu};

use crate::support::{relative_error, replay, state_error, trajectory, wgpu_device, Trajectory};

const ONE_STEP_TOLERANCE: f64 = 1e-5;
const TWENTY_STEP_TOLERANCE: f64 = 1e-3;

/// The state after one step, after the fixture's last step, and the ConvLSTM memory then.
type Replayed = (HostState, HostState, Option<(Vec<f32>, Vec<f32>)>);

fn replay_fixture<B: EngineBackend>(fixture: &Trajectory, device: &B::Device) -> Replayed {
    let model = Model::<B>::from_weights(fixture.config.clone(), &fixture.weights, device).unwrap();
    let (first, last) = replay::<B>(model, &fixture.states[&0], fixture.gamma, fixture.steps, device);
    let memory = last.memory.as_ref().map(|(h, c)| (h.data.clone(), c.data.clone()));
    (first, last, memory)
}

fn check_against_pytorch<B: EngineBackend>(arch: Architecture, device: &B::Device) -> HostState {
    let fixture = trajectory(arch);
    let (first, last, memory) = replay_fixture::<B>(&fixture, device);
    let one = state_error(&first, &fixture.states[&1]);
    let twenty = state_error(&last, &fixture.states[&fixture.steps]);
    // Read by scripts/gpu_check.sh into its report (shown with --nocapture).
    println!("parity {arch} {} one-step {one:.3e} {}-step {twenty:.3e}", B::engine_name(), fixture.steps);
    assert!(one <= ONE_STEP_TOLERANCE, "{arch} on {}: 1-step error {one:.3e}", B::engine_name());
    assert!(
        twenty <= TWENTY_STEP_TOLERANCE,
        "{arch} on {}: {}-step error {twenty:.3e}",
        B::engine_name(),
        fixture.steps
    );
    // The reference must differ from its starting point, or the check proves nothing.
    assert!(state_error(&fixture.states[&0], &fixture.states[&fixture.steps]) > 0.5);
    match (&memory, &fixture.memory) {
        (Some((hidden, cell)), Some((want_hidden, want_cell))) => {
            assert!(relative_error(hidden, &want_hidden.data) <= TWENTY_STEP_TOLERANCE);
            assert!(relative_error(cell, &want_cell.data) <= TWENTY_STEP_TOLERANCE);
        }
        (None, None) => {}
        _ => panic!("{arch}: memory presence differs from the reference"),
    }
    last
}

fn check_all_on<B: EngineBackend>(device: &B::Device) -> Vec<HostState> {
    Architecture::all().map(|arch| check_against_pytorch::<B>(arch, device)).collect()
}

#[test]
fn cpu_matches_pytorch_for_every_architecture() {
    check_all_on::<NdArray>(&Default::default());
}

#[test]
fn wgpu_matches_pytorch_and_the_cpu_backend() {
    let on_wgpu = check_all_on::<Wgpu>(&wgpu_device());
    let on_cpu = check_all_on::<NdArray>(&Default::default());
    for ((wgpu, cpu), arch) in on_wgpu.iter().zip(&on_cpu).zip(Architecture::all()) {
        let error = state_error(wgpu, cpu);
        assert!(error <= 1e-4, "{arch}: wgpu vs cpu after 20 steps {error:.3e}");
    }
}

/// On a machine where CUDA starts, every architecture matches PyTorch on it; elsewhere the
/// probe must say why it did not start (and `ATHERIA_EXPECT_CUDA=1` makes that a failure).
#[test]
fn cuda_matches_pytorch_where_it_starts() {
    use atheria::backend::{select_device, DeviceRequest, FailureCause, SelectOptions, SelectedDevice};
    let options = SelectOptions { strict: true, ..SelectOptions::default() };
    match select_device(DeviceRequest::Cuda { index: 0 }, &options) {
        Ok(selection) => match selection.device {
            SelectedDevice::Cuda(device) => {
                check_all_on::<burn::backend::Cuda>(&device);
            }
            other => panic!("strict cuda selected {other:?}"),
        },
        Err(error) => {
            assert!(
                !crate::support::cuda_expected(),
                "ATHERIA_EXPECT_CUDA=1 but CUDA did not start: {error}"
            );
            let probe = atheria::backend::probe_all(&SelectOptions::default());
            let failure = probe[0].failure.as_ref().expect("CUDA failed, so its probe has a failure");
            assert_ne!(failure.cause, FailureCause::Other, "unclassified: {}", failure.summary);
        }
    }
}

#[test]
fn pytorch_pickles_load_the_same_weights_as_safetensors() {
    for arch in Architecture::all() {
        let fixture = trajectory(arch);
        let path = crate::support::fixtures().join(format!("pytorch/{arch}.pth"));
        let pickled = atheria::io::weights::WeightFile::read(&path).unwrap();
        assert_eq!(pickled.tensors, fixture.weights.tensors, "{arch}");
    }
}
