//! The QCA step. This is the only place its maths is written; inference, training, the
//! benchmarks and the sparse engine all call [`step`].

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::models::{check_gamma, Law, Memory, Model};
use crate::state::{Universe, NORM_EPSILON};

/// What one step produces.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// The renormalised next state, [B, 2d, H, W].
    pub psi: Tensor<B, 4>,
    /// The update added to psi before renormalising (after the unitary product and the decay).
    pub delta: Tensor<B, 4>,
    /// The ConvLSTM memory after the step.
    pub memory: Option<Memory<B>>,
}

/// One step of the automaton on psi [B, 2d, H, W]:
///
/// 1. `delta = M(psi)` (the network's 2d output channels read as d complex numbers);
/// 2. unitary laws: `delta = delta * psi` (complex product per channel);
/// 3. Lindblad decay: `delta = delta - gamma * psi`;
/// 4. Euler: `psi' = psi + delta`, then every cell divided by `sqrt(sum_c |psi'_c|^2) + 1e-9`.
pub fn step<B: EngineBackend>(
    law: &Law<B>,
    unitary: bool,
    gamma: f64,
    psi: Tensor<B, 4>,
    memory: Option<Memory<B>>,
) -> StepOutput<B> {
    let (output, memory) = law.forward(psi.clone(), memory);
    let mut delta = if unitary { complex_mul(output, psi.clone()) } else { output };
    if gamma != 0.0 {
        delta = delta - psi.clone() * gamma;
    }
    let next = psi + delta.clone();
    // Real and imaginary parts are all channels, so the complex norm is a plain channel sum.
    let norm = next.clone().square().sum_dim(1).sqrt() + NORM_EPSILON;
    StepOutput { psi: next / norm, delta, memory }
}

/// Complex product of two [B, 2d, H, W] tensors in the real/imaginary channel layout.
pub fn complex_mul<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    let d = a.dims()[1] / 2;
    let (a_re, a_im) = (a.clone().narrow(1, 0, d), a.narrow(1, d, d));
    let (b_re, b_im) = (b.clone().narrow(1, 0, d), b.narrow(1, d, d));
    let re = a_re.clone() * b_re.clone() - a_im.clone() * b_im.clone();
    let im = a_re * b_im + a_im * b_re;
    Tensor::cat(vec![re, im], 1)
}

/// A model stepping a universe: what `atheria run` drives.
#[derive(Debug, Clone)]
pub struct Simulation<B: EngineBackend> {
    pub model: Model<B>,
    pub gamma: f64,
    pub universe: Universe<B>,
    /// The update of the last step (for the energy observable).
    pub last_delta: Option<Tensor<B, 4>>,
}

impl<B: EngineBackend> Simulation<B> {
    /// Checks that the universe fits the model (channels, grid) and gamma is valid.
    pub fn new(model: Model<B>, universe: Universe<B>, gamma: f64) -> Result<Self> {
        check_gamma(gamma)?;
        let [_, height, width, d_state] = universe.dims();
        if d_state != model.config.d_state {
            return Err(Error::InvalidArgument(format!(
                "the state has d_state {d_state} but the model expects {}",
                model.config.d_state
            )));
        }
        model.config.check_grid(height, width)?;
        if universe.memory.is_some() && !model.config.arch.has_memory() {
            return Err(Error::InvalidArgument(format!(
                "the state carries a ConvLSTM memory but {} has none",
                model.config.arch
            )));
        }
        if let Some(memory) = &universe.memory {
            let expected = [universe.psi.dims()[0], 4 * model.config.hidden_channels, height / 4, width / 4];
            if memory.hidden.dims() != expected {
                return Err(Error::InvalidArgument(format!(
                    "the state's memory has shape {:?}, the model needs {expected:?}",
                    memory.hidden.dims()
                )));
            }
        }
        Ok(Self { model, gamma, universe, last_delta: None })
    }

    /// Advances one step.
    pub fn step(&mut self) {
        let output = step(
            &self.model.law,
            self.model.config.arch.is_unitary(),
            self.gamma,
            self.universe.psi.clone(),
            self.universe.memory.take(),
        );
        self.universe.psi = output.psi;
        self.universe.memory = output.memory;
        self.universe.step += 1;
        self.last_delta = Some(output.delta);
    }
}
