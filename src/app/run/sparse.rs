//! `atheria run --sparse`: matter blobs on the vacuum of an unbounded universe, stepped by the
//! sparse engine, with frames of a chosen window and a report per step.

use std::time::Instant;

use super::options::{describe_model, Ran, RanUniverse, RunOptions, SparseRunOptions, SparseRunSummary};
use crate::app::outputs::{frame_image, LastStep, Outputs};
use crate::backend::BackendJob;
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::observables::View;
use crate::sparse::{check_law, SparseStepReport, SparseUniverse};

/// Refuses settings that cannot make a sparse run, before any device starts.
pub(super) fn check(options: &RunOptions, sparse: &SparseRunOptions) -> Result<()> {
    let needs_update = options.outputs.views.iter().find(|view| matches!(view, View::Energy | View::Physics));
    if let Some(view) = needs_update {
        return Err(Error::InvalidRun(format!(
            "the {view} view does not apply to a sparse run (it needs the dense engine's update)"
        )));
    }
    sparse.config.validate()?;
    sparse.window(options.grid).check()
}

pub(super) struct SparseRunJob<'a> {
    pub options: &'a RunOptions,
    pub sparse: &'a SparseRunOptions,
}

impl BackendJob for SparseRunJob<'_> {
    type Output = Result<Ran>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let readbacks_before = crate::readback::count();
        let (options, sparse) = (self.options, self.sparse);
        let model = options.model.load::<B>(&device)?;
        let config = model.config.clone();
        let gamma = options.gamma.unwrap_or(config.gamma);
        let window = sparse.window(options.grid);
        // Before seeding and the first frame, not at the first step.
        check_law(&config)?;
        // The window's dense view for frames and one batch of tile windows in a step.
        let on_host = B::tensors_on_host();
        let batch_side = (sparse.config.max_batch_cells as f64).sqrt() as usize;
        for (height, width) in [(window.height, window.width), (batch_side, batch_side)] {
            crate::footprint::check_host(
                &crate::footprint::dense_run(&config, 1, height, width, on_host),
                B::engine_name(),
            )?;
        }
        let mut universe = SparseUniverse::<B>::new(sparse.config, config.d_state, &device)?;
        universe.seed_matter(&sparse.seeds, options.seed)?;

        let mut outputs = Outputs::open(
            options.outputs.frames.as_deref(),
            options.outputs.gif.as_deref(),
            options.outputs.metrics.as_deref(),
            SparseStepReport::CSV_HEADER,
        )?;
        let mut reports = vec![universe.status()];
        let mut peak_stored_bytes = universe.stored_bytes();
        let bar = crate::app::progress_bar(options.steps, "sparse run", options.progress);
        let announce = |report: &SparseStepReport| {
            let line = format!(
                "step {}: {} tiles evolved, {} stored, {} matter cells",
                report.step, report.evolved_tiles, report.stored_tiles, report.matter_cells
            );
            tracing::debug!("{line}");
            if options.progress {
                bar.suspend(|| eprintln!("{line}"));
            }
        };
        announce(&reports[0]);
        let started = Instant::now();
        let mut interrupted;
        let mut step = 0;
        loop {
            interrupted = crate::interrupt::check(step, options.steps);
            let report = *reports.last().expect("the seeded state is reported");
            outputs.metrics_row(&report.csv_row())?;
            let frame = step % options.outputs.every == 0 || step == options.steps || interrupted.is_some();
            if frame && outputs.wants_pictures() {
                let psi = universe.to_dense(window)?;
                let last = LastStep { input: None, delta: None };
                outputs
                    .picture(step, frame_image(&options.outputs.views, &psi, &last, step, config.d_state)?)?;
            }
            if step == options.steps || interrupted.is_some() {
                break;
            }
            let report = universe.step(&model, gamma)?;
            peak_stored_bytes = peak_stored_bytes.max(universe.stored_bytes());
            announce(&report);
            reports.push(report);
            bar.set_message(format!("{} tiles", report.stored_tiles));
            bar.inc(1);
            step += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let frames = outputs.finish()?;
        Ok(Ran {
            model: describe_model(&config, &options.model),
            backend: B::engine_name(),
            steps: step,
            start_step: 0,
            seconds,
            frames,
            interrupted,
            readbacks: crate::readback::count() - readbacks_before,
            universe: RanUniverse::Sparse(SparseRunSummary { steps: reports, peak_stored_bytes, window }),
        })
    }
}
