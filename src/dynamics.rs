//! The QCA step and the rollout. This is the only place the step's maths is written;
//! inference, training, the benchmarks and the sparse engine all call [`step`], and every loop
//! of steps (a run, an evaluation, a training episode) is a [`rollout`].

use std::ops::ControlFlow;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::complex::{self, Renormalization};
use crate::error::{Error, Result};
use crate::kernels::{self, EngineBackend};
use crate::models::{check_gamma, Memory, Model};
use crate::state::Universe;

/// How a law's output becomes the next state: the parts of the update that differ between
/// the lab's engines. Every architecture has one ([`crate::Architecture::update_rule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateRule {
    /// `delta = M(psi) * psi` (complex product per channel) instead of `delta = M(psi)`.
    pub unitary: bool,
    /// Where the renormalisation's epsilon sits.
    pub renormalization: Renormalization,
}

/// What one step produces.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// The renormalised next state, \[B, 2d, H, W\].
    pub psi: Tensor<B, 4>,
    /// The update added to psi before renormalising (after the unitary product, the law's
    /// bias and the decay), \[B, 2d, H, W\].
    pub delta: Tensor<B, 4>,
    /// The ConvLSTM memory after the step.
    pub memory: Option<Memory<B>>,
}

/// One step of the automaton under `model`'s law and update rule:
///
/// 1. `delta = M(psi)` (the network's 2d output channels read as d complex numbers);
/// 2. unitary rules: `delta = delta * psi` (complex product per channel);
/// 3. a law with a learned bias (the lab's first engine): `delta = delta + bias` in every cell;
/// 4. Lindblad decay: `delta = delta - gamma * psi`;
/// 5. Euler: `psi' = psi + delta`, then every cell renormalised as the rule says (by default
///    divided by `sqrt(sum_c |psi'_c|^2) + 1e-9`).
///
/// # Shapes
/// - `psi`: \[B, 2d, H, W\]; `memory`: the ConvLSTM's \[B, 4h, H/4, W/4\] pair or `None`
pub fn step<B: EngineBackend>(
    model: &Model<B>,
    gamma: f64,
    psi: Tensor<B, 4>,
    memory: Option<Memory<B>>,
) -> StepOutput<B> {
    let rule = model.config.arch.update_rule();
    let (output, memory) = model.law.forward(psi.clone(), memory);
    let mut delta = if rule.unitary { complex::mul(output, psi.clone()) } else { output };
    if let Some(bias) = model.law.update_bias() {
        let channels = bias.dims()[0];
        delta = delta + bias.reshape([1, channels, 1, 1]);
    }
    if gamma != 0.0 {
        delta = delta - psi.clone() * gamma;
    }
    let next = psi + delta.clone();
    StepOutput { psi: complex::normalize(next, rule.renormalization), delta, memory }
}

/// A model stepping a batch of universes: what runs, evaluations and training episodes drive
/// through [`rollout`].
#[derive(Debug, Clone)]
pub struct Simulation<B: EngineBackend> {
    /// The law and its configuration.
    pub model: Model<B>,
    /// The decay rate of every step.
    pub gamma: f64,
    /// The state, its memory and its step count.
    pub universe: Universe<B>,
    /// The update of the last step (for the energy observable), \[B, 2d, H, W\].
    pub last_delta: Option<Tensor<B, 4>>,
}

impl<B: EngineBackend> Simulation<B> {
    /// Checks that the universe fits the model (channels, grid) and gamma is valid.
    pub fn new(model: Model<B>, universe: Universe<B>, gamma: f64) -> Result<Self> {
        check_gamma(gamma)?;
        let [_, height, width, d_state] = universe.dims();
        if d_state != model.config.d_state {
            return Err(Error::InvalidState(format!(
                "the state has d_state {d_state} but the model expects {}",
                model.config.d_state
            )));
        }
        model.config.check_grid(height, width)?;
        if universe.memory.is_some() && !model.config.arch.has_memory() {
            return Err(Error::InvalidState(format!(
                "the state carries a ConvLSTM memory but {} has none",
                model.config.arch
            )));
        }
        if let Some(memory) = &universe.memory {
            let expected = [universe.psi.dims()[0], 4 * model.config.hidden_channels, height / 4, width / 4];
            if memory.hidden.dims() != expected {
                return Err(Error::InvalidState(format!(
                    "the state's memory has shape {:?}, the model needs {expected:?}",
                    memory.hidden.dims()
                )));
            }
        }
        Ok(Self { model, gamma, universe, last_delta: None })
    }

    /// Advances one step.
    pub fn step(&mut self) {
        let (psi, memory) = (self.universe.psi.clone(), self.universe.memory.take());
        let output = kernels::on_kernel_pool::<B, _>(|| step(&self.model, self.gamma, psi, memory));
        self.universe.psi = output.psi;
        self.universe.memory = output.memory;
        self.universe.step += 1;
        self.last_delta = Some(output.delta);
    }
}

/// Steps `simulation` until it has taken `until` steps in all. `visit` sees the simulation
/// at every step count on the way, from the current one to `until` included (so after the
/// last step too), before the step from there: where tools act, noise is injected, pictures
/// are drawn and signals are polled. `ControlFlow::Break` stops the rollout at that count.
///
/// Returns the step count reached.
pub fn rollout<B: EngineBackend, E>(
    simulation: &mut Simulation<B>,
    until: u64,
    mut visit: impl FnMut(&mut Simulation<B>) -> std::result::Result<ControlFlow<()>, E>,
) -> std::result::Result<u64, E> {
    loop {
        if visit(simulation)?.is_break() || simulation.universe.step >= until {
            return Ok(simulation.universe.step);
        }
        simulation.step();
    }
}

/// Steps `simulation` `steps` times with nothing in between.
pub fn advance<B: EngineBackend>(simulation: &mut Simulation<B>, steps: u64) -> u64 {
    let until = simulation.universe.step + steps;
    let reached: std::result::Result<u64, std::convert::Infallible> =
        rollout(simulation, until, |_| Ok(ControlFlow::Continue(())));
    match reached {
        Ok(step) => step,
    }
}
