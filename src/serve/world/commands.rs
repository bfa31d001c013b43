//! The commands a client sends, applied to the world between two steps.

use serde_json::json;

use super::{snapshot_path, DenseParts, Kind, Recording, World};
use crate::dynamics::Simulation;
use crate::error::{Error, Result};
use crate::io::state_file::{load_state, save_state, HostState};
use crate::kernels::EngineBackend;
use crate::models::Model;
use crate::observables::View;
use crate::render::GifRecorder;
use crate::serve::frames::probe;
use crate::serve::protocol::Command;
use crate::serve::training::TrainingRun;
use crate::sparse::Region;
use crate::sparse::SparseUniverse;
use crate::state::{checked_initial, Universe};
use crate::tools::Tool;

impl<B: EngineBackend> World<B> {
    pub(super) fn apply(
        &mut self,
        command: Command,
        reply: &tokio::sync::mpsc::Sender<String>,
    ) -> Result<Option<serde_json::Value>> {
        match command {
            Command::Play => {
                self.running = true;
                self.rate.clear();
            }
            Command::Pause => self.running = false,
            Command::Step { count } => {
                self.running = false;
                self.rate.clear();
                self.pending_steps = self.pending_steps.saturating_add(count);
            }
            Command::Reset { seed, init, grid, batch } => self.reset(seed, init, grid, batch)?,
            Command::Set { steps_per_frame, max_fps, gamma, views, universe } => {
                if let Some(universe) = universe {
                    let batch = match &self.kind {
                        Kind::Dense { simulation, .. } => simulation.universe.dims()[0],
                        Kind::Sparse { .. } => 1,
                    };
                    if universe >= batch {
                        return Err(Error::InvalidRun(format!("universe {universe} of a batch of {batch}")));
                    }
                    self.universe = universe;
                }
                if let Some(views) = views {
                    if self.options.sparse.is_some()
                        && views.iter().any(|v| matches!(v, View::Energy | View::Physics))
                    {
                        return Err(Error::InvalidRun(
                            "the energy and physics views need the dense engine's update".into(),
                        ));
                    }
                    self.views = views;
                }
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
                return Ok(Some(
                    json!({"type": "probe", "x": x, "y": y, "universe": universe, "step": step, "densities": densities, "phases": phases}),
                ));
            }
            Command::Snapshot { name } => {
                let name = name.unwrap_or_else(|| format!("snapshot-{}", timestamp()));
                let path = snapshot_path(&self.options.snapshots, &name, "safetensors");
                let DenseParts { simulation, .. } = self.dense()?;
                save_state(&path, &simulation.universe.to_host()?)?;
                return Ok(Some(
                    json!({"type": "snapshot", "name": name, "url": format!("/snapshots/{name}.safetensors")}),
                ));
            }
            Command::LoadSnapshot { name } => {
                let state = load_state(&snapshot_path(&self.options.snapshots, &name, "safetensors"))?;
                self.install(state)?;
            }
            Command::Record { frames } => {
                let name = format!("recording-{}", timestamp());
                self.recording =
                    Some(Recording { name, left: frames, gif: GifRecorder::new(), reply: reply.clone() });
            }
            Command::Rewind { back } => {
                let DenseParts { simulation, input, history, .. } = self.dense()?;
                if back > history.len() {
                    return Err(Error::InvalidRun(format!(
                        "{back} frames back; the history holds {}",
                        history.len()
                    )));
                }
                let keep = history.len() - back;
                let state =
                    history.get(keep).cloned().ok_or_else(|| Error::InvalidRun("no such frame".into()))?;
                history.truncate(keep);
                simulation.universe = state;
                simulation.last_delta = None;
                *input = None;
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
            Command::TrainStart { settings } => {
                if self.training.as_ref().is_some_and(TrainingRun::is_running) {
                    return Err(Error::InvalidTraining(
                        "a training run is already going: one at a time".into(),
                    ));
                }
                let run = TrainingRun::start::<B>(&self.options.runs, settings, self.device.clone())?;
                let dir = run.dir().display().to_string();
                self.training = Some(run);
                return Ok(Some(json!({"type": "training", "dir": dir})));
            }
            Command::TrainStop => match &self.training {
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
                return Ok(Some(json!({"type": "loaded", "dir": dir.display().to_string()})));
            }
            Command::TrainHistory { since } => {
                let run =
                    self.training.as_ref().ok_or_else(|| Error::InvalidTraining("no training run".into()))?;
                return Ok(Some(
                    json!({"type": "train_history", "since": since, "points": run.points_since(since)}),
                ));
            }
        }
        Ok(None)
    }

    fn reset(
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
                let host = checked_initial::<B>(&simulation.model.config, &init, batch, height, width, seed)?;
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
                &checked_initial::<B>(&model.config, &init, batch, height, width, seed)?,
                &device,
            )
        };
        *simulation = Simulation::new(model, universe, simulation.gamma)?;
        *input = None;
        history.clear();
        Ok(())
    }
}

/// Seconds since the epoch, for generated names.
fn timestamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}
