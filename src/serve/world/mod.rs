//! The live lab's simulation thread: one universe (dense or sparse) stepped on the selected
//! backend, commands applied between steps, frames and status published for every client.
//!
//! The thread never waits for a client: frames and status go into watch channels that keep
//! only the newest value, and replies into each client's bounded queue, dropped when full.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;

mod commands;
mod running;

use super::frames::{encode_frame, SparseFrame};
use super::messages::{Failure, KindStatus, Outgoing, SparseStatus, Status};
use super::training::TrainingRun;
use super::{Hub, Reply, Request, ServeOptions};
use crate::app::outputs::{frame_image, LastStep};
use crate::dynamics::Simulation;
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::models::Model;
use crate::observables::View;
use crate::render::GifRecorder;
use crate::sparse::{Region, SparseUniverse};
use crate::state::{resolve_initial, InitialState, Universe};
use crate::tools::Tool;

/// Memory the rewind history may hold (its states share nothing with the running one: each
/// step makes a new tensor, so a kept state costs its size and no copy).
const HISTORY_BYTES: usize = 512 << 20;

/// An environment variable for tests: the simulation thread panics when its step count reaches
/// this value, as a bug would, so that the supervision can be seen recovering.
pub const PANIC_AT_STEP: &str = "ATHERIA_SERVE_PANIC_AT_STEP";

/// A dense batch of universes or a sparse one.
enum Kind<B: EngineBackend> {
    Dense {
        simulation: Simulation<B>,
        /// The state the last step started from (for the physics view).
        input: Option<Tensor<B, 4>>,
        /// Tools that act after every step (click-out).
        per_step: Vec<Tool>,
        /// The states of the last frames, newest last.
        history: VecDeque<Universe<B>>,
    },
    Sparse {
        universe: SparseUniverse<B>,
        model: Model<B>,
        gamma: f64,
        window: Region,
    },
}

/// A dense run's parts, borrowed.
struct DenseParts<'a, B: EngineBackend> {
    simulation: &'a mut Simulation<B>,
    input: &'a mut Option<Tensor<B, 4>>,
    per_step: &'a mut Vec<Tool>,
    history: &'a mut VecDeque<Universe<B>>,
}

/// A GIF being recorded for a client.
struct Recording {
    name: String,
    left: u32,
    gif: GifRecorder,
    reply: tokio::sync::mpsc::Sender<Reply>,
}

/// The simulation and everything the page can change about it.
pub(super) struct World<B: EngineBackend> {
    device: B::Device,
    kind: Kind<B>,
    options: ServeOptions,
    running: bool,
    pending_steps: u32,
    steps_per_frame: u32,
    max_fps: f64,
    views: Vec<View>,
    universe: usize,
    seed: u64,
    init: InitialState,
    steps_per_s: f64,
    /// (when, step count) of the recent steps, for `steps_per_s`.
    rate: VecDeque<(Instant, u64)>,
    history_capacity: usize,
    recording: Option<Recording>,
    training: Option<TrainingRun>,
    dirty: bool,
    /// The newest failure the thread recovered from.
    last_failure: Option<Failure>,
    /// Publish the status at the next chance rather than on the clock (a failure to report).
    status_due: bool,
    /// Fault injection for the supervision's tests: panic when this step count is reached.
    panic_at_step: Option<u64>,
}

impl<B: EngineBackend> World<B> {
    /// The world `options` describe, on `device`.
    pub(super) fn new(options: ServeOptions, device: B::Device) -> Result<Self> {
        let model = options.model.load::<B>(&device)?;
        let gamma = options.gamma.unwrap_or(model.config.gamma);
        let init = match &options.init {
            Some(init) => init.clone(),
            None => InitialState::default_for(&model.config)?,
        };
        let kind = match &options.sparse {
            Some(sparse) => {
                crate::sparse::check_law(&model.config)?;
                let mut universe = SparseUniverse::new(sparse.config, model.config.d_state, &device)?;
                universe.seed_matter(&sparse.seeds, options.seed)?;
                let window = sparse.window(options.grid);
                window.check()?;
                Kind::Sparse { universe, model, gamma, window }
            }
            None => {
                let host =
                    resolve_initial::<B>(&model.config, &init, options.batch, options.grid, options.seed)?;
                let simulation = Simulation::new(model, Universe::from_host(&host, &device), gamma)?;
                Kind::Dense { simulation, input: None, per_step: Vec::new(), history: VecDeque::new() }
            }
        };
        let mut world = Self {
            device,
            kind,
            seed: options.seed,
            init,
            options,
            running: true,
            pending_steps: 0,
            steps_per_frame: 1,
            max_fps: 20.0,
            views: View::DEFAULT_PANEL.to_vec(),
            universe: 0,
            steps_per_s: 0.0,
            rate: VecDeque::new(),
            history_capacity: 0,
            recording: None,
            training: None,
            dirty: true,
            last_failure: None,
            status_due: false,
            panic_at_step: std::env::var(PANIC_AT_STEP).ok().and_then(|text| text.parse().ok()),
        };
        world.history_capacity = world.fit_history();
        Ok(world)
    }

    /// A description of the model for the page.
    pub(super) fn model_description(&self) -> String {
        let config = &self.model().config;
        format!(
            "{} d{} h{} ({}){}",
            config.arch,
            config.d_state,
            config.hidden_channels,
            self.options.model.describe(),
            config.description.as_ref().map(|text| format!(": {text}")).unwrap_or_default()
        )
    }

    fn model(&self) -> &Model<B> {
        match &self.kind {
            Kind::Dense { simulation, .. } => &simulation.model,
            Kind::Sparse { model, .. } => model,
        }
    }

    /// How many frames of history fit [`HISTORY_BYTES`] (at most what was asked).
    fn fit_history(&self) -> usize {
        match &self.kind {
            Kind::Dense { simulation, .. } => {
                let [batch, height, width, d] = simulation.universe.dims();
                let bytes = (batch * height * width * 2 * d * 4).max(1);
                self.options.history.min(HISTORY_BYTES / bytes)
            }
            Kind::Sparse { .. } => 0,
        }
    }

    fn step(&mut self) -> Result<()> {
        if self.panic_at_step == Some(self.step_count()) {
            self.panic_at_step = None;
            panic!("injected by {PANIC_AT_STEP} at step {}", self.step_count());
        }
        match &mut self.kind {
            Kind::Dense { simulation, input, per_step, .. } => {
                if self.views.contains(&View::Physics) {
                    *input = Some(simulation.universe.psi.clone());
                }
                simulation.step();
                for tool in per_step.iter() {
                    let psi = simulation.universe.psi.clone();
                    simulation.universe.psi = tool.apply(psi, simulation.universe.step)?;
                }
                Ok(())
            }
            Kind::Sparse { universe, model, gamma, .. } => universe.step(model, *gamma).map(|_| ()),
        }
    }

    /// The bytes of a frame of the current state, and a GIF frame when recording.
    fn frame(&mut self) -> Result<Vec<u8>> {
        let (psi, input, delta, step, sparse) = match &self.kind {
            Kind::Dense { simulation, input, .. } => (
                simulation.universe.psi.clone(),
                input.clone(),
                simulation.last_delta.clone(),
                simulation.universe.step,
                None,
            ),
            Kind::Sparse { universe, window, .. } => {
                let tiles = universe.stored_coords().into_iter().map(|(i, j)| [i, j]).collect();
                let sparse =
                    SparseFrame { origin: [window.x, window.y], tile: universe.config().tile, tiles };
                (universe.to_dense(*window)?, None, None, universe.step_count(), Some(sparse))
            }
        };
        let universe = self.universe.min(psi.dims()[0] - 1);
        let frame = encode_frame(
            &self.views,
            &psi,
            input.as_ref(),
            delta.as_ref(),
            universe,
            step,
            self.steps_per_s,
            sparse,
        )?;
        if let Some(recording) = &mut self.recording {
            let one = |t: &Tensor<B, 4>| t.clone().narrow(0, universe, 1);
            let last = LastStep { input: input.as_ref().map(one), delta: delta.as_ref().map(one) };
            let d_state = psi.dims()[1] / 2;
            recording.gif.push(frame_image(&self.views, &one(&psi), &last, step, d_state)?);
            recording.left -= 1;
            if recording.left == 0 {
                if let Some(recording) = self.recording.take() {
                    let path = snapshot_path(&self.options.snapshots, &recording.name, "gif");
                    let message = match recording.gif.save(&path) {
                        Ok(()) => Outgoing::Recorded {
                            url: format!("/snapshots/{}.gif", recording.name),
                            name: recording.name,
                        },
                        Err(error) => Outgoing::error(Some("record"), error.to_string()),
                    };
                    let _ = recording.reply.try_send(Reply::notice(message.text()));
                }
            }
        }
        Ok(frame)
    }

    /// Keeps the current state for rewinding.
    fn remember(&mut self) {
        let capacity = self.history_capacity;
        if let Kind::Dense { simulation, history, .. } = &mut self.kind {
            let step = simulation.universe.step;
            if capacity == 0 || history.back().is_some_and(|last| last.step == step) {
                return;
            }
            if history.len() == capacity {
                history.pop_front();
            }
            history.push_back(simulation.universe.clone());
        }
    }

    fn status(&self, hub: &Hub) -> Status {
        let (step, grid, batch, gamma, kind) = match &self.kind {
            Kind::Dense { simulation, per_step, history, .. } => {
                let [batch, height, width, _] = simulation.universe.dims();
                let step = simulation.universe.step;
                let tools = per_step.iter().map(Tool::to_string).collect();
                let history = commands::rewindable(history, step);
                (step, [height, width], batch, simulation.gamma, KindStatus::Dense { tools, history })
            }
            Kind::Sparse { universe, gamma, window, .. } => {
                let sparse = SparseStatus {
                    window: [window.x, window.y],
                    stored_tiles: universe.stored_tiles(),
                    matter_cells: universe.matter_cells(),
                };
                let grid = [window.height, window.width];
                (universe.step_count(), grid, 1, *gamma, KindStatus::Sparse { sparse })
            }
        };
        Status {
            version: super::protocol::PROTOCOL_VERSION,
            running: self.running,
            healthy: true,
            model: self.model_description(),
            error: self.last_failure.clone(),
            step,
            steps_per_s: if self.stepping() { self.steps_per_s } else { 0.0 },
            pending_steps: self.pending_steps,
            grid,
            batch,
            universe: self.universe,
            views: self.views.clone(),
            gamma,
            steps_per_frame: self.steps_per_frame,
            max_fps: self.max_fps,
            seed: self.seed,
            init: self.init.to_string(),
            history_capacity: self.history_capacity,
            clients: hub.clients.load(std::sync::atomic::Ordering::Relaxed),
            recording: self.recording.as_ref().map(|recording| recording.left),
            sparse_mode: self.options.sparse.is_some(),
            training: self.training.as_ref().map(TrainingRun::status),
            kind,
        }
    }

    /// Applies one command and answers its client (frames and status follow from `dirty`). A
    /// command whose work panics is answered with the cause, and the world recovers.
    fn handle(&mut self, request: Request, hub: &Hub) {
        let name = request.command.name();
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply(request.command, &request.reply)
        }));
        let reply = match applied {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => Outgoing::Ack { cmd: name, step: self.step_count() },
            Ok(Err(error)) => Outgoing::error(Some(name), error.to_string()),
            Err(payload) => {
                let cause = crate::guard::panic_text(payload.as_ref());
                self.recover(&format!("the command {name} failed: {cause}"), hub);
                let error = format!("the command failed ({cause}); the simulation went on, paused");
                Outgoing::error(Some(name), error)
            }
        };
        let _ = request.reply.try_send(Reply::answer(reply.text()));
        self.dirty = true;
    }

    /// Whether steps are being taken (running, or a `step` command's steps left).
    fn stepping(&self) -> bool {
        self.running || self.pending_steps > 0
    }

    /// Ends a `step` command's remaining steps and forgets the rate measured so far (the step
    /// count may jump or go back): for pause, reset, rewind and a new state or law.
    fn interrupt_steps(&mut self) {
        self.pending_steps = 0;
        self.rate.clear();
        self.steps_per_s = 0.0;
    }

    fn step_count(&self) -> u64 {
        match &self.kind {
            Kind::Dense { simulation, .. } => simulation.universe.step,
            Kind::Sparse { universe, .. } => universe.step_count(),
        }
    }

    fn dense(&mut self) -> Result<DenseParts<'_, B>> {
        match &mut self.kind {
            Kind::Dense { simulation, input, per_step, history } => {
                Ok(DenseParts { simulation, input, per_step, history })
            }
            Kind::Sparse { .. } => {
                Err(Error::InvalidRun("this needs a dense run (the server runs a sparse one)".into()))
            }
        }
    }
}

/// The snapshot directory's file for `name` and `extension` (names are checked by the
/// protocol, so this stays inside the directory).
pub(super) fn snapshot_path(dir: &Path, name: &str, extension: &str) -> PathBuf {
    dir.join(format!("{name}.{extension}"))
}
