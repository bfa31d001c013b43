//! The per-cell MLP law: 1x1 convolutions 2d -> h -> h -> 2d with ELU between
//! (PyTorch `net = Sequential(Conv2d, ELU, Conv2d, ELU, Conv2d)`, keys `net.{0,2,4}`).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::layers::Conv1x1;
use super::params::ParamSource;
use crate::error::Result;
use crate::kernels::EngineBackend;

/// The per-cell MLP law.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `net.0`: 2d -> h.
    pub input: Conv1x1<B>,
    /// `net.2`: h -> h.
    pub hidden: Conv1x1<B>,
    /// `net.4`: h -> 2d.
    pub output: Conv1x1<B>,
}

impl<B: EngineBackend> Mlp<B> {
    pub(crate) fn build<S: ParamSource<B>>(source: &mut S, d_state: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            input: Conv1x1::build(source, "net.0", 2 * d_state, hidden, None, None)?,
            hidden: Conv1x1::build(source, "net.2", hidden, hidden, None, None)?,
            output: Conv1x1::build(source, "net.4", hidden, 2 * d_state, None, None)?,
        })
    }

    /// `M(x)`, cell by cell.
    ///
    /// # Shapes
    /// - `x`: \[N, 2d, H, W\] -> \[N, 2d, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.input.forward_elu(x);
        let x = self.hidden.forward_elu(x);
        self.output.forward(x)
    }
}
