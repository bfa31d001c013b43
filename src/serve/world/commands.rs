//! The commands a client sends, applied to the world between two steps.

use super::{snapshot_path, DenseParts, Kind, Recording, World};
use crate::dynamics::Simulation;
use crate::error::{Error, Result};
use crate::io::state_file::{load_state, save_state, HostState};
use crate::kernels::EngineBackend;
use crate::models::Model;
use crate::observables::View;
use crate::render::GifRecorder;
use crate::serve::frames::probe;
use crate::serve::messages::Outgoing;
use crate::serve::protocol::Command;
use crate::serve::training::TrainingRun;
use crate::serve::Reply;
use crate::sparse::SparseUniverse;
use crate::sparse::{MatterSeed, Region};
use crate::state::{resolve_initial, Universe};
use crate::tools::Tool;

impl<B: EngineBackend> World<B> {
    pub(super) fn apply(
        &mut self,
        command: Command,
        reply: &tokio::sync::mpsc::Sender<Reply>,
    ) -> Result<Option<Outgoing>> {
        match command {
            Command::Play {} => {
                self.interrupt_steps();
                self.running = true;
            }
            Command::Pause {} => {
                self.interrupt_steps();
                self.running = false;
            }
            Command::Step { count } => {
                self.interrupt_steps();
                self.running = false;
                self.pending_steps = count;
            }
            Command::Reset { seed, init, grid, batch } => self.reset(seed, init, grid, batch)?,
            Command::Set { steps_per_frame, max_fps, gamma, views, universe } => {
                // Everything is checked before anything changes.
                let batch = match &self.kind {
                    Kind::Dense { simulation, .. } => simulation.universe.dims()[0],
                    Kind::Sparse { .. } => 1,
                };
                if universe.is_some_and(|universe| universe >= batch) {
                    return Err(Error::InvalidRun(format!(
                        "universe must be below the batch's {batch} (0 to {})",
                        batch - 1
                    )));
                }
                let sparse = self.options.sparse.is_some();
                if sparse && views.iter().flatten().any(|v| matches!(v, View::Energy | View::Physics)) {
                    return Err(Error::InvalidRun(
                        "the energy and physics views need the dense engine's update".into(),
                    ));
                }
                self.universe = universe.unwrap_or(self.universe);
                self.views = views.unwrap_or_else(|| self.views.clone());
                if let Some(gamma) = gamma {
                    match &mut self.kind {
                        Kind::Dense { simulation, .. } => simulation.gamma = gamma,
                        Kind::Sparse { gamma: current, .. } => *current = gamma,
                    }
                }
                self.steps_per_frame = steps_per_frame.unwrap_or(self.steps_per_frame);
                self.max_fps = max_fps.unwrap_or(self.max_fps);
            }
            Command::Tool { spec } => {
                let tool: Tool = spec.parse()?;
                let DenseParts { simulation, per_step, .. } = self.dense()?;
                let [_, height, width, _] = simulation.universe.dims();
                tool.check(height, width)?;
                if tool.is_per_step() {
                    per_step.retain(|active| active.kind() != tool.kind());
                    if matches!(tool, Tool::ClickOut { enabled: true, .. }) {
                        per_step.push(tool);
                    }
                } else {
                    let psi = simulation.universe.psi.clone();
                    simulation.universe.psi = tool.apply(psi, simulation.universe.step)?;
                }
            }
            Command::Probe { x, y } => {
                let universe = self.universe;
                let (psi, step) = match &self.kind {
                    Kind::Dense { simulation, .. } => {
                        (simulation.universe.psi.clone(), simulation.universe.step)
                    }
                    Kind::Sparse { universe, window, .. } => {
                        (universe.to_dense(*window)?, universe.step_count())
                    }
                };
                let [_, _, height, width] = psi.dims();
                if x >= width || y >= height {
                    return Err(Error::InvalidRun(format!(
                        "cell ({x}, {y}) is outside the {height}x{width} grid"
                    )));
                }
                let (densities, phases) = probe(&psi, universe.min(psi.dims()[0] - 1), x, y)?;
                return Ok(Some(Outgoing::Probe { x, y, universe, step, densities, phases }));
            }
            Command::Snapshot { name } => {
                let name = name.unwrap_or_else(|| format!("snapshot-{}", timestamp()));
                let path = snapshot_path(&self.options.snapshots, &name, "safetensors");
                let DenseParts { simulation, .. } = self.dense()?;
                let state = simulation.universe.to_host()?;
                let bad = state.non_finite();
                if bad > 0 {
                    return Err(Error::InvalidState(format!(
                        "the state holds {bad} non-finite value(s) (NaN or infinity), so its snapshot \
                         could not be loaded back: reset or rewind first"
                    )));
                }
                save_state(&path, &state)?;
                return Ok(Some(Outgoing::Snapshot { url: format!("/snapshots/{name}.safetensors"), name }));
            }
            Command::LoadSnapshot { name } => {
                let state = load_state(&snapshot_path(&self.options.snapshots, &name, "safetensors"))?;
                self.install(state)?;
                self.interrupt_steps();
            }
            Command::Record { frames } => {
                if let Some(recording) = &self.recording {
                    return Err(Error::InvalidRun(format!(
                        "the recording {} is under way ({} frames left): one at a time; its \
                         `recorded` reply comes when it is done",
                        recording.name, recording.left
                    )));
                }
                let name = format!("recording-{}", timestamp());
                self.recording =
                    Some(Recording { name, left: frames, gif: GifRecorder::new(), reply: reply.clone() });
            }
            Command::Rewind { back } => {
                let DenseParts { simulation, input, history, .. } = self.dense()?;
                let older = rewindable(history, simulation.universe.step);
                if back > older {
                    return Err(Error::InvalidRun(format!(
                        "{back} frames back: the history holds {older} frame(s) before this one"
                    )));
                }
                // The kept frame `back` before the one shown; it stays the newest kept frame.
                let keep = older - back;
                let state =
                    history.get(keep).cloned().ok_or_else(|| Error::InvalidRun("no such frame".into()))?;
                history.truncate(keep + 1);
                simulation.universe = state;
                simulation.last_delta = None;
                *input = None;
                self.interrupt_steps();
            }
            Command::Window { x, y } => match &mut self.kind {
                Kind::Sparse { window, .. } => {
                    let moved = Region::new(x, y, window.width, window.height);
                    moved.check()?;
                    *window = moved;
                }
                Kind::Dense { .. } => {
                    return Err(Error::InvalidRun("window moves a sparse run's view".into()))
                }
            },
            Command::Matter { x, y, radius } => match &mut self.kind {
                Kind::Sparse { universe, .. } => {
                    // A new disc each time: the seed mixes in the step and the place.
                    let seed = self.seed
                        ^ universe.step_count().rotate_left(32)
                        ^ (x as u64).rotate_left(16)
                        ^ y as u64;
                    universe.seed_matter(&[MatterSeed { x, y, radius }], seed)?;
                }
                Kind::Dense { .. } => {
                    return Err(Error::InvalidRun(
                        "matter places matter in a sparse run; a dense grid is changed with tools".into(),
                    ))
                }
            },
            Command::TrainStart { settings } => {
                if self.training.as_ref().is_some_and(TrainingRun::is_running) {
                    return Err(Error::InvalidTraining(
                        "a training run is already going: one at a time".into(),
                    ));
                }
                let run = TrainingRun::start::<B>(&self.options.runs, settings, self.device.clone())?;
                let dir = run.dir().display().to_string();
                self.training = Some(run);
                return Ok(Some(Outgoing::Training { dir }));
            }
            Command::TrainStop {} => match &self.training {
                Some(run) => run.request_stop(),
                None => return Err(Error::InvalidTraining("no training run to stop".into())),
            },
            Command::TrainLoad { which } => {
                let run = self
                    .training
                    .as_ref()
                    .ok_or_else(|| Error::InvalidTraining("no training run to load from".into()))?;
                let dir = run.checkpoint(which.as_deref().unwrap_or("best"))?;
                let model = crate::io::model_dir::load_model::<B>(&dir, &self.device)?;
                self.replace_model(model)?;
                self.options.model = crate::io::model_dir::ModelSource::Dir(dir.clone());
                let which = which.unwrap_or_else(|| "best".into());
                return Ok(Some(Outgoing::Loaded {
                    which,
                    dir: dir.display().to_string(),
                    model: self.model_description(),
                }));
            }
            Command::TrainHistory { since } => {
                let run =
                    self.training.as_ref().ok_or_else(|| Error::InvalidTraining("no training run".into()))?;
                return Ok(Some(Outgoing::TrainHistory { since, points: run.points_since(since) }));
            }
        }
        Ok(None)
    }

    /// A new universe: what is not given stays as it was. Ends a `step` command's steps.
    pub(super) fn reset(
        &mut self,
        seed: Option<u64>,
        init: Option<String>,
        grid: Option<[usize; 2]>,
        batch: Option<usize>,
    ) -> Result<()> {
        let seed = seed.unwrap_or(self.seed);
        let init = match init {
            Some(text) => text.parse()?,
            None => self.init.clone(),
        };
        match &mut self.kind {
            Kind::Dense { simulation, input, history, .. } => {
                let [old_batch, old_height, old_width, _] = simulation.universe.dims();
                let (height, width) = grid.map_or((old_height, old_width), |[h, w]| (h, w));
                let batch = batch.unwrap_or(old_batch);
                let grid = Some((height, width));
                let host = resolve_initial::<B>(&simulation.model.config, &init, batch, grid, seed)?;
                simulation.universe = Universe::from_host(&host, &self.device);
                simulation.last_delta = None;
                *input = None;
                history.clear();
                self.universe = self.universe.min(batch - 1);
            }
            Kind::Sparse { universe, .. } => {
                let sparse = self.options.sparse.clone().unwrap_or_default();
                let mut fresh = SparseUniverse::new(*universe.config(), universe.d_state(), &self.device)?;
                fresh.seed_matter(&sparse.seeds, seed)?;
                *universe = fresh;
            }
        }
        self.seed = seed;
        self.init = init;
        self.history_capacity = self.fit_history();
        self.interrupt_steps();
        Ok(())
    }

    /// Continues from `state` (a snapshot), with the current model.
    fn install(&mut self, state: HostState) -> Result<()> {
        let device = self.device.clone();
        let DenseParts { simulation, input, history, .. } = self.dense()?;
        let universe = Universe::from_host(&state, &device);
        let next = Simulation::new(simulation.model.clone(), universe, simulation.gamma)?;
        *simulation = next;
        *input = None;
        history.clear();
        self.universe = 0;
        self.history_capacity = self.fit_history();
        Ok(())
    }

    /// Runs `model` from now on; a new state when its channels differ from the current one's.
    fn replace_model(&mut self, model: Model<B>) -> Result<()> {
        let (seed, init) = (self.seed, self.init.clone());
        let device = self.device.clone();
        let DenseParts { simulation, input, history, .. } = self.dense()?;
        let [batch, height, width, d] = simulation.universe.dims();
        let universe = if d == model.config.d_state && simulation.universe.memory.is_none() {
            simulation.universe.clone()
        } else {
            Universe::from_host(
                &resolve_initial::<B>(&model.config, &init, batch, Some((height, width)), seed)?,
                &device,
            )
        };
        *simulation = Simulation::new(model, universe, simulation.gamma)?;
        *input = None;
        history.clear();
        Ok(())
    }
}

/// How many kept frames lie before the state shown: the newest kept frame is usually that
/// state itself (kept when its frame went out), and `back: 1` means the one before it.
pub(super) fn rewindable<B: EngineBackend>(
    history: &std::collections::VecDeque<Universe<B>>,
    step: u64,
) -> usize {
    history.len() - usize::from(history.back().is_some_and(|newest| newest.step == step))
}

/// Seconds since the epoch, for generated names.
fn timestamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}
