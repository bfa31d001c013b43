//! Evolving a universe: load a model, make or load the initial state, apply tools, step, write
//! frames, a GIF, metrics and the final state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{ElementConversion, Tensor};

use super::sparse::{SparseRunJob, SparseRunOptions, SparseRunSummary};
use crate::backend::{BackendJob, DeviceReport, DeviceRequest};
use crate::error::{Error, Result};
use crate::io::model_dir::ModelSource;
use crate::io::state_file::{load_state, save_state, HostState};
use crate::kernels::EngineBackend;
use crate::observables::{step_metrics, StepMetrics, View};
use crate::render::{map_image, panel, save_map, save_png, Colormap, GifRecorder, Range};
use crate::state::{generate, tile, InitialState, Universe};
use crate::tools::ScheduledTool;
use crate::{observables, Simulation};

/// What to run. `Default` is the shipped model on a random 64x64 universe for 100 steps.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub model: ModelSource,
    pub device: DeviceRequest,
    pub strict_device: bool,
    /// Grid (height, width); `None`: 64x64, or the size of an `init` state file.
    pub grid: Option<(usize, usize)>,
    pub batch: usize,
    pub steps: u64,
    /// Decay rate; `None`: the model's configured gamma.
    pub gamma: Option<f64>,
    pub seed: u64,
    pub init: InitialState,
    pub save_state: Option<PathBuf>,
    /// Directory for frames (PNG).
    pub frames: Option<PathBuf>,
    /// A frame every this many steps (and the first and last), for the PNGs and the GIF.
    pub every: u64,
    /// What a frame shows (universe 0): one view is drawn alone, several as a labelled panel.
    pub views: Vec<View>,
    /// An animated GIF of the frames.
    pub gif: Option<PathBuf>,
    /// A CSV of scalar metrics per step and universe.
    pub metrics: Option<PathBuf>,
    /// The density above which a cell counts in the metrics' `cells_above`.
    pub density_threshold: f64,
    /// Tools and when they act.
    pub tools: Vec<ScheduledTool>,
    /// Run the sparse engine on an unbounded universe instead of a dense grid.
    pub sparse: Option<SparseRunOptions>,
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            model: ModelSource::Default,
            device: DeviceRequest::Auto,
            strict_device: false,
            grid: None,
            batch: 1,
            steps: 100,
            gamma: None,
            seed: 0,
            init: InitialState::Random,
            save_state: None,
            frames: None,
            every: 10,
            views: vec![View::Density],
            gif: None,
            metrics: None,
            density_threshold: 0.5,
            tools: Vec::new(),
            sparse: None,
            progress: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub device: DeviceReport,
    /// `unet d8 h16` and where it came from.
    pub model: String,
    pub backend: &'static str,
    pub grid: (usize, usize),
    pub batch: usize,
    pub steps: u64,
    pub seconds: f64,
    /// Frames drawn (PNG files, and GIF frames when there is no frame directory).
    pub frames: usize,
    /// Tool applications (a click-out counts every step it is active).
    pub tool_applications: usize,
    /// Mean `sum_c |delta_c|^2` per cell of the last step (dense runs).
    pub mean_update_energy: f64,
    /// What a sparse run did.
    pub sparse: Option<SparseRunSummary>,
}

impl RunReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        if let Some(sparse) = &self.sparse {
            let last = sparse.steps.last().copied().unwrap_or_default();
            return format!(
                "ran {} sparse steps of {} on {} in {:.2} s ({:.2} steps/s); {} tiles stored, {} matter cells; \
                 peak tile memory {:.1} MiB; frames of {}",
                self.steps,
                self.model,
                self.backend,
                self.seconds,
                self.steps as f64 / self.seconds.max(1e-9),
                last.stored_tiles,
                last.matter_cells,
                sparse.peak_stored_bytes as f64 / (1024.0 * 1024.0),
                sparse.window,
            );
        }
        format!(
            "ran {} steps of {} on {} at {}x{} x{} in {:.2} s ({:.2} steps/s); mean |delta|^2 {:.3e}",
            self.steps,
            self.model,
            self.backend,
            self.grid.0,
            self.grid.1,
            self.batch,
            self.seconds,
            self.steps as f64 / self.seconds.max(1e-9),
            self.mean_update_energy,
        )
    }
}

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
    if let Some(sparse) = &options.sparse {
        super::sparse::check(options, sparse)?;
        let job = SparseRunJob { options, sparse };
        let ((mut report, summary), device) =
            super::run_on_device(options.device, options.strict_device, on_device, job)?;
        report.sparse = Some(summary);
        report.device = device;
        return Ok(report);
    }
    let (mut report, device) =
        super::run_on_device(options.device, options.strict_device, on_device, RunJob { options })?;
    report.device = device;
    Ok(report)
}

struct RunJob<'a> {
    options: &'a RunOptions,
}

impl BackendJob for RunJob<'_> {
    type Output = Result<RunReport>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let options = self.options;
        let model = options.model.load::<B>(&device)?;
        let config = model.config.clone();
        let gamma = options.gamma.unwrap_or(config.gamma);
        let host = initial_state(options, config.d_state)?;
        let [batch, height, width, _] = host.dims();
        let universe = Universe::from_host(&host, &device);
        let mut simulation = Simulation::new(model, universe, gamma)?;

        for scheduled in &options.tools {
            scheduled.tool.check(height, width)?;
        }
        let mut outputs = Outputs::open(options, config.d_state)?;
        let mut tool_applications = 0;
        let needs_input = options.views.contains(&View::Physics);
        let mut input: Option<Tensor<B, 4>> = None;
        let bar = super::progress_bar(options.steps, "run", options.progress);
        let started = Instant::now();
        // At each step k: one-shot tools scheduled at k act on the state after k steps, the
        // state is recorded, then step k runs, followed by the active per-step tools.
        for step in 0..=options.steps {
            for scheduled in options.tools.iter().filter(|s| !s.tool.is_per_step() && s.at == step) {
                let psi = simulation.universe.psi.clone();
                simulation.universe.psi = scheduled.tool.apply(psi, step)?;
                tool_applications += 1;
            }
            let frame = step % options.every == 0 || step == options.steps;
            let last = LastStep { input: input.clone(), delta: simulation.last_delta.clone() };
            outputs.record(step, frame, &simulation.universe.psi, &last)?;
            if step == options.steps {
                break;
            }
            if needs_input {
                input = Some(simulation.universe.psi.clone());
            }
            simulation.step();
            for scheduled in options.tools.iter().filter(|s| s.tool.is_per_step() && step >= s.at) {
                let psi = simulation.universe.psi.clone();
                simulation.universe.psi = scheduled.tool.apply(psi, simulation.universe.step)?;
                tool_applications += 1;
            }
            bar.inc(1);
        }
        let frames = outputs.finish()?;
        // Reading a value back waits for the device, so the timing covers the queued work.
        let mean_update_energy = match &simulation.last_delta {
            Some(delta) => observables::update_energy(delta.clone()).mean().into_scalar().elem(),
            None => 0.0,
        };
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if let Some(path) = &options.save_state {
            save_state(path, &simulation.universe.to_host()?)?;
        }
        Ok(RunReport {
            device: DeviceReport::unselected(options.device),
            model: describe_model(&config, &options.model),
            backend: B::engine_name(),
            grid: (height, width),
            batch,
            steps: options.steps,
            seconds,
            frames,
            tool_applications,
            mean_update_energy,
            sparse: None,
        })
    }
}

/// `unet d8 h16 (where it came from)`.
pub(super) fn describe_model(config: &crate::models::ModelConfig, source: &ModelSource) -> String {
    format!("{} d{} h{} ({})", config.arch, config.d_state, config.hidden_channels, source.describe())
}

/// Generates, loads or tiles the initial state.
fn initial_state(options: &RunOptions, d_state: usize) -> Result<HostState> {
    match &options.init {
        InitialState::File(path) => {
            let state = load_state(path)?;
            let [batch, height, width, d] = state.dims();
            if d != d_state {
                return Err(Error::format(
                    path,
                    format!("the state has d_state {d} but the model expects {d_state}"),
                ));
            }
            if options.batch != 1 && options.batch != batch {
                return Err(Error::format(
                    path,
                    format!("the file holds {batch} universe(s), the run asks for {}", options.batch),
                ));
            }
            match options.grid {
                Some(grid) if grid != (height, width) => tile(&state, grid.0, grid.1),
                _ => Ok(state),
            }
        }
        kind => {
            let (height, width) = options.grid.unwrap_or((64, 64));
            generate(kind, options.batch, height, width, d_state, options.seed)
        }
    }
}

/// Writes the density of universe 0 as `DIR/frame_STEP.png`.
pub fn write_density_frame<B: burn::tensor::backend::Backend>(dir: &Path, psi: &Tensor<B, 4>, step: u64) -> Result<()> {
    let [_, _, height, width] = psi.dims();
    let map = observables::density(psi.clone().narrow(0, 0, 1))
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|error| Error::InvalidArgument(format!("cannot read the density map: {error:?}")))?;
    let path = dir.join(format!("frame_{step:06}.png"));
    save_map(&path, &map, height, width, Colormap::Viridis, Range::Fixed(0.0, 1.0))
}

/// Where a run's pictures and metrics go.
struct Outputs<'a> {
    options: &'a RunOptions,
    d_state: usize,
    gif: Option<GifRecorder>,
    metrics: Option<String>,
    frames: usize,
}

impl<'a> Outputs<'a> {
    fn open(options: &'a RunOptions, d_state: usize) -> Result<Self> {
        if let Some(dir) = &options.frames {
            std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
        }
        let metrics = options.metrics.as_ref().map(|_| format!("{}\n", StepMetrics::CSV_HEADER));
        Ok(Self { options, d_state, gif: options.gif.as_ref().map(|_| GifRecorder::new()), metrics, frames: 0 })
    }

    /// Records the state after `step` steps: metrics always, a picture when `frame`.
    fn record<B: burn::tensor::backend::Backend>(
        &mut self,
        step: u64,
        frame: bool,
        psi: &Tensor<B, 4>,
        last: &LastStep<B>,
    ) -> Result<()> {
        if let Some(csv) = &mut self.metrics {
            for row in step_metrics(psi.clone(), last.delta.clone(), self.options.density_threshold)? {
                csv.push_str(&row.csv_row(step));
                csv.push('\n');
            }
        }
        if !frame || (self.options.frames.is_none() && self.gif.is_none()) {
            return Ok(());
        }
        let image = frame_image(&self.options.views, psi, last, step, self.d_state)?;
        if let Some(dir) = &self.options.frames {
            save_png(&dir.join(format!("frame_{step:06}.png")), &image)?;
        }
        if let Some(gif) = &mut self.gif {
            gif.push(image);
        }
        self.frames += 1;
        Ok(())
    }

    /// Writes the GIF and the metrics; returns the number of frames drawn.
    fn finish(self) -> Result<usize> {
        if let (Some(gif), Some(path)) = (self.gif, &self.options.gif) {
            gif.save(path)?;
        }
        if let (Some(csv), Some(path)) = (self.metrics, &self.options.metrics) {
            crate::io::write_atomic(path, csv.as_bytes())?;
        }
        Ok(self.frames)
    }
}

/// The last step's input state and update (absent before the first step; the input is kept
/// only when a view needs it).
pub struct LastStep<B: burn::tensor::backend::Backend> {
    pub input: Option<Tensor<B, 4>>,
    pub delta: Option<Tensor<B, 4>>,
}

/// The picture of universe 0 after `step` steps: one view alone (scaled up, unlabelled), or
/// several side by side with their names and the step.
pub fn frame_image<B: burn::tensor::backend::Backend>(
    views: &[View],
    psi: &Tensor<B, 4>,
    last: &LastStep<B>,
    step: u64,
    d_state: usize,
) -> Result<image::RgbImage> {
    let [_, _, height, width] = psi.dims();
    let first = |tensor: &Tensor<B, 4>| tensor.clone().narrow(0, 0, 1);
    let mut tiles = Vec::with_capacity(views.len());
    for view in views {
        let map = view.map(first(psi), last.input.as_ref().map(first), last.delta.as_ref().map(first))?;
        let map = observables::read_floats(map)?;
        let image = map_image(&map, height, width, view.colormap(), view.range(d_state));
        tiles.push((view.name().to_string(), image));
    }
    if tiles.len() == 1 {
        return Ok(tiles.remove(0).1);
    }
    Ok(panel(&format!("step {step}"), &tiles))
}
