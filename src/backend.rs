//! Backend selection: which of CUDA, wgpu and the CPU runs the engine, decided at runtime.
//!
//! burn's GPU backends report a failed start (no driver, broken libraries, no device) by
//! panicking, on their own runner thread and again on the caller's. The guarded constructor here
//! probes each candidate with a real tiny computation inside `catch_unwind`, captures the panic
//! messages from every thread, classifies the cause, and falls back in the order the request
//! allows. Nothing is printed while probing; the report says what happened.

pub mod driver;
pub mod isolated;

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use burn::backend::cuda::CudaDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Cuda, NdArray, Wgpu};
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use self::driver::DriverInfo;
use crate::error::{Error, Result};
use crate::guard::{catch_silently, panic_text, PanicCapture};
use crate::kernels::EngineBackend;

/// The three compiled backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cuda,
    Wgpu,
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
    /// CUDA device `index` (0 unless `cuda:N`).
    Cuda { index: usize },
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

/// Why a backend did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureCause {
    /// The driver library (libcuda, a Vulkan loader or ICD) is not installed.
    DriverMissing,
    /// The driver loaded but reports no usable device.
    NoDevice,
    /// Libraries of mismatched versions (e.g. `undefined symbol __nvJitLinkCreate`).
    LibraryMismatch,
    /// The driver is older than the compiled kernels need (unsupported PTX, old driver).
    DriverTooOld,
    /// The device ran out of memory while starting.
    OutOfMemory,
    /// Only a software (CPU) adapter exists; skipped by `auto` because the CPU backend is faster.
    SoftwareOnly,
    /// The probe did not answer within the time limit.
    Timeout,
    /// The driver's initialisation returned an error code (named in the message).
    InitError,
    /// The driver crashed the (isolated) probe with a signal.
    DriverCrashed,
    /// CUDA's runtime compiler, which compiles the kernels, is not installed.
    NvrtcMissing,
    /// Anything else; the message says more.
    Other,
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureCause::DriverMissing => "driver library missing",
            FailureCause::NoDevice => "no device",
            FailureCause::LibraryMismatch => "library/symbol mismatch",
            FailureCause::DriverTooOld => "driver too old for the compiled kernels",
            FailureCause::OutOfMemory => "out of memory",
            FailureCause::SoftwareOnly => "only a software adapter",
            FailureCause::Timeout => "timed out",
            FailureCause::InitError => "driver initialisation error",
            FailureCause::DriverCrashed => "driver crashed",
            FailureCause::NvrtcMissing => "NVRTC missing",
            FailureCause::Other => "failed",
        })
    }
}

impl FailureCause {
    /// What a person can do about it.
    pub fn hint(self) -> &'static str {
        match self {
            FailureCause::DriverMissing => "install the GPU driver, or add its folder to LD_LIBRARY_PATH",
            FailureCause::NoDevice => "check that the GPU is visible (nvidia-smi, CUDA_VISIBLE_DEVICES) and the index exists",
            FailureCause::LibraryMismatch => {
                "the driver libraries come from different releases (e.g. libcusparse and libnvJitLink): install matching versions, or check LD_LIBRARY_PATH for stale copies"
            }
            FailureCause::DriverTooOld => "update the GPU driver to one that supports this CUDA release",
            FailureCause::OutOfMemory => "free GPU memory (other processes) or use a smaller grid",
            FailureCause::SoftwareOnly => "no GPU driver: the CPU backend is faster than a software adapter",
            FailureCause::Timeout => "the driver hangs: check dmesg and the driver's state; ATHERIA_PROBE_TIMEOUT sets the limit",
            FailureCause::InitError => "the driver refused to start: see the error code's meaning; reloading the kernel module or a reboot may help",
            FailureCause::DriverCrashed => "the driver crashed while starting: reinstall it, or check dmesg",
            FailureCause::NvrtcMissing => "install CUDA's NVRTC (cuda-nvrtc) matching the driver, or add its folder to LD_LIBRARY_PATH",
            FailureCause::Other => "run with --verbose to see every message",
        }
    }
}

/// Maps captured panic/error text to a cause. Ordered from most to least specific.
pub fn classify_failure(messages: &[String]) -> FailureCause {
    let text = messages.join("\n").to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|needle| text.contains(needle));
    if has(&["undefined symbol", "symbol lookup error", "version mismatch", "version `"]) {
        FailureCause::LibraryMismatch
    } else if has(&[
        "unsupported_ptx",
        "unsupported ptx",
        "ptx jit",
        "insufficient_driver",
        "driver version is insufficient",
        "compute capability",
    ]) {
        FailureCause::DriverTooOld
    } else if has(&["out of memory", "out_of_memory", "outofmemory"]) {
        FailureCause::OutOfMemory
    } else if has(&[
        "unable to dynamically load",
        "cannot open shared object",
        "no such file or directory",
        "libcuda",
        "libvulkan",
        "failed to load",
    ]) {
        FailureCause::DriverMissing
    } else if has(&[
        "no possible adapter",
        "no_device",
        "no cuda-capable device",
        "invalid_device",
        "invalid device",
        "no device",
        "device not found",
        "no discrete gpu",
        "no integrated gpu",
    ]) {
        FailureCause::NoDevice
    } else {
        FailureCause::Other
    }
}

/// A backend that failed to start, with what it said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub cause: FailureCause,
    /// The most informative line of what was captured.
    pub summary: String,
    /// Every panic message captured during the probe, in order (shown with `--verbose`).
    pub messages: Vec<String>,
}

/// One probe of one backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub backend: BackendKind,
    /// The device as the backend names it (e.g. `Cuda(0)`, the wgpu adapter's name).
    pub device: String,
    /// `None` when the backend started and computed correctly.
    pub failure: Option<Failure>,
    /// What the driver pre-check found (libraries, version, devices, broken Vulkan ICDs).
    #[serde(default)]
    pub driver: DriverInfo,
}

impl Attempt {
    pub(crate) fn failed(backend: BackendKind, device: String, cause: FailureCause, summary: String) -> Self {
        let failure = Some(Failure { cause, summary, messages: vec![] });
        Self { backend, device, failure, driver: DriverInfo::default() }
    }
}

/// A device the engine can run on.
#[derive(Debug, Clone)]
pub enum SelectedDevice {
    Cuda(CudaDevice),
    Wgpu(WgpuDevice),
    Cpu(NdArrayDevice),
}

impl SelectedDevice {
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
    type Output;
    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output;
}

/// What was asked, what runs, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    #[serde(serialize_with = "serialize_display")]
    pub requested: DeviceRequest,
    /// The backend that runs, if any started.
    pub selected: Option<BackendKind>,
    /// The selected device's name.
    pub selected_device: Option<String>,
    pub attempts: Vec<Attempt>,
}

fn serialize_display<S: serde::Serializer, T: fmt::Display>(
    value: &T,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl DeviceReport {
    /// The report of a request that has not been through selection yet.
    pub fn unselected(requested: DeviceRequest) -> Self {
        Self { requested, selected: None, selected_device: None, attempts: Vec::new() }
    }

    /// True when the selected backend is not what was explicitly asked for.
    pub fn fell_back(&self) -> bool {
        let wanted = match self.requested {
            DeviceRequest::Auto => return false,
            DeviceRequest::Cuda { .. } => BackendKind::Cuda,
            DeviceRequest::Wgpu => BackendKind::Wgpu,
            DeviceRequest::Cpu => BackendKind::Cpu,
        };
        self.selected != Some(wanted)
    }

    /// One or two plain lines: the selection, then the failed attempts with their causes.
    pub fn summary(&self) -> String {
        let mut text = match (&self.selected, &self.selected_device) {
            (Some(kind), Some(device)) => {
                format!("device: requested {}, running on {kind} ({device})", self.requested)
            }
            _ => format!("device: requested {}, no backend started", self.requested),
        };
        let failures = self.failures();
        if !failures.is_empty() {
            text.push_str("\n  skipped ");
            text.push_str(&failures.join("; "));
        }
        text
    }
}

impl DeviceReport {
    /// `backend: cause (message)` for every attempt that failed.
    pub fn failures(&self) -> Vec<String> {
        self.attempts
            .iter()
            .filter_map(|attempt| {
                attempt
                    .failure
                    .as_ref()
                    .map(|failure| format!("{}: {} ({})", attempt.backend, failure.cause, failure.summary))
            })
            .collect()
    }
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// A started backend and the report of how it was chosen.
#[derive(Debug, Clone)]
pub struct Selection {
    pub device: SelectedDevice,
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

impl Default for SelectOptions {
    fn default() -> Self {
        let seconds = std::env::var("ATHERIA_PROBE_TIMEOUT")
            .ok()
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(20);
        Self { strict: false, probe_timeout: Duration::from_secs(seconds) }
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
                tracing::warn!("{}", report.summary());
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

pub(crate) enum Candidate {
    Cuda(CudaDevice),
    Wgpu { allow_software: bool },
    Cpu,
}

impl Candidate {
    /// The candidate's name on a probe child's command line.
    fn spec(&self) -> String {
        match self {
            Candidate::Cuda(device) => format!("cuda:{}", device.index),
            Candidate::Wgpu { allow_software: true } => "wgpu".into(),
            Candidate::Wgpu { allow_software: false } => "wgpu-hardware".into(),
            Candidate::Cpu => "cpu".into(),
        }
    }

    fn from_spec(spec: &str) -> Option<Self> {
        match spec {
            "wgpu" => Some(Candidate::Wgpu { allow_software: true }),
            "wgpu-hardware" => Some(Candidate::Wgpu { allow_software: false }),
            "cpu" => Some(Candidate::Cpu),
            _ => {
                spec.strip_prefix("cuda:")?.parse().ok().map(|index| Candidate::Cuda(CudaDevice::new(index)))
            }
        }
    }

    fn kind(&self) -> BackendKind {
        match self {
            Candidate::Cuda(_) => BackendKind::Cuda,
            Candidate::Wgpu { .. } => BackendKind::Wgpu,
            Candidate::Cpu => BackendKind::Cpu,
        }
    }

    fn label(&self) -> String {
        match self {
            Candidate::Cuda(device) => format!("Cuda({})", device.index),
            Candidate::Wgpu { .. } => "wgpu".into(),
            Candidate::Cpu => "NdArray".into(),
        }
    }

    /// Probes a GPU candidate in a child process first where this process enabled that
    /// ([`isolated::serve_probe_subcommand`]), then here only if the child survived.
    fn probe_guarded(self, timeout: Duration) -> (Attempt, Option<SelectedDevice>) {
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
    fn probe(self, timeout: Duration) -> (Attempt, Option<SelectedDevice>) {
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

/// What wgpu reports of one adapter.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub api: String,
    pub software: bool,
}

impl AdapterSummary {
    fn describe(&self) -> String {
        let kind = if self.software { ", software" } else { "" };
        format!("{}, {}{kind}", self.name, self.api)
    }
}

/// The adapters wgpu can see, best first. Never panics: a failing enumeration yields none.
pub fn list_wgpu_adapters() -> Vec<AdapterSummary> {
    let listing = catch_silently(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapters = pollster_block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        let mut found: Vec<(u8, AdapterSummary)> = adapters
            .iter()
            .map(|adapter| {
                let info = adapter.get_info();
                let rank = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => 0,
                    wgpu::DeviceType::IntegratedGpu => 1,
                    wgpu::DeviceType::VirtualGpu => 2,
                    wgpu::DeviceType::Other => 3,
                    wgpu::DeviceType::Cpu => 4,
                };
                let summary = AdapterSummary {
                    name: info.name.clone(),
                    api: format!("{:?}", info.backend),
                    software: info.device_type == wgpu::DeviceType::Cpu,
                };
                (rank, summary)
            })
            .collect();
        found.sort_by_key(|(rank, _)| *rank);
        found.into_iter().map(|(_, summary)| summary).collect::<Vec<_>>()
    });
    listing.unwrap_or_default()
}

/// Drives a future to completion on this thread (wgpu's enumeration is async in its API only).
fn pollster_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop_raw() -> RawWaker {
        fn clone(_: *const ()) -> RawWaker {
            noop_raw()
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    // SAFETY: the vtable's functions ignore their data pointer, so a null one is valid.
    let waker = unsafe { Waker::from_raw(noop_raw()) };
    let mut context = Context::from_waker(&waker);
    let mut future = Box::pin(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
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

fn failure_from_messages(messages: Vec<String>) -> Failure {
    let cause = classify_failure(&messages);
    // The runner thread's message carries the real cause; the caller's often says only
    // `RecvError`. Prefer the longest first line among the informative ones.
    let summary: &str = messages
        .iter()
        .filter_map(|message| message.lines().find(|line| !line.trim().is_empty()))
        .filter(|line| !line.contains("RecvError"))
        .max_by_key(|line| line.len())
        .or_else(|| messages.first().map(String::as_str))
        .unwrap_or("unknown failure");
    let summary = shorten(summary);
    Failure { cause, summary, messages }
}

/// The first clause of a message, without the long library search lists some runtimes append.
fn shorten(message: &str) -> String {
    let message = message.trim();
    let cut = [" - searched", ". Ensure", " [thread"]
        .iter()
        .filter_map(|marker| message.find(marker))
        .min()
        .unwrap_or(message.len());
    let mut short: String = message[..cut].chars().take(160).collect();
    if short.len() < cut {
        short.push_str("...");
    }
    short
}

#[cfg(test)]
mod tests {
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
