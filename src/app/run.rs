//! Evolving a universe: load a model, make or load the initial state, step, write frames and
//! the final state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{ElementConversion, Tensor};

use crate::backend::{select_device, BackendJob, DeviceReport, DeviceRequest, SelectOptions};
use crate::error::{Error, Result};
use crate::io::model_dir::ModelSource;
use crate::io::state_file::{load_state, save_state, HostState};
use crate::kernels::EngineBackend;
use crate::render::{save_map, Colormap, Range};
use crate::state::{generate, tile, InitialState, Universe};
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
    /// Directory for density frames (PNG).
    pub frames: Option<PathBuf>,
    /// A frame every this many steps (and the first and last).
    pub every: u64,
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
    pub frames: usize,
    /// Mean `sum_c |delta_c|^2` per cell of the last step.
    pub mean_update_energy: f64,
}

impl RunReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
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
    let select = SelectOptions { strict: options.strict_device, ..SelectOptions::default() };
    let selection = select_device(options.device, &select)?;
    on_device(&selection.report);
    let mut report = selection.device.run(RunJob { options })?;
    report.device = selection.report;
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

        let mut frames = 0;
        if let Some(dir) = &options.frames {
            std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
            write_density_frame(dir, &simulation.universe.psi, 0)?;
            frames += 1;
        }
        let bar = super::progress_bar(options.steps, "run", options.progress);
        let started = Instant::now();
        for step in 1..=options.steps {
            simulation.step();
            if let Some(dir) = &options.frames {
                if step % options.every == 0 || step == options.steps {
                    write_density_frame(dir, &simulation.universe.psi, step)?;
                    frames += 1;
                }
            }
            bar.inc(1);
        }
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
            device: DeviceReport {
                requested: options.device,
                selected: None,
                selected_device: None,
                attempts: vec![],
            },
            model: format!(
                "{} d{} h{} ({})",
                config.arch,
                config.d_state,
                config.hidden_channels,
                options.model.describe()
            ),
            backend: B::engine_name(),
            grid: (height, width),
            batch,
            steps: options.steps,
            seconds,
            frames,
            mean_update_energy,
        })
    }
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
