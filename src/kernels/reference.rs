//! The reference operations of the law M, written once with burn's tensor operations: what
//! the layers compute on every backend without a faster kernel, and what the kernels' composed
//! defaults and tests are measured against. They depend on nothing of the models, so that both
//! the layers and the kernels can use them.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Epsilon of PyTorch's `nn.GroupNorm`.
pub const GROUP_NORM_EPS: f64 = 1e-5;

/// GroupNorm of [N, C, H, W] over `groups` channel groups (biased variance, as PyTorch), then
/// the per-channel affine `weight`, `bias`.
pub fn group_norm<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    groups: usize,
) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    let grouped = x.reshape([batch, groups, (channels / groups) * height * width]);
    let mean = grouped.clone().mean_dim(2);
    let centered = grouped - mean;
    let variance = centered.clone().square().mean_dim(2);
    let normalized = centered / (variance + GROUP_NORM_EPS).sqrt();
    let normalized = normalized.reshape([batch, channels, height, width]);
    normalized * weight.reshape([1, channels, 1, 1]) + bias.reshape([1, channels, 1, 1])
}

/// ELU with alpha 1, written without a branch so that neither value nor gradient can
/// overflow: `max(x, 0) + exp(min(x, 0)) - 1`.
pub fn elu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.clamp_max(0.0).exp() - 1.0
}
