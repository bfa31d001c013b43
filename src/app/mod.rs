//! Ready-made programs over the engine: what the CLI and the examples call.
//!
//! Each entry point takes plain options, selects the backend with the guarded constructor and
//! runs the generic engine on it. They are concrete (not generic) functions on purpose: the
//! engine is instantiated for the three backends once, here, instead of again in every binary
//! that uses it.

pub mod bench;
pub mod doctor;
pub mod eval;
pub mod import;
pub mod outputs;
pub mod run;
pub mod train;

pub use bench::{bench, BenchOptions, BenchRecord};
pub use eval::{evaluate, EvalOptions, EvalReport};
pub use import::{import, ImportOptions, ImportReport};
pub use run::{
    run, DenseOptions, OutputOptions, Ran, RanUniverse, RunOptions, RunReport, SparseRunOptions,
    SparseRunSummary, UniverseOptions,
};
pub use train::{train, NodeOptions, ParallelOptions, TrainOptions, TrainReport, TrainStart};

use crate::backend::{select_device, BackendJob, DeviceReport, DeviceRequest, SelectOptions, SelectedDevice};
use crate::error::Result;

/// Selects a device for `request` with the guarded constructor (`strict`: no fallback), shows
/// its report to `on_device` before the possibly long job starts, and runs `job` on it.
pub(crate) fn run_on_device<T, J: BackendJob<Output = Result<T>>>(
    request: DeviceRequest,
    strict: bool,
    on_device: &dyn Fn(&DeviceReport),
    job: J,
) -> Result<(T, DeviceReport)> {
    let select = SelectOptions { strict, ..SelectOptions::from_environment()? };
    let selection = select_device(request, &select)?;
    on_device(&selection.report);
    let output = run_guarded(&selection.device, job)?;
    Ok((output, selection.report))
}

/// Runs `job` on `device`. GPU runtimes report some failures in the middle of a run (out of
/// device memory, a lost device) by panicking; those become errors instead of a crash.
pub(crate) fn run_guarded<T, J: BackendJob<Output = Result<T>>>(
    device: &SelectedDevice,
    job: J,
) -> Result<T> {
    if matches!(device, SelectedDevice::Cpu(_)) {
        return device.run(job);
    }
    // Not `guard::catch_silently`: its capture is process-wide and serialised, and the job
    // itself loads models through it. The runtime's panic message is printed as it happens.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.run(job)));
    outcome.map_err(|payload| crate::guard::gpu_failure(payload.as_ref()))?
}

/// A progress bar on stderr (drawn only when stderr is a terminal and `visible`).
pub(crate) fn progress_bar(length: u64, what: &str, visible: bool) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{what} [{{elapsed_precise}}] {{bar:32}} {{pos}}/{{len}} {{per_sec}} {{msg}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
