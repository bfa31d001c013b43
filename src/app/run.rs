//! Evolving a universe: load a model, make or load the initial state, apply tools, step, write
//! frames, a GIF, metrics and the final state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{ElementConversion, Tensor};

use burn::tensor::TensorData;

use super::outputs::{frame_name, Outputs};
use super::sparse::{SparseRunJob, SparseRunOptions, SparseRunSummary};
use crate::backend::{BackendJob, DeviceReport, DeviceRequest};
use crate::error::{Error, Result};
use crate::interrupt::Interruption;
use crate::io::model_dir::{save_model, ModelSource};
use crate::io::run_checkpoint::{self, RunCheckpoint, RunSettings};
use crate::io::state_file::{load_state, save_state, HostState};
use crate::io::HostTensor;
use crate::kernels::EngineBackend;
use crate::memory;
use crate::models::ModelConfig;
use crate::observables::{step_metrics, StepMetrics, View};
use crate::render::{map_image, panel, save_map, Colormap, Range};
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
    /// Keep the latest state of the run in this directory (see [`crate::io::run_checkpoint`]).
    pub checkpoint: Option<PathBuf>,
    /// A checkpoint every this many steps (and at step 0, at the end and at an interruption).
    pub checkpoint_every: u64,
    /// Continue the run checkpointed in this directory; set by [`RunOptions::resume`].
    pub resume: Option<PathBuf>,
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
            views: View::DEFAULT_PANEL.to_vec(),
            gif: None,
            metrics: None,
            density_threshold: 0.5,
            tools: Vec::new(),
            sparse: None,
            checkpoint: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            resume: None,
            progress: false,
        }
    }
}

/// Steps between two checkpoints of a run, unless told otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

impl RunOptions {
    /// The options of the run checkpointed in `dir`, to continue it: its model, grid, batch,
    /// gamma, seed and tools, its output settings as defaults, no output files (give them
    /// anew), and checkpoints kept in `dir` as before. `steps` is the saved total; raise it to
    /// run further.
    pub fn resume(dir: &Path) -> Result<Self> {
        let saved = run_checkpoint::load(dir)?;
        let settings = saved.settings;
        let tools = settings
            .tools
            .iter()
            .map(|(spec, at)| Ok(ScheduledTool { at: *at, tool: spec.parse()? }))
            .collect::<Result<Vec<_>>>()?;
        let views = settings.views.iter().map(|name| name.parse()).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model: ModelSource::Dir(run_checkpoint::model_dir(dir)),
            grid: Some(settings.grid),
            batch: settings.batch,
            steps: settings.steps,
            gamma: Some(settings.gamma),
            seed: settings.seed,
            every: settings.every,
            views,
            density_threshold: settings.density_threshold,
            tools,
            checkpoint: Some(dir.to_path_buf()),
            checkpoint_every: settings.checkpoint_every,
            resume: Some(dir.to_path_buf()),
            ..Self::default()
        })
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
    /// The step the run started from (0, or a resumed checkpoint's).
    pub start_step: u64,
    /// Set when a signal stopped the run early; `steps` is then the steps completed.
    pub interrupted: Option<Interruption>,
}

impl RunReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let ran = self.steps - self.start_step;
        let from =
            if self.start_step > 0 { format!(" (from step {})", self.start_step) } else { String::new() };
        if let Some(sparse) = &self.sparse {
            let last = sparse.steps.last().copied().unwrap_or_default();
            return format!(
                "ran {} sparse steps of {} on {} in {:.2} s ({:.2} steps/s); {} tiles stored, {} matter cells; \
                 peak tile memory {:.1} MiB; frames of {}",
                ran,
                self.model,
                self.backend,
                self.seconds,
                ran as f64 / self.seconds.max(1e-9),
                last.stored_tiles,
                last.matter_cells,
                sparse.peak_stored_bytes as f64 / (1024.0 * 1024.0),
                sparse.window,
            );
        }
        format!(
            "ran {} steps{from} of {} on {} at {}x{} x{} in {:.2} s ({:.2} steps/s); mean |delta|^2 {:.3e}",
            ran,
            self.model,
            self.backend,
            self.grid.0,
            self.grid.1,
            self.batch,
            self.seconds,
            ran as f64 / self.seconds.max(1e-9),
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
        let resumed = options.resume.as_deref().map(run_checkpoint::load).transpose()?;
        let host = match &resumed {
            Some(saved) => {
                if saved.state.step > options.steps {
                    return Err(Error::InvalidArgument(format!(
                        "the checkpointed run is at step {}; --steps counts from step 0 and must be at least that",
                        saved.state.step
                    )));
                }
                saved.state.clone()
            }
            None => initial_state::<B>(options, &config)?,
        };
        let [batch, height, width, _] = host.dims();
        let start = host.step;
        let mut universe = Universe::from_host(&host, &device);
        drop(host);
        universe.step = start;
        let mut simulation = Simulation::new(model, universe, gamma)?;
        for scheduled in &options.tools {
            scheduled.tool.check(height, width)?;
        }
        let needs_input = options.views.contains(&View::Physics);
        let mut input: Option<Tensor<B, 4>> = None;
        if let Some(saved) = &resumed {
            simulation.last_delta = saved.delta.as_ref().map(|delta| engine_tensor(delta, &device));
            input = saved.input.as_ref().filter(|_| needs_input).map(|input| engine_tensor(input, &device));
        }
        let checkpoints = match &options.checkpoint {
            Some(dir) => Some(Checkpointer::open(dir, options, &simulation, gamma, resumed.is_some())?),
            None => None,
        };

        let mut outputs = Outputs::open(
            options.frames.as_deref(),
            options.gif.as_deref(),
            options.metrics.as_deref(),
            StepMetrics::CSV_HEADER,
        )?;
        let mut tool_applications = 0;
        let mut interrupted = None;
        let bar = super::progress_bar(options.steps, "run", options.progress);
        bar.set_position(start);
        let started = Instant::now();
        // At each step k: a checkpoint when one is due (the state after k steps, before the
        // tools of step k), a stop if a signal asked for one; then the one-shot tools scheduled
        // at k act, the state is recorded, step k runs, followed by the active per-step tools.
        let mut step = start;
        loop {
            let stop = crate::interrupt::check(step, options.steps);
            if let Some(checkpoints) = &checkpoints {
                let due = (step != start || resumed.is_none())
                    && (step % options.checkpoint_every == 0 || step == options.steps);
                if due || stop.is_some() {
                    checkpoints.save(&simulation, input.as_ref())?;
                }
            }
            if stop.is_some() {
                interrupted = stop;
                let last = LastStep { input: input.clone(), delta: simulation.last_delta.clone() };
                record(&mut outputs, options, step, true, &simulation.universe.psi, &last, config.d_state)?;
                break;
            }
            for scheduled in options.tools.iter().filter(|s| !s.tool.is_per_step() && s.at == step) {
                let psi = simulation.universe.psi.clone();
                simulation.universe.psi = scheduled.tool.apply(psi, step)?;
                tool_applications += 1;
            }
            let frame = step % options.every == 0 || step == options.steps;
            let last = LastStep { input: input.clone(), delta: simulation.last_delta.clone() };
            record(&mut outputs, options, step, frame, &simulation.universe.psi, &last, config.d_state)?;
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
            step += 1;
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
            steps: step,
            seconds,
            frames,
            tool_applications,
            mean_update_energy,
            sparse: None,
            start_step: start,
            interrupted,
        })
    }
}

/// Metrics of the state after `step` steps, and its picture when `frame`.
fn record<B: burn::tensor::backend::Backend>(
    outputs: &mut Outputs,
    options: &RunOptions,
    step: u64,
    frame: bool,
    psi: &Tensor<B, 4>,
    last: &LastStep<B>,
    d_state: usize,
) -> Result<()> {
    if outputs.wants_metrics() {
        for row in step_metrics(psi.clone(), last.delta.clone(), options.density_threshold)? {
            outputs.metrics_row(&row.csv_row(step))?;
        }
    }
    if frame && outputs.wants_pictures() {
        outputs.picture(step, frame_image(&options.views, psi, last, step, d_state)?)?;
    }
    Ok(())
}

/// Writes a run's checkpoints: the model once, then the state whenever one is due.
struct Checkpointer {
    dir: PathBuf,
    settings: RunSettings,
}

impl Checkpointer {
    /// Prepares `dir`: a new run refuses a directory that already holds one, and writes the
    /// model into it; a resumed run keeps both.
    fn open<B: EngineBackend>(
        dir: &Path,
        options: &RunOptions,
        simulation: &Simulation<B>,
        gamma: f64,
        resumed: bool,
    ) -> Result<Self> {
        let [batch, height, width, _] = simulation.universe.dims();
        let settings = RunSettings {
            grid: (height, width),
            batch,
            steps: options.steps,
            gamma,
            seed: options.seed,
            init: options.init.to_string(),
            tools: options.tools.iter().map(|s| (s.tool.to_string(), s.at)).collect(),
            model: describe_model(&simulation.model.config, &options.model),
            every: options.every,
            views: options.views.iter().map(|view| view.name().to_string()).collect(),
            density_threshold: options.density_threshold,
            checkpoint_every: options.checkpoint_every,
        };
        let same_dir = options.resume.as_deref() == Some(dir);
        if !same_dir {
            if run_checkpoint::exists(dir) {
                return Err(Error::InvalidArgument(format!(
                    "{} already holds a run checkpoint; pass --resume {} to continue it, or choose another --checkpoint",
                    dir.display(),
                    dir.display()
                )));
            }
            save_model(&run_checkpoint::model_dir(dir), &simulation.model)?;
        }
        let _ = resumed;
        Ok(Self { dir: dir.to_path_buf(), settings })
    }

    /// Replaces the checkpoint with the simulation's current state.
    fn save<B: EngineBackend>(&self, simulation: &Simulation<B>, input: Option<&Tensor<B, 4>>) -> Result<()> {
        let host_tensor = |tensor: &Tensor<B, 4>| crate::readback::host_tensor(tensor.clone());
        let checkpoint = RunCheckpoint {
            settings: self.settings.clone(),
            state: simulation.universe.to_host()?,
            delta: simulation.last_delta.as_ref().map(host_tensor).transpose()?,
            input: input.map(host_tensor).transpose()?,
        };
        run_checkpoint::save(&self.dir, &checkpoint)
    }
}

/// A host tensor in the engine's layout back on the device.
fn engine_tensor<B: burn::tensor::backend::Backend>(tensor: &HostTensor, device: &B::Device) -> Tensor<B, 4> {
    let shape: [usize; 4] = [tensor.shape[0], tensor.shape[1], tensor.shape[2], tensor.shape[3]];
    Tensor::from_data(TensorData::new(tensor.data.clone(), shape), device)
}

/// `unet d8 h16 (where it came from)`.
pub(super) fn describe_model(config: &crate::models::ModelConfig, source: &ModelSource) -> String {
    format!("{} d{} h{} ({})", config.arch, config.d_state, config.hidden_channels, source.describe())
}

/// Generates, loads or tiles the initial state, after checking that the run fits in memory.
fn initial_state<B: EngineBackend>(options: &RunOptions, config: &ModelConfig) -> Result<HostState> {
    let d_state = config.d_state;
    let fits = |batch: usize, (height, width): (usize, usize)| {
        let estimate = memory::dense_run(config, batch, height, width, B::tensors_on_host());
        memory::check_host(&estimate, B::engine_name())
    };
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
                Some(grid) if grid != (height, width) => {
                    fits(batch, grid)?;
                    tile(&state, grid.0, grid.1)
                }
                _ => {
                    fits(batch, (height, width))?;
                    Ok(state)
                }
            }
        }
        kind => {
            let (height, width) = options.grid.unwrap_or((64, 64));
            config.check_grid(height, width)?;
            fits(options.batch, (height, width))?;
            generate(kind, options.batch, height, width, d_state, options.seed)
        }
    }
}

/// Writes the density of universe 0 as `DIR/frame_STEP.png`.
pub fn write_density_frame<B: burn::tensor::backend::Backend>(
    dir: &Path,
    psi: &Tensor<B, 4>,
    step: u64,
) -> Result<()> {
    let [_, _, height, width] = psi.dims();
    let map = crate::readback::floats(observables::density(psi.clone().narrow(0, 0, 1)))?;
    let path = dir.join(frame_name(step));
    save_map(&path, &map, height, width, Colormap::Viridis, Range::Fixed(0.0, 1.0))
}

/// The last step's input state and update (absent before the first step; the input is kept
/// only when a view needs it).
pub struct LastStep<B: burn::tensor::backend::Backend> {
    pub input: Option<Tensor<B, 4>>,
    pub delta: Option<Tensor<B, 4>>,
}

/// The picture of universe 0 after `step` steps: one view alone (scaled up, unlabelled), or
/// several side by side with their names and the step. A map that is the same in every cell
/// says so in its label (`density: 1.000 everywhere`), drawn as a labelled panel even alone.
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
    let mut any_constant = false;
    for view in views {
        let map = view.map(first(psi), last.input.as_ref().map(first), last.delta.as_ref().map(first))?;
        let map = observables::read_floats(map)?;
        let image = map_image(&map, height, width, view.colormap(), view.range(d_state));
        let label = match constant_value(&map) {
            Some(value) => {
                any_constant = true;
                format!("{}: {value:.3} everywhere", view.name())
            }
            None => view.name().to_string(),
        };
        tiles.push((label, image));
    }
    if tiles.len() == 1 && !any_constant {
        return Ok(tiles.remove(0).1);
    }
    Ok(panel(&format!("step {step}"), &tiles))
}

/// The value of a map that is the same in every cell (within f32 rounding of its magnitude).
fn constant_value(map: &[f32]) -> Option<f32> {
    let (low, high) =
        map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let scale = low.abs().max(high.abs()).max(1.0);
    (low.is_finite() && high - low <= 1e-5 * scale).then_some(0.5 * (low + high))
}

#[cfg(test)]
mod tests {
    use super::constant_value;

    #[test]
    fn constant_maps_are_recognised_within_rounding() {
        assert_eq!(constant_value(&[1.0; 9]), Some(1.0));
        assert!(constant_value(&[1.0, 1.0 + 2e-7, 1.0 - 2e-7]).is_some());
        assert_eq!(constant_value(&[1.0, 1.0, 0.5]), None);
        assert_eq!(constant_value(&[0.0, 1e-3]), None);
        assert_eq!(constant_value(&[f32::NAN, f32::NAN]), None);
    }
}
