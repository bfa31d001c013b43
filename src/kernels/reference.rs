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
    let channels = x.dims()[1];
    let (normalized, _) = group_standardize(x, groups);
    normalized * weight.reshape([1, channels, 1, 1]) + bias.reshape([1, channels, 1, 1])
}

/// GroupNorm before its affine part: `x` standardised over each of `groups` channel groups
/// (biased variance, epsilon 1e-5), and the groups' standard deviations (what the backward
/// pass divides by).
///
/// # Shapes
/// - `x`: \[N, C, H, W\] -> (\[N, C, H, W\], \[N, groups, 1\])
pub fn group_standardize<B: Backend>(x: Tensor<B, 4>, groups: usize) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [batch, channels, height, width] = x.dims();
    let grouped = x.reshape([batch, groups, (channels / groups) * height * width]);
    let centered = grouped.clone() - grouped.mean_dim(2);
    // Divide by the standard deviation rather than multiply by `recip()`: burn-ndarray's
    // reciprocal is the processor's approximate one (about 2^-14 relative with AVX-512,
    // 2^-12 with AVX2), which the rounding of a division does not suffer.
    let std = (centered.clone().square().mean_dim(2) + GROUP_NORM_EPS).sqrt();
    let normalized = (centered / std.clone()).reshape([batch, channels, height, width]);
    (normalized, std)
}

/// ELU with alpha 1, written without a branch so that neither value nor gradient can
/// overflow: `max(x, 0) + exp(min(x, 0)) - 1`.
pub fn elu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.clamp_max(0.0).exp() - 1.0
}
