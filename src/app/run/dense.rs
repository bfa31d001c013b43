//! The dense run: a batch of universes on a grid, with tools, checkpoints and outputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{ElementConversion, Tensor, TensorData};

use super::options::{describe_model, RunOptions, RunReport};
use crate::app::outputs::{frame_image, LastStep, Outputs};
use crate::app::progress_bar;
use crate::backend::{BackendJob, DeviceReport};
use crate::error::{Error, Result};
use crate::io::model_dir::save_model;
use crate::io::run_checkpoint::{self, RunCheckpoint, RunSettings};
use crate::io::state_file::{load_state, save_state, HostState};
use crate::io::HostTensor;
use crate::kernels::EngineBackend;
use crate::memory;
use crate::models::ModelConfig;
use crate::observables::{step_metrics, StepMetrics, View};
use crate::state::{generate, tile, InitialState, Universe};
use crate::{observables, Simulation};

pub(super) struct RunJob<'a> {
    pub(super) options: &'a RunOptions,
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
            Some(dir) => Some(Checkpointer::open(dir, options, &simulation, gamma)?),
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
        let bar = progress_bar(options.steps, "run", options.progress);
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
