//! Probing one candidate backend: driver pre-checks, then a tiny real computation in a
//! guarded thread (or an isolated child process), classified into a report.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use burn::backend::cuda::CudaDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Cuda, NdArray, Wgpu};
use burn::tensor::{ElementConversion, Tensor};

use super::driver::DriverInfo;
use super::failure::failure_from_messages;
use super::wgpu_adapters::list_wgpu_adapters;
use super::{driver, isolated, Attempt, BackendKind, Failure, FailureCause, SelectedDevice};
use crate::guard::{panic_text, PanicCapture};
use crate::kernels::EngineBackend;

pub(crate) enum Candidate {
    Cuda(CudaDevice),
    Wgpu { allow_software: bool },
    Cpu,
}

impl Candidate {
    /// The candidate's name on a probe child's command line.
    pub(super) fn spec(&self) -> String {
        match self {
            Candidate::Cuda(device) => format!("cuda:{}", device.index),
            Candidate::Wgpu { allow_software: true } => "wgpu".into(),
            Candidate::Wgpu { allow_software: false } => "wgpu-hardware".into(),
            Candidate::Cpu => "cpu".into(),
        }
    }

    pub(super) fn from_spec(spec: &str) -> Option<Self> {
        match spec {
            "wgpu" => Some(Candidate::Wgpu { allow_software: true }),
            "wgpu-hardware" => Some(Candidate::Wgpu { allow_software: false }),
            "cpu" => Some(Candidate::Cpu),
            _ => {
                spec.strip_prefix("cuda:")?.parse().ok().map(|index| Candidate::Cuda(CudaDevice::new(index)))
            }
        }
    }

    pub(super) fn kind(&self) -> BackendKind {
        match self {
            Candidate::Cuda(_) => BackendKind::Cuda,
            Candidate::Wgpu { .. } => BackendKind::Wgpu,
            Candidate::Cpu => BackendKind::Cpu,
        }
    }

    pub(super) fn label(&self) -> String {
        match self {
            Candidate::Cuda(device) => format!("Cuda({})", device.index),
            Candidate::Wgpu { .. } => "wgpu".into(),
            Candidate::Cpu => "NdArray".into(),
        }
    }

    /// Probes a GPU candidate in a child process first where this process enabled that
    /// ([`isolated::serve_probe_subcommand`]), then here only if the child survived.
    pub(super) fn probe_guarded(self, timeout: Duration) -> (Attempt, Option<SelectedDevice>) {
        if isolated::enabled() && self.kind() != BackendKind::Cpu {
            let attempt = isolated::probe(&self, timeout);
            if attempt.failure.is_some() {
                return (attempt, None);
            }
            let broken = attempt.driver.broken_icds.clone();
            if !broken.is_empty() && !attempt.driver.icds.is_empty() {
                let working: Vec<std::path::PathBuf> = attempt.driver.icds.iter().map(Into::into).collect();
                driver::quarantine_broken_icds(&working, &broken);
            }
            let (mut attempt, device) = self.probe(timeout);
            // The environment now hides the broken ICDs from this process's own check.
            attempt.driver.broken_icds.extend(broken);
            return (attempt, device);
        }
        self.probe(timeout)
    }

    /// Pre-checks the driver, then runs the tiny computation in this process.
    pub(super) fn probe(self, timeout: Duration) -> (Attempt, Option<SelectedDevice>) {
        match self {
            Candidate::Cuda(device) => {
                let name = format!("Cuda({})", device.index);
                let (info, checked) = driver::check_cuda(device.index);
                let failure = match checked {
                    Err(problem) => {
                        Some(Failure { cause: problem.cause, summary: problem.message, messages: vec![] })
                    }
                    Ok(()) => probe_backend::<Cuda>(device.clone(), timeout),
                };
                let name =
                    info.devices.get(device.index).map_or(name.clone(), |d| format!("{name}, {}", d.name));
                let started = failure.is_none().then_some(SelectedDevice::Cuda(device));
                (Attempt { backend: BackendKind::Cuda, device: name, failure, driver: info }, started)
            }
            Candidate::Wgpu { allow_software } => probe_wgpu(allow_software, timeout),
            Candidate::Cpu => {
                let device = NdArrayDevice::Cpu;
                let failure = probe_backend::<NdArray>(device, timeout);
                let started = failure.is_none().then_some(SelectedDevice::Cpu(device));
                let attempt = Attempt {
                    backend: BackendKind::Cpu,
                    device: format!("NdArray, {} threads", rayon_threads()),
                    failure,
                    driver: DriverInfo::default(),
                };
                (attempt, started)
            }
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn probe_wgpu(allow_software: bool, timeout: Duration) -> (Attempt, Option<SelectedDevice>) {
    let (mut info, checked) = driver::check_vulkan();
    match checked {
        Err(problem) => {
            let mut attempt =
                Attempt::failed(BackendKind::Wgpu, "no adapter".into(), problem.cause, problem.message);
            attempt.driver = info;
            return (attempt, None);
        }
        Ok(working) => {
            if !info.broken_icds.is_empty() {
                driver::quarantine_broken_icds(&working, &info.broken_icds);
            }
            info.icds = working.iter().map(|path| path.display().to_string()).collect();
        }
    }
    let adapters = list_wgpu_adapters();
    let hardware = adapters.iter().find(|adapter| !adapter.software);
    let chosen = hardware.or_else(|| adapters.first());
    let name = chosen.map_or_else(|| "no adapter".to_string(), |adapter| adapter.describe());
    let failure = match chosen {
        None => Some(Failure {
            cause: FailureCause::DriverMissing,
            summary: "no wgpu adapter found (no Vulkan/Metal/DX12 driver)".into(),
            messages: vec![],
        }),
        Some(adapter) if adapter.software && !allow_software => Some(Failure {
            cause: FailureCause::SoftwareOnly,
            summary: format!(
                "{} is slower than the CPU backend; ask for `--device wgpu` to use it",
                adapter.name
            ),
            messages: vec![],
        }),
        Some(_) => probe_backend::<Wgpu>(WgpuDevice::DefaultDevice, timeout),
    };
    let started = failure.is_none().then_some(SelectedDevice::Wgpu(WgpuDevice::DefaultDevice));
    (Attempt { backend: BackendKind::Wgpu, device: name, failure, driver: info }, started)
}

/// Runs a tiny computation with readback on `device` in a separate thread, catching panics.
/// Returns `None` when the backend computed the right answer.
fn probe_backend<B: EngineBackend>(device: B::Device, timeout: Duration) -> Option<Failure> {
    let (sender, receiver) = mpsc::channel();
    let capture = PanicCapture::begin();
    let spawned = std::thread::Builder::new().name("atheria-probe".into()).spawn(move || {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let values = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device);
            let sum: f32 = (values.clone() * values).sum().into_scalar().elem();
            sum
        }));
        let _ = sender.send(outcome.map_err(|payload| panic_text(payload.as_ref())));
    });
    let outcome = match spawned {
        Ok(_) => receiver.recv_timeout(timeout),
        Err(error) => Ok(Err(format!("could not start the probe thread: {error}"))),
    };
    let mut messages = capture.finish();
    match outcome {
        Ok(Ok(sum)) if (sum - 14.0).abs() < 1e-3 => None,
        Ok(Ok(sum)) => Some(Failure {
            cause: FailureCause::Other,
            summary: format!("probe computed {sum} instead of 14"),
            messages,
        }),
        Ok(Err(text)) => {
            if !messages.contains(&text) {
                messages.push(text);
            }
            Some(failure_from_messages(messages))
        }
        Err(_) => Some(Failure {
            cause: FailureCause::Timeout,
            summary: format!("no answer within {} s", timeout.as_secs()),
            messages,
        }),
    }
}
