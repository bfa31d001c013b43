//! Why a backend did not start: the causes, how captured messages are classified, and the
//! record of one probe.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::driver::DriverInfo;
use super::BackendKind;

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
    /// What kind of failure.
    pub cause: FailureCause,
    /// The most informative line of what was captured.
    pub summary: String,
    /// Every panic message captured during the probe, in order (shown with `--verbose`).
    pub messages: Vec<String>,
}

/// One probe of one backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// The backend probed.
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

pub(super) fn failure_from_messages(messages: Vec<String>) -> Failure {
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
