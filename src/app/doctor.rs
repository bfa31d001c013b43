//! `atheria doctor`: what this machine can run, and why not.
//!
//! Every backend is probed (isolated in a child process where the program enabled that); for
//! each one that starts, a parity self-test steps a small U-Net and the per-cell MLP once from
//! PyTorch's reference state (`scripts/make_fixtures.py`, float64, embedded in the binary) and
//! compares, and a speed figure times the U-Net at 64x64.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use safetensors::SafeTensors;
use serde::Serialize;

use crate::backend::{
    probe_all, select_device, Attempt, BackendJob, BackendKind, DeviceRequest, SelectOptions,
};
use crate::error::{Error, Result};
use crate::io::state_file::HostState;
use crate::io::weights::WeightFile;
use crate::io::HostTensor;
use crate::kernels::isa::CpuKernels;
use crate::models::{Architecture, Model, ModelConfig};
use crate::state::Universe;
use crate::{EngineBackend, Simulation};

/// The relative L2 error one step may have against PyTorch's float64 reference.
pub const PARITY_TOLERANCE: f64 = 1e-5;

/// The reference models and one-step trajectories, from `tests/fixtures/`.
const REFERENCES: [(Architecture, &[u8], &[u8]); 2] = [
    (
        Architecture::Unet,
        include_bytes!("../../tests/fixtures/unet.safetensors"),
        include_bytes!("../../tests/fixtures/unet_trajectory.safetensors"),
    ),
    (
        Architecture::Mlp,
        include_bytes!("../../tests/fixtures/mlp.safetensors"),
        include_bytes!("../../tests/fixtures/mlp_trajectory.safetensors"),
    ),
];

/// One architecture's self-test on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Parity {
    /// The architecture of the fixture.
    pub arch: String,
    /// Relative L2 error of one step against PyTorch.
    pub relative_error: f64,
    /// Whether the error is within the tolerance (1e-5).
    pub passed: bool,
}

/// One backend: how its probe went and, when it started, its self-test and speed.
#[derive(Debug, Clone, Serialize)]
pub struct BackendCheck {
    /// How the backend's probe went.
    pub attempt: Attempt,
    /// What to do about the failure, when it failed.
    pub hint: Option<String>,
    /// The self-test of each architecture, when the backend started.
    pub parity: Vec<Parity>,
    /// Milliseconds per U-Net step (d_state 8, hidden 32 as the fixture) at 64x64.
    pub ms_per_step_64: Option<f64>,
    /// A self-test that could not run (an error, not a mismatch).
    pub error: Option<String>,
}

impl BackendCheck {
    /// True when the backend started and every self-test passed.
    pub fn healthy(&self) -> bool {
        self.attempt.failure.is_none() && self.error.is_none() && self.parity.iter().all(|p| p.passed)
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// Every compiled backend, in the order `auto` tries them.
    pub backends: Vec<BackendCheck>,
    /// The CPU kernel path in use and those the processor supports.
    pub cpu_kernels: CpuKernels,
}

impl DoctorReport {
    /// The CPU backend passed its self-test: atheria can run here.
    pub fn cpu_healthy(&self) -> bool {
        self.backends.iter().any(|check| check.attempt.backend == BackendKind::Cpu && check.healthy())
    }
}

/// Probes every backend and self-tests those that start.
pub fn doctor(options: &SelectOptions) -> DoctorReport {
    let attempts = probe_all(options);
    let backends = attempts
        .into_iter()
        .map(|attempt| {
            let hint = attempt.failure.as_ref().map(|failure| failure.cause.hint().to_string());
            let mut check = BackendCheck { attempt, hint, parity: vec![], ms_per_step_64: None, error: None };
            if check.attempt.failure.is_none() {
                match self_test(check.attempt.backend, options) {
                    Ok((parity, ms)) => {
                        check.parity = parity;
                        check.ms_per_step_64 = Some(ms);
                    }
                    Err(error) => check.error = Some(error.to_string()),
                }
            }
            check
        })
        .collect();
    DoctorReport { backends, cpu_kernels: CpuKernels::current() }
}

fn self_test(backend: BackendKind, options: &SelectOptions) -> Result<(Vec<Parity>, f64)> {
    let request = match backend {
        BackendKind::Cuda => DeviceRequest::Cuda { index: 0 },
        BackendKind::Wgpu => DeviceRequest::Wgpu,
        BackendKind::Cpu => DeviceRequest::Cpu,
    };
    let strict = SelectOptions { strict: true, ..options.clone() };
    select_device(request, &strict)?.device.run(SelfTest)
}

struct SelfTest;

impl BackendJob for SelfTest {
    type Output = Result<(Vec<Parity>, f64)>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let mut parity = Vec::new();
        let mut speed_model = None;
        for (arch, weights, trajectory) in REFERENCES {
            let reference = Reference::parse(arch, weights, trajectory)?;
            let model = Model::<B>::from_weights(reference.config.clone(), &reference.weights, &device)?;
            if arch == Architecture::Unet {
                speed_model = Some(model.clone());
            }
            let mut simulation =
                Simulation::new(model, Universe::from_host(&reference.start, &device), reference.gamma)?;
            simulation.step();
            let state = simulation.universe.to_host()?;
            let error = relative_error(&state, &reference.after_one);
            parity.push(Parity {
                arch: arch.to_string(),
                relative_error: error,
                passed: error <= PARITY_TOLERANCE,
            });
        }
        let model = speed_model.ok_or_else(|| Error::InvalidModel("no U-Net reference".into()))?;
        let d = model.config.d_state;
        let psi = Tensor::<B, 4>::random([1, 2 * d, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let mut simulation = Simulation::new(model, Universe::new(psi), 0.01)?;
        let mut times = Vec::new();
        for round in 0..6 {
            let start = Instant::now();
            simulation.step();
            // Reading a value back waits for the device.
            crate::readback::floats(simulation.universe.psi.clone().slice([0..1, 0..1, 0..1, 0..1]))?;
            if round >= 2 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok((parity, times[times.len() / 2]))
    }
}

/// A reference model and its state before and after one PyTorch step.
struct Reference {
    config: ModelConfig,
    weights: WeightFile,
    gamma: f64,
    start: HostState,
    after_one: HostState,
}

impl Reference {
    fn parse(arch: Architecture, weights: &[u8], trajectory: &[u8]) -> Result<Self> {
        let name = Path::new("embedded-trajectory.safetensors");
        let bad = |message: &str| Error::format(name, message.to_string());
        let weights = WeightFile::from_bytes(Path::new("embedded.safetensors"), weights)?;
        let (_, header) = SafeTensors::read_metadata(trajectory).map_err(|e| bad(&e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let number = |key: &str| -> Result<f64> {
            metadata.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| bad(&format!("no `{key}`")))
        };
        let parsed = SafeTensors::deserialize(trajectory).map_err(|e| bad(&e.to_string()))?;
        let tensor = |key: &str| -> Result<HostTensor> {
            let view = parsed.tensor(key).map_err(|e| bad(&e.to_string()))?;
            let data =
                view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok(HostTensor { shape: view.shape().to_vec(), data })
        };
        let state = |step: u64| -> Result<HostState> {
            Ok(HostState {
                re: tensor(&format!("psi{step}_re"))?,
                im: tensor(&format!("psi{step}_im"))?,
                memory: None,
                step,
            })
        };
        let config = ModelConfig::new(arch, number("d_state")? as usize, number("hidden")? as usize);
        Ok(Self { config, weights, gamma: number("gamma")?, start: state(0)?, after_one: state(1)? })
    }
}

fn relative_error(a: &HostState, b: &HostState) -> f64 {
    let pairs = a.re.data.iter().zip(&b.re.data).chain(a.im.data.iter().zip(&b.im.data));
    let (mut difference, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in pairs {
        difference += (*x as f64 - *y as f64).powi(2);
        norm += (*y as f64).powi(2);
    }
    if a.re.data.len() != b.re.data.len() {
        return f64::INFINITY;
    }
    (difference / norm).sqrt()
}
