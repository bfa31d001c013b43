//! `atheria run --sparse`: matter blobs on the vacuum of an unbounded universe, stepped by the
//! sparse engine, with frames of a chosen window and a report per step.

use std::time::Instant;

use super::run::{frame_image, LastStep, RunOptions, RunReport};
use crate::backend::{BackendJob, DeviceReport};
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::observables::View;
use crate::render::{save_png, GifRecorder};
use crate::sparse::{check_law, MatterSeed, Region, SparseConfig, SparseStepReport, SparseUniverse};
use crate::state::InitialState;

/// The sparse part of a run.
#[derive(Debug, Clone, Default)]
pub struct SparseRunOptions {
    pub config: SparseConfig,
    /// Blobs of matter placed on the vacuum before the first step.
    pub seeds: Vec<MatterSeed>,
    /// What frames show; `None`: a window of the run's grid size (64x64 by default) centred
    /// on the first seed (or on the origin).
    pub window: Option<Region>,
}

impl SparseRunOptions {
    /// The window frames show.
    pub fn window(&self, grid: Option<(usize, usize)>) -> Region {
        self.window.unwrap_or_else(|| {
            let (height, width) = grid.unwrap_or((64, 64));
            let (x, y) = self.seeds.first().map_or((0, 0), |seed| (seed.x, seed.y));
            Region::new(x - width as i64 / 2, y - height as i64 / 2, width, height)
        })
    }
}

/// What a sparse run did, besides the dense run's summary.
#[derive(Debug, Clone)]
pub struct SparseRunSummary {
    /// One report per step (the first describes the seeded state, step 0).
    pub steps: Vec<SparseStepReport>,
    /// The most tile data held at once, in bytes.
    pub peak_stored_bytes: usize,
    pub window: Region,
}

/// Refuses the options that mean nothing without a dense grid.
pub(super) fn check(options: &RunOptions, sparse: &SparseRunOptions) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::InvalidArgument(format!("{what} does not apply to a sparse run")))
    };
    if options.batch != 1 {
        return refuse("--batch");
    }
    if options.init != InitialState::Random {
        return refuse("--init (matter comes from --seed-matter)");
    }
    if !options.tools.is_empty() {
        return refuse("--tool");
    }
    if options.save_state.is_some() {
        return refuse("--save-state");
    }
    if let Some(view) = options.views.iter().find(|view| matches!(view, View::Energy | View::Physics)) {
        return refuse(&format!("the {} view (it needs the dense engine's update)", view.name()));
    }
    sparse.config.validate()?;
    sparse.window(options.grid).check()
}

pub(super) struct SparseRunJob<'a> {
    pub options: &'a RunOptions,
    pub sparse: &'a SparseRunOptions,
}

impl BackendJob for SparseRunJob<'_> {
    type Output = Result<(RunReport, SparseRunSummary)>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let (options, sparse) = (self.options, self.sparse);
        let model = options.model.load::<B>(&device)?;
        let config = model.config.clone();
        let gamma = options.gamma.unwrap_or(config.gamma);
        let window = sparse.window(options.grid);
        // Before seeding and the first frame, not at the first step.
        check_law(&config)?;
        let mut universe = SparseUniverse::<B>::new(sparse.config, config.d_state, &device)?;
        universe.seed_matter(&sparse.seeds, options.seed)?;

        if let Some(dir) = &options.frames {
            std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
        }
        let mut gif = options.gif.as_ref().map(|_| GifRecorder::new());
        let mut csv = format!("{}\n", SparseStepReport::CSV_HEADER);
        let mut frames = 0;
        let mut reports = vec![universe.status()];
        let mut peak_stored_bytes = universe.stored_bytes();
        let bar = super::progress_bar(options.steps, "sparse run", options.progress);
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
        for step in 0..=options.steps {
            let report = *reports.last().expect("the seeded state is reported");
            csv.push_str(&report.csv_row());
            csv.push('\n');
            if (step % options.every == 0 || step == options.steps) && (options.frames.is_some() || gif.is_some()) {
                let psi = universe.to_dense(window)?;
                let last = LastStep { input: None, delta: None };
                let image = frame_image(&options.views, &psi, &last, step, config.d_state)?;
                if let Some(dir) = &options.frames {
                    save_png(&dir.join(format!("frame_{step:06}.png")), &image)?;
                }
                if let Some(gif) = &mut gif {
                    gif.push(image);
                }
                frames += 1;
            }
            if step == options.steps {
                break;
            }
            let report = universe.step(&model, gamma)?;
            peak_stored_bytes = peak_stored_bytes.max(universe.stored_bytes());
            announce(&report);
            reports.push(report);
            bar.set_message(format!("{} tiles", report.stored_tiles));
            bar.inc(1);
        }
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if let (Some(gif), Some(path)) = (gif, &options.gif) {
            gif.save(path)?;
        }
        if let Some(path) = &options.metrics {
            crate::io::write_atomic(path, csv.as_bytes())?;
        }
        let report = RunReport {
            device: DeviceReport::unselected(options.device),
            model: super::run::describe_model(&config, &options.model),
            backend: B::engine_name(),
            grid: (window.height, window.width),
            batch: 1,
            steps: options.steps,
            seconds,
            frames,
            tool_applications: 0,
            mean_update_energy: 0.0,
            sparse: None,
        };
        Ok((report, SparseRunSummary { steps: reports, peak_stored_bytes, window }))
    }
}
