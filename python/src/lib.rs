//! `atheria._native`: the extension module under the Python package `atheria`.
//!
//! A thin layer over [`atheria::session`]: the Python side (`python/atheria/`) turns the bytes
//! exchanged here into NumPy arrays and gives the API its Pythonic shape. Every entry point runs
//! inside [`guard`], so a library error becomes the exception class of its family and a panic
//! becomes an `AtheriaError` instead of crossing into Python.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use atheria::backend::{isolated, probe_all, SelectOptions};
use atheria::io::state_file::HostState;
use atheria::io::HostTensor;
use atheria::{Error, ErrorFamily};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

mod dense;
mod model;
mod sparse;

create_exception!(_native, AtheriaError, PyException, "Every error atheria raises.");
create_exception!(_native, DeviceError, AtheriaError, "A device that is unknown, cannot start, or failed.");
create_exception!(_native, ModelError, AtheriaError, "A model or weights file that cannot be used.");
create_exception!(_native, StateError, AtheriaError, "A state that does not fit, or holds NaN or infinity.");
create_exception!(_native, UsageError, AtheriaError, "A request that cannot be carried out as asked.");
create_exception!(_native, TrainingError, AtheriaError, "Training settings or a failed training run.");
create_exception!(_native, FileError, AtheriaError, "A file that cannot be read or written, or is damaged.");
create_exception!(_native, OutOfMemoryError, AtheriaError, "A request that would not fit in memory.");

/// The exception for a library error: its family's class, with the CLI's message.
pub(crate) fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    match error.family() {
        ErrorFamily::Device => DeviceError::new_err(message),
        ErrorFamily::Model => ModelError::new_err(message),
        ErrorFamily::State => StateError::new_err(message),
        ErrorFamily::Usage => UsageError::new_err(message),
        ErrorFamily::Training => TrainingError::new_err(message),
        ErrorFamily::File => FileError::new_err(message),
        ErrorFamily::Memory => OutOfMemoryError::new_err(message),
    }
}

/// Runs `work`, turning a library error into its exception and a panic into an
/// `AtheriaError` (a panic is a defect: its message says so).
pub(crate) fn guard<T>(work: impl FnOnce() -> atheria::Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result.map_err(to_py),
        Err(payload) => {
            let text = atheria::panic_text(payload.as_ref());
            Err(AtheriaError::new_err(format!("internal error (please report it): {text}")))
        }
    }
}

/// Runs `work` on a session without the GIL (other Python threads go on meanwhile), guarded.
pub(crate) fn detached<S: Send, T: Send>(
    py: Python<'_>,
    session: &Mutex<S>,
    work: impl FnOnce(&mut S) -> atheria::Result<T> + Send,
) -> PyResult<T> {
    py.detach(|| {
        let mut session = session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard(|| work(&mut session))
    })
}

/// A state as interleaved complex64 bytes (real, imaginary) in [B, H, W, d] order.
pub(crate) fn state_bytes<'py>(py: Python<'py>, state: &HostState) -> Bound<'py, PyBytes> {
    let mut bytes = Vec::with_capacity(state.re.data.len() * 8);
    for (re, im) in state.re.data.iter().zip(&state.im.data) {
        bytes.extend_from_slice(&re.to_le_bytes());
        bytes.extend_from_slice(&im.to_le_bytes());
    }
    PyBytes::new(py, &bytes)
}

/// A state from interleaved complex64 bytes of `shape` [B, H, W, d].
pub(crate) fn state_from_bytes(bytes: &[u8], shape: [usize; 4], step: u64) -> atheria::Result<HostState> {
    let count: usize = shape.iter().product();
    if bytes.len() != count * 8 {
        return Err(Error::InvalidState(format!(
            "{} bytes do not hold a complex64 array of shape {shape:?}",
            bytes.len()
        )));
    }
    let (mut re, mut im) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for pair in bytes.chunks_exact(8) {
        re.push(f32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]));
        im.push(f32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]));
    }
    let tensor = |data| HostTensor { shape: shape.to_vec(), data };
    Ok(HostState { re: tensor(re), im: tensor(im), memory: None, step })
}

/// Floats as little-endian f32 bytes.
pub(crate) fn float_bytes<'py>(py: Python<'py>, values: &[f32]) -> Bound<'py, PyBytes> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    PyBytes::new(py, &bytes)
}

/// The probe report of every compiled backend, as the JSON of `atheria devices --json`.
#[pyfunction]
fn devices_json(py: Python<'_>) -> PyResult<String> {
    let options = SelectOptions::from_environment().map_err(to_py)?;
    let attempts = py.detach(|| probe_all(&options));
    let cpu = atheria::kernels::isa::CpuKernels::current();
    let report = serde_json::json!({ "attempts": attempts, "cpu_kernels": cpu });
    Ok(report.to_string())
}

/// Probes GPUs in a child process (`program` with `args` before the probe's own), so that a
/// broken driver ends the child instead of this interpreter.
#[pyfunction]
fn enable_isolated_probes(program: PathBuf, args: Vec<String>) {
    isolated::enable_with_command(program, args);
}

/// The probe child's answer (one JSON line) to the arguments after the probe subcommand.
#[pyfunction]
fn probe_report(py: Python<'_>, args: Vec<String>) -> String {
    py.detach(|| isolated::probe_report(&args))
}

/// The version of the engine.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The threads the CPU backend computes with.
#[pyfunction]
fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// Sets the CPU backend's threads. The pool starts once per process: returns false when it
/// has already started (then the count stays).
#[pyfunction]
fn set_cpu_threads(threads: usize) -> PyResult<bool> {
    if threads == 0 {
        return Err(UsageError::new_err("the thread count must be at least 1"));
    }
    Ok(rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().is_ok())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for (name, class) in [
        ("AtheriaError", py.get_type::<AtheriaError>()),
        ("DeviceError", py.get_type::<DeviceError>()),
        ("ModelError", py.get_type::<ModelError>()),
        ("StateError", py.get_type::<StateError>()),
        ("UsageError", py.get_type::<UsageError>()),
        ("TrainingError", py.get_type::<TrainingError>()),
        ("FileError", py.get_type::<FileError>()),
        ("OutOfMemoryError", py.get_type::<OutOfMemoryError>()),
    ] {
        m.add(name, class)?;
    }
    m.add_function(wrap_pyfunction!(devices_json, m)?)?;
    m.add_function(wrap_pyfunction!(enable_isolated_probes, m)?)?;
    m.add_function(wrap_pyfunction!(probe_report, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_cpu_threads, m)?)?;
    m.add_class::<model::Model>()?;
    m.add_class::<dense::Dense>()?;
    m.add_class::<sparse::Sparse>()?;
    Ok(())
}
