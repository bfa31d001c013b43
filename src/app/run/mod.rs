//! Evolving a universe: load a model, make or load the initial state, apply tools, step, write
//! frames, a GIF, metrics and the final state. The dense run is in `dense.rs`, the sparse one
//! in `sparse.rs`; both take [`RunOptions`] and report a [`RunReport`].

mod dense;
mod options;
mod sparse;

pub use options::{
    DenseOptions, OutputOptions, Ran, RanUniverse, Resumed, RunOptions, RunReport, SparseRunOptions,
    SparseRunSummary, UniverseOptions, DEFAULT_CHECKPOINT_EVERY,
};

use crate::backend::DeviceReport;
use crate::error::{Error, Result};

/// Runs the simulation described by `options`. The device report is passed to `on_device`
/// as soon as a backend is selected (before the possibly long run).
pub fn run(options: &RunOptions, on_device: &dyn Fn(&DeviceReport)) -> Result<RunReport> {
    let outputs = &options.outputs;
    if outputs.every == 0 {
        return Err(Error::InvalidRun("frames every 0 steps: use at least 1".into()));
    }
    if outputs.views.is_empty() {
        return Err(Error::InvalidRun("no view to draw: give at least one --view".into()));
    }
    let (ran, device) = match &options.universe {
        UniverseOptions::Dense(dense) => {
            dense::check(options, dense)?;
            let job = dense::RunJob { options, dense };
            crate::app::run_on_device(options.device, options.strict_device, on_device, job)?
        }
        UniverseOptions::Sparse(sparse) => {
            sparse::check(options, sparse)?;
            let job = sparse::SparseRunJob { options, sparse };
            crate::app::run_on_device(options.device, options.strict_device, on_device, job)?
        }
    };
    let steps = (ran.steps - ran.start_step).max(1);
    tracing::debug!(
        "read {} tensors back to the host ({:.3} per step)",
        ran.readbacks,
        ran.readbacks as f64 / steps as f64
    );
    Ok(RunReport { device, ran })
}
