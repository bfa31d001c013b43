//! Evolving a universe: load a model, make or load the initial state, apply tools, step, write
//! frames, a GIF, metrics and the final state. The dense run is in `dense.rs`, the sparse one
//! in `sparse.rs`; both take [`RunOptions`] and report a [`RunReport`].

mod dense;
mod options;
mod sparse;

pub use options::{RunOptions, RunReport, SparseRunOptions, SparseRunSummary, DEFAULT_CHECKPOINT_EVERY};

use crate::backend::DeviceReport;
use crate::error::{Error, Result};
use crate::io::run_checkpoint;

/// Runs the simulation described by `options`. The device report is passed to `on_device`
/// as soon as a backend is selected (before the possibly long run).
pub fn run(options: &RunOptions, on_device: &dyn Fn(&DeviceReport)) -> Result<RunReport> {
    if options.batch == 0 {
        return Err(Error::InvalidArgument("batch must be at least 1".into()));
    }
    if options.every == 0 {
        return Err(Error::InvalidArgument("frames every 0 steps: use at least 1".into()));
    }
    if options.views.is_empty() {
        return Err(Error::InvalidArgument("no view to draw: give at least one --view".into()));
    }
    if !(options.density_threshold.is_finite()) {
        return Err(Error::InvalidArgument("the density threshold must be a finite number".into()));
    }
    if let Some(dir) = &options.resume {
        let step = run_checkpoint::saved_step(dir)?;
        if step > options.steps {
            return Err(Error::InvalidArgument(format!(
                "the checkpointed run is at step {step}; --steps counts from step 0 and must be at least that"
            )));
        }
    }
    for scheduled in &options.tools {
        if scheduled.at > options.steps {
            return Err(Error::InvalidArgument(format!(
                "{} at step {} is after the last step ({})",
                scheduled.tool.name(),
                scheduled.at,
                options.steps
            )));
        }
    }
    if options.checkpoint.is_some() && options.checkpoint_every == 0 {
        return Err(Error::InvalidArgument("a checkpoint every 0 steps: use at least 1".into()));
    }
    if let Some(sparse) = &options.sparse {
        sparse::check(options, sparse)?;
        let job = sparse::SparseRunJob { options, sparse };
        let ((mut report, summary), device) =
            crate::app::run_on_device(options.device, options.strict_device, on_device, job)?;
        report.sparse = Some(summary);
        report.device = device;
        return Ok(report);
    }
    let (mut report, device) = crate::app::run_on_device(
        options.device,
        options.strict_device,
        on_device,
        dense::RunJob { options },
    )?;
    report.device = device;
    Ok(report)
}
