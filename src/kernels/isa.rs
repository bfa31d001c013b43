//! Which vector instruction set the CPU kernels run, detected at runtime and forcible.
//!
//! The element-wise kernels (`kernels/simd.rs`) are compiled three times: portable (baseline
//! x86-64 SSE2, or whatever the target has elsewhere), AVX2+FMA and AVX-512. Each call takes
//! the path in force, which is the best the processor supports unless it was forced, either
//! with `ATHERIA_SIMD=portable|avx2|avx512` or with [`force`]. Forcing a lower path on a
//! better processor is how an AVX-512 machine runs (and tests) what an AVX2-only one runs.
//!
//! The GEMM (the `gemm` crate) dispatches on its own and offers no switch: it takes AVX-512
//! when the crate is built with this crate's `avx512` feature (the default) and the processor
//! has it, and AVX2+FMA otherwise. [`gemm_path`] says which one runs.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{Error, Result};

/// A compiled copy of the CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SimdPath {
    /// The target's baseline (SSE2 on x86-64): runs on any processor.
    Portable,
    /// AVX2 with fused multiply-add (256-bit vectors).
    Avx2,
    /// AVX-512 F/VL/BW/DQ with AVX2 and FMA (512-bit vectors).
    Avx512,
}

impl SimdPath {
    const ALL: [SimdPath; 3] = [SimdPath::Portable, SimdPath::Avx2, SimdPath::Avx512];

    /// The environment variable that forces a path for the whole process.
    pub const ENV: &'static str = "ATHERIA_SIMD";

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// True when this processor can execute the path.
    pub fn is_supported(self) -> bool {
        match self {
            SimdPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512 => {
                SimdPath::Avx2.is_supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every path this processor can execute, portable first.
    pub fn supported() -> Vec<SimdPath> {
        Self::ALL.into_iter().filter(|path| path.is_supported()).collect()
    }

    /// The best path this processor can execute.
    pub fn best() -> SimdPath {
        Self::supported().into_iter().max().unwrap_or(SimdPath::Portable)
    }
}

impl fmt::Display for SimdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SimdPath::Portable => "portable",
            SimdPath::Avx2 => "avx2",
            SimdPath::Avx512 => "avx512",
        })
    }
}

impl FromStr for SimdPath {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" | "sse2" => Ok(SimdPath::Portable),
            "avx2" | "avx2+fma" => Ok(SimdPath::Avx2),
            "avx512" | "avx-512" => Ok(SimdPath::Avx512),
            _ => Err(Error::InvalidSimdPath(format!(
                "`{text}` is not a CPU kernel path (portable, avx2, avx512)"
            ))),
        }
    }
}

/// The path in force; 0 until first read.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The path the CPU kernels take now.
pub fn active() -> SimdPath {
    match SimdPath::from_code(ACTIVE.load(Ordering::Relaxed)) {
        Some(path) => path,
        None => {
            let path = from_environment().unwrap_or_else(|error| {
                tracing::warn!("{error}; using {}", SimdPath::best());
                SimdPath::best()
            });
            ACTIVE.store(path.code(), Ordering::Relaxed);
            path
        }
    }
}

/// The path `ATHERIA_SIMD` asks for (the best supported one when it is unset). An unknown
/// name, or a path this processor cannot execute, is an error.
pub fn from_environment() -> Result<SimdPath> {
    match std::env::var(SimdPath::ENV) {
        Ok(text) if !text.trim().is_empty() && text.trim() != "auto" => {
            let path: SimdPath = text.parse().map_err(|error| match error {
                Error::InvalidSimdPath(message) => {
                    Error::InvalidSimdPath(format!("{}: {message}", SimdPath::ENV))
                }
                other => other,
            })?;
            check_supported(path)?;
            Ok(path)
        }
        _ => Ok(SimdPath::best()),
    }
}

fn check_supported(path: SimdPath) -> Result<()> {
    if path.is_supported() {
        Ok(())
    } else {
        Err(Error::InvalidSimdPath(format!(
            "this processor cannot run the {path} CPU kernels (it supports: {})",
            SimdPath::supported().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// Makes every later kernel call take `path`, process-wide. Refuses a path this processor
/// cannot execute (it would fault on an illegal instruction).
pub fn force(path: SimdPath) -> Result<()> {
    check_supported(path)?;
    ACTIVE.store(path.code(), Ordering::Relaxed);
    Ok(())
}

/// Serialises [`with_path`] callers: the path is process-wide.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// Runs `work` with `path` in force, then restores the previous path. Callers are serialised,
/// so that concurrent tests each see their own path; code that does not call this meanwhile
/// sees whichever path is in force, which computes the same results to rounding.
pub fn with_path<T>(path: SimdPath, work: impl FnOnce() -> T) -> Result<T> {
    let _exclusive = EXCLUSIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let previous = active();
    force(path)?;
    struct Restore(SimdPath);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.store(self.0.code(), Ordering::Relaxed);
        }
    }
    let _restore = Restore(previous);
    Ok(work())
}

/// The path the `gemm` crate takes on this processor (it cannot be forced at runtime).
pub fn gemm_path() -> SimdPath {
    if cfg!(feature = "avx512") && SimdPath::Avx512.is_supported() {
        SimdPath::Avx512
    } else if SimdPath::Avx2.is_supported() {
        SimdPath::Avx2
    } else {
        SimdPath::Portable
    }
}

/// What the CPU backend runs, for reports: `kernels avx512, gemm avx512 (cpu: avx512f ...)`.
#[derive(Debug, Clone, Serialize)]
pub struct CpuKernels {
    /// The path of atheria's own kernels.
    pub kernels: SimdPath,
    /// The path of the GEMM.
    pub gemm: SimdPath,
    /// Every path this processor supports.
    pub supported: Vec<SimdPath>,
    /// The processor's model name, where the system says.
    pub cpu_model: Option<String>,
}

impl CpuKernels {
    /// The state of this process now.
    pub fn current() -> Self {
        Self {
            kernels: active(),
            gemm: gemm_path(),
            supported: SimdPath::supported(),
            cpu_model: cpu_model(),
        }
    }
}

impl fmt::Display for CpuKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernels {}, gemm {}", self.kernels, self.gemm)?;
        if let Some(model) = &self.cpu_model {
            write!(f, " on {model}")?;
        }
        Ok(())
    }
}

/// The processor's model name from `/proc/cpuinfo` (Linux), if any.
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_refuses_others() {
        assert_eq!("AVX2".parse::<SimdPath>().unwrap(), SimdPath::Avx2);
        assert_eq!("portable".parse::<SimdPath>().unwrap(), SimdPath::Portable);
        assert_eq!("avx512".parse::<SimdPath>().unwrap(), SimdPath::Avx512);
        let error = "neon".parse::<SimdPath>().unwrap_err().to_string();
        assert!(error.contains("neon"), "{error}");
    }

    #[test]
    fn with_path_forces_the_path() {
        for path in SimdPath::supported() {
            assert_eq!(with_path(path, active).unwrap(), path);
        }
    }

    #[test]
    fn unsupported_paths_are_refused() {
        for path in SimdPath::ALL.into_iter().filter(|path| !path.is_supported()) {
            assert!(force(path).is_err());
            assert!(with_path(path, || ()).is_err());
        }
        assert!(SimdPath::Portable.is_supported());
        assert_eq!(SimdPath::supported().last().copied(), Some(SimdPath::best()));
    }
}
