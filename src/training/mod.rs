//! Training the law M on burn's autodiff backend: each episode unrolls the shared step from a
//! fresh random universe with gradients through time, injects the noise curriculum, and takes
//! one AdamW step on the loss.

pub mod checkpoint;
pub mod gradients;
pub mod loss;
pub mod optimizer;
pub mod peer;
pub mod schedule;

use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

use burn::collective::ReduceOperation;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dynamics::{rollout, Simulation};
use crate::error::{Error, Result};
use crate::io::model_dir::{load_model, save_model};
use crate::io::{read_file, write_atomic};
use crate::kernels::{on_kernel_pool, EngineBackend};
use crate::models::{check_gamma, check_grid, Architecture, Model, ModelConfig, DEFAULT_GAMMA};
use crate::noise::{bit_flip, phase_flip};
use crate::state::{generate, InitialState, Universe};
use checkpoint::{TrainerState, OPTIMIZER_FILE};
pub use gradients::{clip_global_norm, named_gradients};
use loss::{LossKind, LossWeights};
use optimizer::{FusedAdamW, LawOptimizer};
use peer::Peer;
use schedule::{noise_level, ReduceOnPlateau};

/// A training run's settings (`atheria train --config FILE.toml`); every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Architecture, width and channels of a new model (ignored with `init_model`).
    pub arch: Architecture,
    /// Complex channels per cell of a new model.
    pub d_state: usize,
    /// Hidden channels of a new model.
    pub hidden: usize,
    /// Start from this model directory's weights instead of a seeded initialisation.
    pub init_model: Option<PathBuf>,
    /// Lindblad decay rate during training (and the trained model's default).
    pub gamma: f64,
    /// The run's total of episodes.
    pub episodes: u64,
    /// Side of the square training grid.
    pub grid: usize,
    /// Steps unrolled per episode (gradients flow through all of them).
    pub qca_steps: usize,
    /// Universes per episode.
    pub batch: usize,
    /// The loss.
    pub loss: LossKind,
    /// Its terms' weights.
    pub loss_weights: LossWeights,
    /// AdamW's initial learning rate.
    pub lr: f64,
    /// AdamW's weight decay.
    pub weight_decay: f64,
    /// The global gradient norm is clipped to this (as PyTorch's `clip_grad_norm_`).
    pub grad_clip: f64,
    /// Noise curriculum: phase flips at `min(max_noise, max_noise * episode / ramp)` every
    /// step, and with probability `bit_flip_chance` per step bit flips at a tenth of that.
    pub max_noise: f64,
    /// Episodes over which the noise ramps up to `max_noise`.
    pub noise_ramp_episodes: u64,
    /// The probability per step of a bit-flip event.
    pub bit_flip_chance: f64,
    /// Reduce-on-plateau of the learning rate.
    pub plateau_patience: u64,
    /// The factor the rate is multiplied by on a plateau.
    pub plateau_factor: f64,
    /// The rate is never reduced below this.
    pub min_lr: f64,
    /// Checkpoint every this many episodes (and at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept: the best by the lab's combined metric, and the newest.
    pub keep_best: usize,
    /// How many of the newest checkpoints are kept.
    pub keep_last: usize,
    /// A picture of the final state every this many episodes (0: never).
    pub frame_every: u64,
    /// Seed of the model's initialisation, the states and the noise.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Architecture::Unet,
            d_state: 8,
            hidden: 16,
            init_model: None,
            gamma: DEFAULT_GAMMA,
            episodes: 2000,
            grid: 64,
            qca_steps: 16,
            batch: 1,
            loss: LossKind::Evolutionary,
            loss_weights: LossWeights::default(),
            lr: 1e-4,
            weight_decay: 1e-5,
            grad_clip: 1.0,
            max_noise: 0.05,
            noise_ramp_episodes: 2000,
            bit_flip_chance: 0.2,
            plateau_patience: 200,
            plateau_factor: 0.5,
            min_lr: 1e-6,
            checkpoint_every: 100,
            keep_best: 3,
            keep_last: 2,
            frame_every: 100,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; fields it does not name keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
        toml::from_str(&text).map_err(|error| {
            // One line: the message and where, instead of toml's multi-line excerpt.
            let line = error.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let at = line.map(|line| format!(" (line {line})")).unwrap_or_default();
            Error::format(path, format!("invalid training config: {}{at}", error.message().trim()))
        })
    }

    /// Checks every value a file or flag could get wrong.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::InvalidTraining(message));
        if self.init_model.is_none() {
            ModelConfig::new(self.arch, self.d_state, self.hidden).validate()?;
            check_grid(self.arch, self.grid, self.grid)?;
        }
        check_gamma(self.gamma)?;
        if self.episodes == 0 || self.qca_steps == 0 || self.batch == 0 || self.grid < 2 {
            return fail("episodes, qca_steps and batch must be at least 1, grid at least 2".into());
        }
        for (name, value) in
            [("lr", self.lr), ("grad_clip", self.grad_clip), ("plateau_factor", self.plateau_factor)]
        {
            if !(value.is_finite() && value > 0.0) {
                return fail(format!("{name} must be a positive number, got {value}"));
            }
        }
        for (name, value) in [("weight_decay", self.weight_decay), ("min_lr", self.min_lr)] {
            if !(value.is_finite() && value >= 0.0) {
                return fail(format!("{name} must be a non-negative number, got {value}"));
            }
        }
        for (name, value) in [("max_noise", self.max_noise), ("bit_flip_chance", self.bit_flip_chance)] {
            if !(0.0..=1.0).contains(&value) {
                return fail(format!("{name} must be in [0, 1], got {value}"));
            }
        }
        if self.checkpoint_every == 0 {
            return fail("checkpoint_every must be at least 1".into());
        }
        Ok(())
    }
}

/// What one episode did.
#[derive(Debug, Clone)]
pub struct EpisodeReport {
    /// The episode's index (0-based).
    pub episode: u64,
    /// The loss's total.
    pub loss: f64,
    /// Its named terms.
    pub terms: Vec<(String, f64)>,
    /// The metric the best checkpoint is chosen by: the lab's `10 survival + 5 symmetry`, or
    /// the loss for losses without those terms.
    pub metric: f64,
    /// Learning rate used for this episode's update.
    pub lr: f64,
    /// The phase-flip rate of the curriculum.
    pub noise: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// A model being trained, its optimizer and schedule. Generic over an autodiff backend whose
/// inner backend runs the engine.
pub struct Trainer<B: AutodiffBackend + EngineBackend> {
    /// The run's settings.
    pub config: TrainConfig,
    /// The model being trained.
    pub model: Model<B>,
    optimizer: LawOptimizer<B>,
    /// The episode, schedule and metrics a checkpoint keeps.
    pub state: TrainerState,
    device: B::Device,
    /// Set in a data-parallel run: this trainer steps its share of the batch and averages its
    /// gradients with the other peers'.
    peer: Option<Peer>,
}

impl<B: AutodiffBackend + EngineBackend> Trainer<B> {
    /// A new run: a seeded model (or `init_model`'s weights) and a fresh optimizer.
    pub fn new(config: TrainConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let model = match &config.init_model {
            Some(dir) => {
                let mut model = load_model::<B>(dir, device)?;
                model.config.gamma = config.gamma;
                model
            }
            None => {
                let mut model_config = ModelConfig::new(config.arch, config.d_state, config.hidden);
                model_config.gamma = config.gamma;
                Model::seeded(model_config, config.seed, device)?
            }
        };
        // Ids that every process agrees on, for the peers of a data-parallel run; checkpoints
        // keep them, so a resumed run has them too.
        let model = Model { law: gradients::number_parameters(model.law), ..model };
        check_grid(model.config.arch, config.grid, config.grid)?;
        let state = TrainerState {
            schedule: ReduceOnPlateau::new(
                config.lr,
                config.plateau_factor,
                config.plateau_patience,
                config.min_lr,
            ),
            config: config.clone(),
            episode: 0,
            metrics: vec![],
            metric: f64::INFINITY,
            kept: vec![],
            seconds: 0.0,
        };
        let optimizer = optimizer_for(&config);
        Ok(Self { config, model, optimizer, state, device: device.clone(), peer: None })
    }

    /// Continues from a checkpoint directory (model, optimizer moments, schedule, episode).
    /// `episodes` may extend the run; every other setting is the checkpoint's.
    pub fn resume(checkpoint: &Path, episodes: Option<u64>, device: &B::Device) -> Result<Self> {
        let mut state = checkpoint::read_state(checkpoint)?;
        if let Some(episodes) = episodes {
            state.config.episodes = episodes;
        }
        let config = state.config.clone();
        config.validate()?;
        let model = load_model::<B>(checkpoint, device)?;
        let path = checkpoint.join(OPTIMIZER_FILE);
        let record = Bytes::default()
            .load(read_file(&path)?, device)
            .map_err(|error| Error::format(&path, format!("invalid optimizer state: {error}")))?;
        let optimizer = optimizer_for(&config).load_record(record);
        Ok(Self { config, model, optimizer, state, device: device.clone(), peer: None })
    }

    /// Whether every episode has run.
    pub fn finished(&self) -> bool {
        self.state.episode >= self.config.episodes
    }

    /// Makes this trainer one peer of a data-parallel run: from now on it steps only its share
    /// of each episode's universes and averages its gradients with the other peers'.
    pub fn join(&mut self, peer: Peer) -> Result<()> {
        if !self.config.batch.is_multiple_of(peer.count) {
            return Err(Error::InvalidParallel(format!(
                "a batch of {} universes cannot be shared by {} peers: use a batch that is a multiple of the number of peers",
                self.config.batch, peer.count
            )));
        }
        self.peer = Some(peer);
        Ok(())
    }

    /// The peer this trainer is in a data-parallel run.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// The device it trains on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The universes of each episode's batch that this trainer steps.
    pub fn universes(&self) -> Range<usize> {
        match &self.peer {
            None => 0..self.config.batch,
            Some(peer) => {
                let share = self.config.batch / peer.count;
                peer.rank * share..(peer.rank + 1) * share
            }
        }
    }

    /// Runs the next episode and updates the weights. Returns the report and the final state
    /// of the rollout (detached from the graph): of the universes this trainer stepped.
    ///
    /// Universe `u` of episode `e` draws its initial state and its noise from
    /// [`universe_rng`]`(seed, e, u)` alone, so a batch split over peers evolves as it would on
    /// one device.
    pub fn episode(&mut self) -> Result<(EpisodeReport, Tensor<B::InnerBackend, 4>)> {
        let config = &self.config;
        let episode = self.state.episode;
        let d_state = self.model.config.d_state;
        let mut rngs: Vec<ChaCha8Rng> =
            self.universes().map(|universe| universe_rng(config.seed, episode, universe as u64)).collect();
        let mut initial = Vec::with_capacity(rngs.len());
        for rng in &mut rngs {
            let host = generate(&InitialState::Random, 1, config.grid, config.grid, d_state, rng.gen())?;
            initial.push(Universe::<B>::from_host(&host, &self.device).psi);
        }
        let psi0 = Tensor::cat(initial, 0);
        let noise = noise_level(config.max_noise, config.noise_ramp_episodes, episode);

        // The noise curriculum acts on the state after every step, each universe with its own
        // random stream.
        let mut simulation = Simulation::new(self.model.clone(), Universe::new(psi0.clone()), config.gamma)?;
        rollout(&mut simulation, config.qca_steps as u64, |simulation| {
            if simulation.universe.step > 0 {
                let psi = simulation.universe.psi.clone();
                let mut noisy = Vec::with_capacity(rngs.len());
                for (index, rng) in rngs.iter_mut().enumerate() {
                    let mut one = phase_flip(psi.clone().narrow(0, index, 1), noise, rng)?;
                    if rng.gen::<f64>() < config.bit_flip_chance {
                        one = bit_flip(one, noise / 10.0, rng)?;
                    }
                    noisy.push(one);
                }
                simulation.universe.psi =
                    if noisy.len() == 1 { noisy.remove(0) } else { Tensor::cat(noisy, 0) };
            }
            Ok::<_, Error>(ControlFlow::Continue(()))
        })?;
        let psi = simulation.universe.psi;
        let output =
            on_kernel_pool::<B, _>(|| loss::compute(config.loss, &config.loss_weights, psi0, psi.clone()))?;
        let (mut total, mut terms) = output.values()?;
        if let Some(peer) = &self.peer {
            // Every peer's loss is a mean over an equal share of the batch: their mean is the
            // batch's, the same on every peer, so the schedule and the checks agree everywhere.
            let local: Vec<f64> =
                std::iter::once(total).chain(terms.iter().map(|(_, value)| *value)).collect();
            let mean = peer.reduce::<B::InnerBackend>(
                &local,
                ReduceOperation::Mean,
                &self.device,
                "averaging the losses",
            )?;
            total = mean[0];
            for ((_, value), mean) in terms.iter_mut().zip(&mean[1..]) {
                *value = *mean;
            }
        }
        if !total.is_finite() {
            return Err(Error::Diverged {
                what: format!("episode {episode}: the loss is {total}"),
                hint: "lower the learning rate (--lr) or the unrolled steps, or check the model".into(),
            });
        }
        let law = &self.model.law;
        let mut gradients =
            on_kernel_pool::<B, _>(|| GradientsParams::from_grads(output.total.backward(), law));
        if let Some(peer) = &self.peer {
            gradients = peer.mean_gradients::<B::InnerBackend>(gradients)?;
        }
        let lr = self.state.schedule.lr;
        let (law, optimizer) = (&mut self.model.law, &mut self.optimizer);
        let grad_norm = on_kernel_pool::<B, _>(|| {
            let grad_norm = clip_global_norm(law, &mut gradients, config.grad_clip)?;
            *law = optimizer.step(lr, law.clone(), gradients);
            Ok::<_, Error>(grad_norm)
        })?;

        let terms: Vec<(String, f64)> =
            terms.into_iter().map(|(name, value)| (name.to_string(), value)).collect();
        let borrowed: Vec<(&str, f64)> = terms.iter().map(|(name, value)| (name.as_str(), *value)).collect();
        let metric = loss::combined_metric(&borrowed).unwrap_or(total);
        self.state.schedule.step(episode, total);
        self.state.episode = episode + 1;
        self.state.metrics = [("loss".to_string(), total)].into_iter().chain(terms.clone()).collect();
        let report = EpisodeReport { episode, loss: total, terms, metric, lr, noise, grad_norm };
        Ok((report, psi.inner()))
    }

    /// Writes a checkpoint of the current state into `out` and moves `last` (and `best` when
    /// `metric` is the lowest so far) to it; prunes old checkpoints.
    pub fn checkpoint(&mut self, out: &Path, metric: f64) -> Result<PathBuf> {
        let is_best = metric < self.state.metric || checkpoint::resolve(out, checkpoint::BEST).is_none();
        if is_best {
            self.state.metric = metric;
        }
        let episode = self.state.episode;
        self.state.kept.retain(|(kept, _)| *kept != episode);
        self.state.kept.push((episode, metric));
        let mut model = self.model.clone();
        model.config.trained = true;
        let optimizer = Bytes::default()
            .record(self.optimizer.to_record(), ())
            .map_err(|error| Error::format(out, format!("cannot encode the optimizer state: {error}")))?;
        let state = self.state.clone();
        let path = checkpoint::publish(out, episode, is_best, |dir| {
            save_model(dir, &model)?;
            write_atomic(&dir.join(OPTIMIZER_FILE), &optimizer)?;
            checkpoint::write_state(dir, &state)
        })?;
        self.state.kept =
            checkpoint::prune(out, &self.state.kept, self.config.keep_best, self.config.keep_last);
        Ok(path)
    }
}

fn optimizer_for<B: AutodiffBackend + EngineBackend>(config: &TrainConfig) -> LawOptimizer<B> {
    FusedAdamW::new(config.weight_decay as f32, 1e-8).for_law()
}

/// The random stream of one universe of one episode: ChaCha8 seeded with the run's seed, on
/// the episode's own stream, at the universe's own offset (2^40 words apart, more than any
/// episode draws), so its randomness depends on nothing but (seed, episode, universe), whichever
/// peer steps it. Universe 0's is the episode's stream from its start.
pub fn universe_rng(seed: u64, episode: u64, universe: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(episode);
    rng.set_word_pos(u128::from(universe) << 40);
    rng
}

/// The model of a finished or checkpointed run, with its training recorded in `provenance`.
pub fn provenance(config: &TrainConfig, state: &TrainerState, command: &str) -> serde_json::Value {
    serde_json::json!({
        "trained_with": command,
        "episodes": state.episode,
        "seconds": state.seconds,
        "final_metrics": state.metrics.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "grid": config.grid,
        "qca_steps": config.qca_steps,
        "batch": config.batch,
        "loss": config.loss,
        "seed": config.seed,
    })
}

/// The inner (non-autodiff) model, e.g. for evaluation after training.
pub fn inference_model<B: AutodiffBackend + EngineBackend>(model: &Model<B>) -> Model<B::InnerBackend>
where
    B::InnerBackend: EngineBackend,
{
    Model { config: model.config.clone(), law: model.law.valid() }
}
