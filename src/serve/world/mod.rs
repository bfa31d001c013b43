//! The live lab's simulation thread: one universe (dense or sparse) stepped on the selected
//! backend, commands applied between steps, frames and status published for every client.
//!
//! The thread never waits for a client: frames and status go into watch channels that keep
//! only the newest value, and replies into each client's bounded queue, dropped when full.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::Tensor;
use serde_json::json;

mod commands;

use super::frames::{encode_frame, SparseFrame};
use super::training::TrainingRun;
use super::{Hub, Outputs, Request, ServeOptions};
use crate::app::outputs::{frame_image, LastStep};
use crate::dynamics::Simulation;
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::models::Model;
use crate::observables::View;
use crate::render::GifRecorder;
use crate::sparse::{Region, SparseUniverse};
use crate::state::{checked_initial, InitialState, Universe};
use crate::tools::Tool;

/// Memory the rewind history may hold (its states share nothing with the running one: each
/// step makes a new tensor, so a kept state costs its size and no copy).
const HISTORY_BYTES: usize = 512 << 20;

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
    reply: tokio::sync::mpsc::Sender<String>,
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
}

impl<B: EngineBackend> World<B> {
    /// The world `options` describe, on `device`.
    pub(super) fn new(options: ServeOptions, device: B::Device) -> Result<Self> {
        let model = options.model.load::<B>(&device)?;
        let gamma = options.gamma.unwrap_or(model.config.gamma);
        let init = options.init.clone().unwrap_or(InitialState::Random);
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
                let (height, width) = options.grid.unwrap_or((64, 64));
                let host =
                    checked_initial::<B>(&model.config, &init, options.batch, height, width, options.seed)?;
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

    /// Runs until `shutdown` says or every sender is gone: commands between steps, a frame
    /// when one is due, the status four times a second.
    pub(super) fn run(mut self, requests: Receiver<Request>, outputs: Outputs, hub: Arc<Hub>) {
        let mut last_frame: Option<Instant> = None;
        let mut last_status = Instant::now() - Duration::from_secs(1);
        let mut steps_since_frame = 0u32;
        loop {
            if hub.shutdown.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let idle = !self.running && self.pending_steps == 0 && !self.dirty;
            let first = if idle {
                match requests.recv_timeout(Duration::from_millis(50)) {
                    Ok(request) => Some(request),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            let mut next = first;
            while let Some(request) = next {
                self.handle(request);
                next = requests.try_recv().ok();
            }
            if self.running || self.pending_steps > 0 {
                match self.step() {
                    Ok(()) => self.count_step(),
                    Err(error) => {
                        tracing::error!("the step failed: {error}");
                        self.running = false;
                    }
                }
                self.pending_steps = self.pending_steps.saturating_sub(1);
                steps_since_frame += 1;
                self.dirty = true;
            }
            let frame_due =
                steps_since_frame >= self.steps_per_frame || (!self.running && self.pending_steps == 0);
            let interval = Duration::from_secs_f64(1.0 / self.max_fps);
            let on_time = last_frame.is_none_or(|at| at.elapsed() >= interval);
            let watched =
                hub.clients.load(std::sync::atomic::Ordering::Relaxed) > 0 || self.recording.is_some();
            if self.dirty && frame_due && on_time && watched {
                match self.frame() {
                    Ok(frame) => {
                        let _ = outputs.frames.send(Some(Arc::new(frame)));
                    }
                    Err(error) => tracing::error!("a frame failed: {error}"),
                }
                self.remember();
                last_frame = Some(Instant::now());
                steps_since_frame = 0;
                self.dirty = false;
            }
            if last_status.elapsed() >= Duration::from_millis(250) {
                let _ = outputs.status.send(Arc::new(self.status(&hub).to_string()));
                last_status = Instant::now();
            }
        }
        if let Some(training) = self.training.take() {
            training.stop_and_wait();
        }
    }

    /// Measures steps per second over the last two seconds of wall-clock time: everything the
    /// thread does between steps (frames, commands) counts against the rate.
    fn count_step(&mut self) {
        let now = Instant::now();
        self.rate.push_back((now, self.step_count()));
        while self.rate.front().is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(2)) {
            self.rate.pop_front();
        }
        if let (Some((first, from)), Some((last, to))) = (self.rate.front(), self.rate.back()) {
            let seconds = last.duration_since(*first).as_secs_f64();
            if seconds > 0.0 {
                self.steps_per_s = (to - from) as f64 / seconds;
            }
        }
    }

    fn step(&mut self) -> Result<()> {
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
                        Ok(()) => {
                            json!({"type": "recorded", "name": recording.name, "url": format!("/snapshots/{}.gif", recording.name)})
                        }
                        Err(error) => json!({"type": "error", "cmd": "record", "error": error.to_string()}),
                    };
                    let _ = recording.reply.try_send(message.to_string());
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

    fn status(&self, hub: &Hub) -> serde_json::Value {
        let (step, grid, batch, gamma, extra) = match &self.kind {
            Kind::Dense { simulation, per_step, history, .. } => {
                let [batch, height, width, _] = simulation.universe.dims();
                let tools: Vec<String> = per_step.iter().map(Tool::to_string).collect();
                (
                    simulation.universe.step,
                    [height, width],
                    batch,
                    simulation.gamma,
                    json!({"tools": tools, "history": history.len()}),
                )
            }
            Kind::Sparse { universe, gamma, window, .. } => (
                universe.step_count(),
                [window.height, window.width],
                1,
                *gamma,
                json!({"sparse": {"window": [window.x, window.y], "stored_tiles": universe.stored_tiles(), "matter_cells": universe.matter_cells()}}),
            ),
        };
        let mut status = json!({
            "type": "status",
            "version": super::protocol::PROTOCOL_VERSION,
            "running": self.running,
            "step": step,
            "steps_per_s": self.steps_per_s,
            "grid": grid,
            "batch": batch,
            "universe": self.universe,
            "views": self.views,
            "gamma": gamma,
            "steps_per_frame": self.steps_per_frame,
            "max_fps": self.max_fps,
            "seed": self.seed,
            "init": self.init.to_string(),
            "history_capacity": self.history_capacity,
            "clients": hub.clients.load(std::sync::atomic::Ordering::Relaxed),
            "recording": self.recording.as_ref().map(|recording| recording.left),
            "training": self.training.as_ref().map(TrainingRun::status),
        });
        if let (Some(fields), Some(extra)) = (status.as_object_mut(), extra.as_object()) {
            fields.extend(extra.clone());
        }
        status
    }

    /// Applies one command and answers its client (frames and status follow from `dirty`).
    fn handle(&mut self, request: Request) {
        let name = request.command.name();
        let reply = match self.apply(request.command, &request.reply) {
            Ok(Some(message)) => message,
            Ok(None) => json!({"type": "ack", "cmd": name, "step": self.step_count()}),
            Err(error) => json!({"type": "error", "cmd": name, "error": error.to_string()}),
        };
        let _ = request.reply.try_send(reply.to_string());
        self.dirty = true;
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
