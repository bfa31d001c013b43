//! The 1x1 convolution with its bias and activation as one operation: the whole of the
//! per-cell laws (MLP, DeepQCA, the first engine) and the U-Net's output layer. Written here
//! once with burn's tensor operations (what every backend without a faster kernel runs), and
//! called through [`EngineBackend::pointwise`] so that the CPU backend can run it as one GEMM
//! with the bias and ELU applied while the product is still in cache.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use super::reference::elu;
use super::EngineBackend;

/// What follows a pointwise layer's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Nothing: the layer's output is `W x + b`.
    Identity,
    /// ELU with alpha 1: `W x + b` where positive, `exp(W x + b) - 1` elsewhere.
    Elu,
}

/// `activation(W x + b)` cell by cell (PyTorch `Conv2d(c, k, 1)` then the activation), through
/// the backend's hook.
///
/// # Shapes
/// - `x`: \[N, C, H, W\], `weight`: \[K, C, 1, 1\], `bias`: \[K\] -> \[N, K, H, W\]
pub fn pointwise<B: EngineBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    activation: Activation,
) -> Tensor<B, 4> {
    let y = B::pointwise(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.into_primitive().tensor(),
        activation,
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

fn float<B: Backend, const D: usize>(tensor: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(tensor))
}

/// [`pointwise`] from burn's tensor operations: one batched matrix product per universe.
pub(crate) fn pointwise_composed<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    activation: Activation,
) -> FloatTensor<B> {
    let (x, weight, bias) = (float::<B, 4>(x), float::<B, 4>(weight), float::<B, 1>(bias));
    let [batch, channels_in, height, width] = x.dims();
    let [channels_out, ..] = weight.dims();
    let weight = weight.reshape([1, channels_out, channels_in]).expand([batch, channels_out, channels_in]);
    let y =
        weight.matmul(x.reshape([batch, channels_in, height * width])) + bias.reshape([1, channels_out, 1]);
    let y = y.reshape([batch, channels_out, height, width]);
    match activation {
        Activation::Identity => y,
        Activation::Elu => elu(y),
    }
    .into_primitive()
    .tensor()
}

/// The gradients of [`pointwise`] for `x`, `weight` and `bias` from burn's tensor operations
/// (any backend), given the layer's `output` (from which the ELU's slope follows: 1 above
/// zero, `exp(z) = output + 1` below) and the output's gradient.
pub(crate) fn pointwise_backward_composed<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output: FloatTensor<B>,
    activation: Activation,
    output_grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (x, weight, grad) = (float::<B, 4>(x), float::<B, 4>(weight), float::<B, 4>(output_grad));
    let [batch, channels_in, height, width] = x.dims();
    let [channels_out, ..] = weight.dims();
    let dz = match activation {
        Activation::Identity => grad,
        Activation::Elu => grad * (float::<B, 4>(output).clamp_max(0.0) + 1.0),
    };
    let dz = dz.reshape([batch, channels_out, height * width]);
    let x = x.reshape([batch, channels_in, height * width]);
    let weight_t = weight.reshape([channels_out, channels_in]).transpose().unsqueeze::<3>();
    let grad_x = weight_t.expand([batch, channels_in, channels_out]).matmul(dz.clone());
    let grad_weight = dz.clone().matmul(x.swap_dims(1, 2)).sum_dim(0);
    let grad_bias = dz.sum_dim(2).sum_dim(0);
    (
        grad_x.reshape([batch, channels_in, height, width]).into_primitive().tensor(),
        grad_weight.reshape([channels_out, channels_in, 1, 1]).into_primitive().tensor(),
        grad_bias.reshape([channels_out]).into_primitive().tensor(),
    )
}
