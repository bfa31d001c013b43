//! The dense run: a batch of universes on a grid, with tools, checkpoints and outputs.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};

use super::options::{describe_model, DenseOptions, Ran, RanUniverse, RunOptions};
use crate::app::outputs::{frame_image, LastStep, Outputs};
use crate::app::progress_bar;
use crate::backend::BackendJob;
use crate::dynamics::{rollout, Simulation};
use crate::error::{Error, Result};
use crate::io::model_dir::save_model;
use crate::io::run_checkpoint::{self, RunCheckpoint, RunSettings};
use crate::io::state_file::save_state;
use crate::io::HostTensor;
use crate::kernels::EngineBackend;
use crate::observables;
use crate::observables::{MetricsBuffer, StepMetrics, View};
use crate::state::{resolve_initial, InitialState, Universe};

/// Refuses settings that cannot make a run, before any device starts.
pub(super) fn check(options: &RunOptions, dense: &DenseOptions) -> Result<()> {
    if dense.batch == 0 {
        return Err(Error::InvalidRun("batch must be at least 1".into()));
    }
    if !dense.density_threshold.is_finite() {
        return Err(Error::InvalidRun("the density threshold must be a finite number".into()));
    }
    if let Some(resumed) = &dense.resume {
        let step = resumed.checkpoint.state.step;
        if step > options.steps {
            return Err(Error::InvalidRun(format!(
                "the checkpointed run is at step {step}; --steps counts from step 0 and must be at least that"
            )));
        }
    }
    for scheduled in &dense.tools {
        if scheduled.at > options.steps {
            return Err(Error::InvalidRun(format!(
                "{} at step {} is after the last step ({})",
                scheduled.tool.name(),
                scheduled.at,
                options.steps
            )));
        }
    }
    if dense.checkpoint.is_some() && dense.checkpoint_every == 0 {
        return Err(Error::InvalidRun("a checkpoint every 0 steps: use at least 1".into()));
    }
    Ok(())
}

pub(super) struct RunJob<'a> {
    pub(super) options: &'a RunOptions,
    pub(super) dense: &'a DenseOptions,
}

impl BackendJob for RunJob<'_> {
    type Output = Result<Ran>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let readbacks_before = crate::readback::count();
        let (options, dense, outputs_wanted) = (self.options, self.dense, &self.options.outputs);
        let model = options.model.load::<B>(&device)?;
        let config = model.config.clone();
        let gamma = options.gamma.unwrap_or(config.gamma);
        let resumed = dense.resume.as_ref().map(|resumed| &*resumed.checkpoint);
        let init = match &dense.init {
            Some(init) => init.clone(),
            None => InitialState::default_for(&config)?,
        };
        let host = match resumed {
            Some(saved) => saved.state.clone(),
            None => resolve_initial::<B>(&config, &init, dense.batch, options.grid, options.seed)?,
        };
        let [batch, height, width, _] = host.dims();
        let start = host.step;
        let mut universe = Universe::from_host(&host, &device);
        drop(host);
        universe.step = start;
        let mut simulation = Simulation::new(model, universe, gamma)?;
        for scheduled in &dense.tools {
            scheduled.tool.check(height, width)?;
        }
        let needs_input = outputs_wanted.views.contains(&View::Physics);
        let mut input: Option<Tensor<B, 4>> = None;
        if let Some(saved) = resumed {
            simulation.last_delta = saved.delta.as_ref().map(|delta| engine_tensor(delta, &device));
            input = saved.input.as_ref().filter(|_| needs_input).map(|input| engine_tensor(input, &device));
        }
        let checkpoints = match &dense.checkpoint {
            Some(dir) => Some(Checkpointer::open(dir, options, dense, &init, &simulation, gamma)?),
            None => None,
        };

        let mut recorder = Recorder {
            outputs: Outputs::open(
                outputs_wanted.frames.as_deref(),
                outputs_wanted.gif.as_deref(),
                outputs_wanted.metrics.as_deref(),
                StepMetrics::CSV_HEADER,
            )?,
            metrics: MetricsBuffer::new(MetricsBuffer::<B>::RUN_CAPACITY),
            views: &outputs_wanted.views,
            density_threshold: dense.density_threshold,
            d_state: config.d_state,
        };
        let mut tool_applications = 0;
        let mut interrupted = None;
        let bar = progress_bar(options.steps, "run", options.progress);
        bar.set_position(start);
        let started = Instant::now();
        // At each step count k: the per-step tools of the step that led here, a checkpoint
        // when one is due (before the one-shot tools of k), a stop if a signal asked for one;
        // then the one-shot tools scheduled at k act and the state is recorded before step k.
        let rolled = rollout(&mut simulation, options.steps, |simulation| {
            let step = simulation.universe.step;
            if step > start {
                bar.inc(1);
                for scheduled in dense.tools.iter().filter(|s| s.tool.is_per_step() && step > s.at) {
                    let psi = simulation.universe.psi.clone();
                    simulation.universe.psi = scheduled.tool.apply(psi, step)?;
                    tool_applications += 1;
                }
            }
            let stop = crate::interrupt::check(step, options.steps);
            if let Some(checkpoints) = &checkpoints {
                let due = (step != start || resumed.is_none())
                    && (step % dense.checkpoint_every == 0 || step == options.steps);
                if due || stop.is_some() {
                    checkpoints.save(simulation, input.as_ref())?;
                }
            }
            if stop.is_some() {
                interrupted = stop;
                let last = LastStep { input: input.clone(), delta: simulation.last_delta.clone() };
                recorder.record(step, true, &simulation.universe.psi, &last)?;
                return Ok(ControlFlow::Break(()));
            }
            for scheduled in dense.tools.iter().filter(|s| !s.tool.is_per_step() && s.at == step) {
                let psi = simulation.universe.psi.clone();
                simulation.universe.psi = scheduled.tool.apply(psi, step)?;
                tool_applications += 1;
            }
            let frame = step % outputs_wanted.every == 0 || step == options.steps;
            let last = LastStep { input: input.clone(), delta: simulation.last_delta.clone() };
            recorder.record(step, frame, &simulation.universe.psi, &last)?;
            if needs_input && step < options.steps {
                input = Some(simulation.universe.psi.clone());
            }
            Ok::<_, Error>(ControlFlow::Continue(()))
        });
        // What was gathered is written whether the steps ended, stopped or failed.
        let frames = recorder.finish();
        let step = rolled?;
        let frames = frames?;
        // Reading a value back waits for the device, so the timing covers the queued work.
        let mean_update_energy = match &simulation.last_delta {
            Some(delta) => crate::readback::scalar(observables::update_energy(delta.clone()).mean())?,
            None => 0.0,
        };
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if let Some(path) = &dense.save_state {
            save_state(path, &simulation.universe.to_host()?)?;
        }
        Ok(Ran {
            model: describe_model(&config, &options.model),
            backend: B::engine_name(),
            steps: step,
            start_step: start,
            seconds,
            frames,
            interrupted,
            readbacks: crate::readback::count() - readbacks_before,
            universe: RanUniverse::Dense {
                grid: (height, width),
                batch,
                tool_applications,
                mean_update_energy,
            },
        })
    }
}

/// What a dense run writes as it goes: metrics rows (gathered on the device and read back
/// in batches) and pictures (read back when a frame is due).
struct Recorder<'a, B: burn::tensor::backend::Backend> {
    outputs: Outputs,
    metrics: MetricsBuffer<B>,
    views: &'a [View],
    density_threshold: f64,
    d_state: usize,
}

impl<B: burn::tensor::backend::Backend> Recorder<'_, B> {
    /// Metrics of the state after `step` steps, and its picture when `frame`.
    fn record(&mut self, step: u64, frame: bool, psi: &Tensor<B, 4>, last: &LastStep<B>) -> Result<()> {
        if self.outputs.wants_metrics() {
            let rows = self.metrics.push(step, psi.clone(), last.delta.clone(), self.density_threshold)?;
            self.write_metrics(rows)?;
        }
        if frame && self.outputs.wants_pictures() {
            self.outputs.picture(step, frame_image(self.views, psi, last, step, self.d_state)?)?;
        }
        Ok(())
    }

    fn write_metrics(&mut self, rows: Vec<(u64, StepMetrics)>) -> Result<()> {
        for (step, metrics) in rows {
            self.outputs.metrics_row(&metrics.csv_row(step))?;
        }
        Ok(())
    }

    /// Writes the metrics still gathered and closes the files; the frames drawn.
    fn finish(mut self) -> Result<usize> {
        let rows = self.metrics.drain()?;
        self.write_metrics(rows)?;
        self.outputs.finish()
    }
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
        dense: &DenseOptions,
        init: &InitialState,
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
            init: init.to_string(),
            tools: dense.tools.iter().map(|s| (s.tool.to_string(), s.at)).collect(),
            model: describe_model(&simulation.model.config, &options.model),
            every: options.outputs.every,
            views: options.outputs.views.iter().map(|view| view.name()).collect(),
            density_threshold: dense.density_threshold,
            checkpoint_every: dense.checkpoint_every,
        };
        let same_dir = dense.resume.as_ref().map(|resumed| resumed.dir.as_path()) == Some(dir);
        if !same_dir {
            if run_checkpoint::exists(dir) {
                return Err(Error::InvalidRun(format!(
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
