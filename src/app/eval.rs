//! Evaluating a law M: a loss over a long rollout from seeded random universes, without noise
//! or gradients, and whether the universes are still alive at its end ([`crate::life`]). What
//! `atheria eval` prints, e.g. to compare a trained model with an untrained one on the same
//! universes.

use std::ops::ControlFlow;

use serde::Serialize;

use crate::backend::{BackendJob, DeviceReport, DeviceRequest};
use crate::dynamics::{rollout, Simulation};
use crate::error::Result;
use crate::io::model_dir::ModelSource;
use crate::kernels::EngineBackend;
use crate::life::{self, DensityFrame, LifeMeasures};
use crate::state::{generate, InitialState, Universe};
use crate::training::loss::{self, LossKind, LossWeights};

/// What to evaluate, where and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The law.
    pub model: ModelSource,
    /// Where to run it.
    pub device: DeviceRequest,
    /// Fail instead of falling back when the device cannot start.
    pub strict_device: bool,
    /// Side of the square grid.
    pub grid: usize,
    /// Steps of the rollout.
    pub steps: usize,
    /// Universes evaluated together (the loss is their mean).
    pub universes: usize,
    /// Seed of the initial universes (the same seed gives every model the same universes).
    pub seed: u64,
    /// The loss computed over the rollout.
    pub loss: LossKind,
    /// Decay rate; the model's own when `None`.
    pub gamma: Option<f64>,
}

/// A model's loss over a rollout; the JSON of `atheria eval --json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The model, described.
    pub model: String,
    /// The backend that ran it.
    pub backend: String,
    /// Which loss.
    pub loss_name: LossKind,
    /// The loss's total.
    pub loss: f64,
    /// Its named terms.
    pub terms: Vec<(String, f64)>,
    /// Steps of the rollout (fewer when interrupted).
    pub steps: usize,
    /// The side of the square grid.
    pub grid: usize,
    /// Universes evaluated together.
    pub universes: usize,
    /// Seed of the initial universes.
    pub seed: u64,
    /// Set when a signal stopped the rollout early; `steps` is then the steps completed and
    /// the loss is that of the state reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<crate::interrupt::Interruption>,
    /// Whether each universe is alive, over the last [`crate::life::WINDOW`] states.
    pub life: Vec<LifeMeasures>,
}

impl EvalReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let terms: Vec<String> =
            self.terms.iter().map(|(name, value)| format!("{name} {value:.4}")).collect();
        format!(
            "{}: {} loss {:.4} ({}) after {} steps on {} universe(s) of {}x{} (seed {})",
            self.model,
            self.loss_name,
            self.loss,
            terms.join(", "),
            self.steps,
            self.universes,
            self.grid,
            self.grid,
            self.seed
        )
    }

    /// One line on whether the universes are alive (see [`crate::life`]).
    pub fn life_summary(&self) -> String {
        let count = self.life.len().max(1) as f64;
        let mean = |value: fn(&LifeMeasures) -> f64| self.life.iter().map(value).sum::<f64>() / count;
        let periodic = self.life.iter().filter(|measures| measures.period.is_some()).count();
        format!(
            "life score {:.3} (activity {:.4}, structure {:.3}, persistence {:.3}; {periodic} of {} universe(s) periodic) over the last {} states",
            mean(|m| m.score),
            mean(|m| m.activity),
            mean(|m| m.structure),
            mean(|m| m.persistence),
            self.life.len(),
            crate::life::WINDOW.min(self.steps + 1),
        )
    }
}

/// Evaluates as `options` say. The device report goes to `on_device` before the rollout starts.
pub fn evaluate(options: &EvalOptions, on_device: &dyn Fn(&DeviceReport)) -> Result<EvalReport> {
    let (report, _) =
        super::run_on_device(options.device, options.strict_device, on_device, EvalJob { options })?;
    Ok(report)
}

struct EvalJob<'a> {
    options: &'a EvalOptions,
}

impl BackendJob for EvalJob<'_> {
    type Output = Result<EvalReport>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let options = self.options;
        let model = options.model.load::<B>(&device)?;
        let gamma = options.gamma.unwrap_or(model.config.gamma);
        let universes = options.universes.max(1);
        let estimate = crate::footprint::dense_run(
            &model.config,
            universes,
            options.grid,
            options.grid,
            B::tensors_on_host(),
        );
        crate::footprint::check_host(&estimate, B::engine_name())?;
        let host = generate(
            &InitialState::Random,
            universes,
            options.grid,
            options.grid,
            model.config.d_state,
            options.seed,
        )?;
        let universe = Universe::<B>::from_host(&host, &device);
        let psi0 = universe.psi.clone();
        let mut simulation = Simulation::new(model, universe, gamma)?;
        let total = options.steps as u64;
        let mut interrupted = None;
        let first_measured = total.saturating_sub(life::WINDOW as u64 - 1);
        // The measured states of each universe, in step order.
        let mut measured: Vec<Vec<DensityFrame>> = vec![Vec::new(); universes];
        let steps = rollout(&mut simulation, total, |simulation| {
            let step = simulation.universe.step;
            if step >= first_measured {
                let frames = life::density_frames(simulation.universe.psi.clone())?;
                for (states, frame) in measured.iter_mut().zip(frames) {
                    states.push(frame);
                }
            }
            interrupted = crate::interrupt::check(step, total).filter(|_| step < total);
            Ok::<_, crate::Error>(if interrupted.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })? as usize;
        let life = measured.iter().map(|states| life::measure(states)).collect();
        let psi = simulation.universe.psi;
        let (total, terms) = loss::compute(options.loss, &LossWeights::default(), psi0, psi)?.values()?;
        Ok(EvalReport {
            model: options.model.describe(),
            backend: B::engine_name().to_string(),
            loss_name: options.loss,
            loss: total,
            terms: terms.into_iter().map(|(name, value)| (name.to_string(), value)).collect(),
            steps,
            grid: options.grid,
            universes,
            seed: options.seed,
            interrupted,
            life,
        })
    }
}
