//! Universes held between calls by a program that embeds the engine (the Python package): a
//! dense batch ([`DenseSession`]) or a sparse unbounded universe ([`SparseSession`]) on a
//! device chosen at run time by the guarded constructor, behind one concrete type.
//!
//! The generic engine is instantiated for the three backends here, as [`SelectedDevice::run`]
//! does for the one-shot programs of [`crate::app`]: a session outlives a call, so it keeps its
//! backend in an enum instead of a closure.

mod dense;
mod sparse;

use burn::backend::{Cuda, NdArray, Wgpu};

pub use dense::{Dense, DenseSession, DenseSettings};
pub use sparse::{Sparse, SparseSession};

use crate::backend::{select_device, DeviceReport, DeviceRequest, SelectOptions, SelectedDevice};
use crate::error::Result;

/// A value of a generic engine type on one of the three backends.
#[derive(Debug)]
pub enum OnBackend<Cu, Wg, Cp> {
    /// On CUDA.
    Cuda(Cu),
    /// On wgpu.
    Wgpu(Wg),
    /// On the CPU.
    Cpu(Cp),
}

/// `T<B>` for each backend.
pub type AnyBackend<T> =
    OnBackend<<T as Generic>::On<Cuda>, <T as Generic>::On<Wgpu>, <T as Generic>::On<NdArray>>;

/// A family of types generic over the backend (a session's state for each backend).
pub trait Generic {
    /// The state on backend `B`.
    type On<B: crate::EngineBackend>;
}

/// Calls the same expression on whichever backend a session runs: `$value` is an
/// [`OnBackend`], `$inner` names its content in `$body`, and `$gpu` (when given) whether the
/// backend is a GPU's (for [`guarded`]).
macro_rules! on_backend {
    ($value:expr, $inner:ident => $body:expr) => {
        $crate::session::on_backend!($value, $inner, _gpu => $body)
    };
    ($value:expr, $inner:ident, $gpu:ident => $body:expr) => {
        match $value {
            $crate::session::OnBackend::Cuda($inner) => {
                let $gpu = true;
                $body
            }
            $crate::session::OnBackend::Wgpu($inner) => {
                let $gpu = true;
                $body
            }
            $crate::session::OnBackend::Cpu($inner) => {
                let $gpu = false;
                $body
            }
        }
    };
}
pub(crate) use on_backend;

/// Selects the device for `request` (no fallback when `strict`) and builds a session's state
/// on it with `build`, which is written once, generic over the backend.
pub(crate) fn open<T: Generic>(
    request: DeviceRequest,
    strict: bool,
    build: impl Builder<T>,
) -> Result<(AnyBackend<T>, DeviceReport)> {
    let select = SelectOptions { strict, ..SelectOptions::from_environment()? };
    let selection = select_device(request, &select)?;
    let built = match &selection.device {
        SelectedDevice::Cuda(device) => OnBackend::Cuda(guarded(true, || build.build::<Cuda>(device))?),
        SelectedDevice::Wgpu(device) => OnBackend::Wgpu(guarded(true, || build.build::<Wgpu>(device))?),
        SelectedDevice::Cpu(device) => OnBackend::Cpu(build.build::<NdArray>(device)?),
    };
    Ok((built, selection.report))
}

/// Builds a session's state on any backend.
pub(crate) trait Builder<T: Generic> {
    /// The state on `device` of backend `B`.
    fn build<B: crate::EngineBackend>(&self, device: &B::Device) -> Result<T::On<B>>;
}

/// Runs work that a GPU runtime may abort by panicking (out of device memory, a lost device),
/// turning such a panic into an error, as the command line does: an embedding program must
/// never be taken down. On the CPU (`gpu` false) the work runs as it is.
pub(crate) fn guarded<T>(gpu: bool, work: impl FnOnce() -> Result<T>) -> Result<T> {
    if !gpu {
        return work();
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .map_err(|payload| crate::guard::gpu_failure(payload.as_ref()))?
}
