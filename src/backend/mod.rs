//! Backend selection: which of CUDA, wgpu and the CPU runs the engine, decided at runtime.
//!
//! burn's GPU backends report a failed start (no driver, broken libraries, no device) by
//! panicking, on their own runner thread and again on the caller's. The guarded constructor here
//! probes each candidate with a real tiny computation inside `catch_unwind`, captures the panic
//! messages from every thread, classifies the cause, and falls back in the order the request
//! allows. Nothing is printed while probing; the report says what happened.

pub mod driver;
pub mod isolated;

mod failure;
mod probe;
mod report;
mod wgpu_adapters;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use burn::backend::cuda::CudaDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Cuda, NdArray, Wgpu};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::EngineBackend;

pub use failure::{classify_failure, Attempt, Failure, FailureCause};
pub(crate) use probe::Candidate;
pub use report::DeviceReport;
pub use wgpu_adapters::{list_wgpu_adapters, AdapterSummary};

/// The three compiled backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// NVIDIA GPUs through CUDA.
    Cuda,
    /// Any GPU (or a software Vulkan driver) through wgpu.
    Wgpu,
    /// burn's NdArray with atheria's CPU kernels.
    Cpu,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cpu => "cpu",
        })
    }
}

/// What the user asked for: `auto`, `cuda`, `cuda:N`, `wgpu` or `cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// The fastest backend that starts: CUDA, then a hardware wgpu adapter, then the CPU.
    #[default]
    Auto,
    /// A CUDA device.
    Cuda {
        /// The device's ordinal (0 unless `cuda:N`).
        index: usize,
    },
    /// wgpu's default adapter (a software Vulkan driver counts when asked for explicitly).
    Wgpu,
    /// burn's NdArray CPU backend; always available.
    Cpu,
}

impl FromStr for DeviceRequest {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" | "" => Ok(DeviceRequest::Auto),
            "cpu" | "ndarray" => Ok(DeviceRequest::Cpu),
            "wgpu" => Ok(DeviceRequest::Wgpu),
            "cuda" => Ok(DeviceRequest::Cuda { index: 0 }),
            _ => match lower.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Ok(DeviceRequest::Cuda { index }),
                _ => Err(Error::UnknownDevice(text.to_string())),
            },
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cuda { index } => write!(f, "cuda:{index}"),
            DeviceRequest::Wgpu => f.write_str("wgpu"),
            DeviceRequest::Cpu => f.write_str("cpu"),
        }
    }
}

/// A device the engine can run on.
#[derive(Debug, Clone)]
pub enum SelectedDevice {
    /// A CUDA device.
    Cuda(CudaDevice),
    /// A wgpu device.
    Wgpu(WgpuDevice),
    /// The CPU.
    Cpu(NdArrayDevice),
}

impl SelectedDevice {
    /// Which backend the device belongs to.
    pub fn kind(&self) -> BackendKind {
        match self {
            SelectedDevice::Cuda(_) => BackendKind::Cuda,
            SelectedDevice::Wgpu(_) => BackendKind::Wgpu,
            SelectedDevice::Cpu(_) => BackendKind::Cpu,
        }
    }

    /// Runs a backend-generic job on this device: the one place where the three
    /// instantiations of the generic engine are chosen.
    pub fn run<J: BackendJob>(&self, job: J) -> J::Output {
        match self {
            SelectedDevice::Cuda(device) => job.run::<Cuda>(device.clone()),
            SelectedDevice::Wgpu(device) => job.run::<Wgpu>(device.clone()),
            SelectedDevice::Cpu(device) => job.run::<NdArray>(*device),
        }
    }
}

/// Work written once, generic over the backend; `SelectedDevice::run` instantiates it.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Does the work on `device` of backend `B`.
    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output;
}

/// Work on several devices of one backend at once (the peers of a data-parallel run).
pub trait DevicesJob {
    /// What the job returns.
    type Output;
    /// Does the work on `devices` of backend `B`.
    fn run<B: EngineBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Runs `job` on `devices`, which must all belong to one backend (a CUDA device that fell back
/// to the CPU beside one that started is refused, naming both).
pub fn run_on_devices<J: DevicesJob>(devices: &[SelectedDevice], job: J) -> Result<J::Output> {
    let Some(first) = devices.first() else {
        return Err(Error::InvalidParallel("no device to run on".into()));
    };
    if let Some(other) = devices.iter().find(|device| device.kind() != first.kind()) {
        return Err(Error::InvalidParallel(format!(
            "the devices run on different backends ({} and {}): a data-parallel run needs devices of one backend (see `atheria devices`)",
            first.kind(),
            other.kind()
        )));
    }
    Ok(match first.kind() {
        BackendKind::Cuda => job.run::<Cuda>(devices_of_one_backend(devices)),
        BackendKind::Wgpu => job.run::<Wgpu>(devices_of_one_backend(devices)),
        BackendKind::Cpu => job.run::<NdArray>(devices_of_one_backend(devices)),
    })
}

/// The devices of one backend's type, in order; the caller has checked that all are of it.
fn devices_of_one_backend<D: FromSelected>(devices: &[SelectedDevice]) -> Vec<D> {
    devices.iter().filter_map(D::from_selected).collect()
}

/// A backend's device type, taken out of a [`SelectedDevice`] of that backend.
trait FromSelected: Sized {
    fn from_selected(device: &SelectedDevice) -> Option<Self>;
}

impl FromSelected for CudaDevice {
    fn from_selected(device: &SelectedDevice) -> Option<Self> {
        if let SelectedDevice::Cuda(device) = device {
            Some(device.clone())
        } else {
            None
        }
    }
}

impl FromSelected for WgpuDevice {
    fn from_selected(device: &SelectedDevice) -> Option<Self> {
        if let SelectedDevice::Wgpu(device) = device {
            Some(device.clone())
        } else {
            None
        }
    }
}

impl FromSelected for NdArrayDevice {
    fn from_selected(device: &SelectedDevice) -> Option<Self> {
        if let SelectedDevice::Cpu(device) = device {
            Some(*device)
        } else {
            None
        }
    }
}

/// A started backend and the report of how it was chosen.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The device to run on.
    pub device: SelectedDevice,
    /// How it was chosen: the request, every attempt and its cause.
    pub report: DeviceReport,
}

/// How the guarded constructor behaves.
#[derive(Debug, Clone)]
pub struct SelectOptions {
    /// Fail instead of falling back when an explicitly requested backend does not start.
    pub strict: bool,
    /// How long one probe may take before it counts as failed.
    pub probe_timeout: Duration,
}

/// How long one probe may take when `ATHERIA_PROBE_TIMEOUT` does not say.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The variable that sets the probe time limit, in whole seconds.
pub const PROBE_TIMEOUT_ENV: &str = "ATHERIA_PROBE_TIMEOUT";

/// The probe time limit `ATHERIA_PROBE_TIMEOUT` asks for, [`DEFAULT_PROBE_TIMEOUT`] when it is
/// unset or empty. Anything but a whole number of seconds above 0 is an error.
pub fn probe_timeout_from_environment() -> Result<Duration> {
    let Ok(text) = std::env::var(PROBE_TIMEOUT_ENV) else {
        return Ok(DEFAULT_PROBE_TIMEOUT);
    };
    match text.trim() {
        "" => Ok(DEFAULT_PROBE_TIMEOUT),
        seconds => match seconds.parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
            _ => Err(Error::InvalidProbeTimeout(format!(
                "{PROBE_TIMEOUT_ENV}=`{text}` is not a probe time limit: give a whole number of seconds above 0"
            ))),
        },
    }
}

impl SelectOptions {
    /// Falls back, with the probe time limit of `ATHERIA_PROBE_TIMEOUT`; a limit that cannot be
    /// read is an error.
    pub fn from_environment() -> Result<Self> {
        Ok(Self { strict: false, probe_timeout: probe_timeout_from_environment()? })
    }
}

impl Default for SelectOptions {
    /// Falls back, with the probe time limit of `ATHERIA_PROBE_TIMEOUT`. A limit that cannot be
    /// read is logged and the default one used: callers that can report it use
    /// [`SelectOptions::from_environment`] (the command line refuses it at start).
    fn default() -> Self {
        Self::from_environment().unwrap_or_else(|error| {
            tracing::warn!("{error}; probing with {} s", DEFAULT_PROBE_TIMEOUT.as_secs());
            Self { strict: false, probe_timeout: DEFAULT_PROBE_TIMEOUT }
        })
    }
}

/// The guarded constructor: starts the requested backend or falls back, never panics.
///
/// Order: `auto` tries CUDA, then wgpu on a hardware adapter, then the CPU. `cuda` falls back
/// to wgpu and then the CPU; `wgpu` falls back to the CPU. With `strict`, a request for a
/// specific backend that does not start is an error naming the cause.
pub fn select_device(request: DeviceRequest, options: &SelectOptions) -> Result<Selection> {
    let candidates: Vec<Candidate> = match request {
        DeviceRequest::Auto => vec![
            Candidate::Cuda(CudaDevice::new(0)),
            Candidate::Wgpu { allow_software: false },
            Candidate::Cpu,
        ],
        DeviceRequest::Cuda { index } => vec![
            Candidate::Cuda(CudaDevice::new(index)),
            Candidate::Wgpu { allow_software: false },
            Candidate::Cpu,
        ],
        DeviceRequest::Wgpu => vec![Candidate::Wgpu { allow_software: true }, Candidate::Cpu],
        DeviceRequest::Cpu => vec![Candidate::Cpu],
    };

    let mut report =
        DeviceReport { requested: request, selected: None, selected_device: None, attempts: vec![] };
    for (position, candidate) in candidates.into_iter().enumerate() {
        let (attempt, device) = candidate.probe_guarded(options.probe_timeout);
        let started = attempt.failure.is_none();
        let device_name = attempt.device.clone();
        report.attempts.push(attempt);
        if let (true, Some(device)) = (started, device) {
            report.selected = Some(device.kind());
            report.selected_device = Some(device_name);
            if report.fell_back() {
                // Each program shows the report itself (the CLI's `device:` lines, Python's
                // `device_report` and fallback warning), so it is logged here only for tracing.
                tracing::debug!("{}", report.summary());
            }
            return Ok(Selection { device, report });
        }
        if options.strict && position == 0 && request != DeviceRequest::Auto {
            return Err(Error::DeviceUnavailable(format!(
                "requested {request} did not start, and strict device selection forbids falling back: {}",
                report.failures().join("; ")
            )));
        }
    }
    Err(Error::DeviceUnavailable(format!(
        "requested {request}, no backend started: {}",
        report.failures().join("; ")
    )))
}

/// Probes every compiled backend (for `atheria devices`).
pub fn probe_all(options: &SelectOptions) -> Vec<Attempt> {
    [Candidate::Cuda(CudaDevice::new(0)), Candidate::Wgpu { allow_software: true }, Candidate::Cpu]
        .into_iter()
        .map(|candidate| candidate.probe_guarded(options.probe_timeout).0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::failure::failure_from_messages;
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!("auto".parse::<DeviceRequest>().unwrap(), DeviceRequest::Auto);
        assert_eq!("CPU".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!("cuda".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda { index: 0 });
        assert_eq!("cuda:3".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda { index: 3 });
        assert_eq!("wgpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Wgpu);
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "tpu"] {
            let error = bad.parse::<DeviceRequest>().unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn classifies_known_failures() {
        let cases = [
            (
                "Unable to dynamically load the \"cuda\" shared library - searched for library names: [\"libcuda.so\"]",
                FailureCause::DriverMissing,
            ),
            ("No possible adapter available for backend.", FailureCause::NoDevice),
            ("CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected", FailureCause::NoDevice),
            (
                "libtorch_cuda.so: undefined symbol: __nvJitLinkCreate_12_4, version libnvJitLink.so.12",
                FailureCause::LibraryMismatch,
            ),
            ("DriverError(CUDA_ERROR_UNSUPPORTED_PTX_VERSION)", FailureCause::DriverTooOld),
            ("CUDA_ERROR_OUT_OF_MEMORY: out of memory", FailureCause::OutOfMemory),
            ("RecvError", FailureCause::Other),
        ];
        for (message, expected) in cases {
            assert_eq!(classify_failure(&[message.to_string()]), expected, "{message}");
        }
    }

    #[test]
    fn summary_prefers_the_runner_thread_cause() {
        let failure = failure_from_messages(vec![
            "Unable to dynamically load the \"cuda\" shared library [thread cuda]".into(),
            "called `Result::unwrap()` on an `Err` value: RecvError [thread main]".into(),
        ]);
        assert_eq!(failure.cause, FailureCause::DriverMissing);
        assert!(failure.summary.contains("dynamically load"), "{}", failure.summary);
    }
}
