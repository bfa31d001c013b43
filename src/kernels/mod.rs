//! The operations of the law M that a backend may implement better than the generic path.
//!
//! The models call these hooks instead of burn's modules so that a backend can swap in a faster
//! kernel while every backend keeps the same maths. The default of each hook is burn's own
//! operation. The CPU backend overrides the convolutions with GEMM-based kernels
//! ([`cpu`]); autodiff wraps any backend's hooks in custom backward steps (`autodiff.rs`), so
//! training gets the fast kernels too.

mod autodiff;
pub mod cpu;
pub mod isa;
mod math_f64;
mod pointwise;
mod pool;
pub mod reference;
mod simd;

use burn::backend::{Cuda, NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};
use burn::tensor::{Tensor, TensorPrimitive};

pub(crate) use math_f64::{ln_f64, sin_cos_f64};
pub use pointwise::{pointwise, Activation};
pub(crate) use pointwise::{pointwise_backward_composed, pointwise_composed};
pub use pool::{keep_freed_memory, on_kernel_pool};
use reference::{elu, group_norm, group_standardize};
pub(crate) use simd::multiversion;

/// 3x3 convolution, padding 1, no bias, through the backend's hook.
///
/// # Shapes
/// - `x`: \[N, C, H, W\], `weight`: \[K, C, 3, 3\] -> \[N, K, H, W\]
pub fn conv3x3<B: EngineBackend>(x: Tensor<B, 4>, weight: Tensor<B, 4>) -> Tensor<B, 4> {
    let y = B::conv3x3(x.into_primitive().tensor(), weight.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// Transposed convolution, kernel 2, stride 2, with bias, through the backend's hook.
///
/// # Shapes
/// - `x`: \[N, C, H, W\], `weight`: \[C, K, 2, 2\], `bias`: \[K\] -> \[N, K, 2H, 2W\]
pub fn conv_transpose2x2<B: EngineBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let y = B::conv_transpose2x2(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// GroupNorm (eps 1e-5, affine) then ELU, through the backend's (possibly fused) hook.
///
/// # Shapes
/// - `x`: \[N, C, H, W\], `weight`, `bias`: \[C\] -> \[N, C, H, W\]
pub fn group_norm_elu<B: EngineBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    groups: usize,
) -> Tensor<B, 4> {
    let y = B::group_norm_elu(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.into_primitive().tensor(),
        groups,
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// 2x2 max pooling with stride 2 (an odd last row or column left out), through the backend's
/// hook.
///
/// # Shapes
/// - `x`: \[N, C, H, W\] -> \[N, C, H/2, W/2\] (rounded down)
pub fn max_pool2x2<B: EngineBackend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let y = B::max_pool2x2(x.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// Options of a 3x3 convolution with stride 1 and zero padding 1.
pub(crate) fn conv3x3_options() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

/// Options of a transposed convolution with kernel 2 and stride 2.
pub(crate) fn up2x2_options() -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1)
}

/// 2x2 max pooling, stride 2, no padding, from burn's pooling (any backend).
pub(crate) fn max_pool2x2_composed<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// The gradient of [`max_pool2x2_composed`] for `x`, from burn's pooling with indices.
pub(crate) fn max_pool2x2_backward_composed<B: Backend>(
    x: FloatTensor<B>,
    output_grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let pooled = B::max_pool2d_with_indices(x.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false);
    B::max_pool2d_with_indices_backward(x, [2, 2], [2, 2], [0, 0], [1, 1], false, output_grad, pooled.indices)
        .x_grad
}

/// GroupNorm + ELU from burn's tensor operations (what autodiff differentiates).
pub(crate) fn group_norm_elu_composed<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    groups: usize,
) -> FloatTensor<B> {
    let x = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    let weight = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(weight));
    let bias = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(bias));
    elu(group_norm(x, weight, bias, groups)).into_primitive().tensor()
}

/// The gradients of GroupNorm + ELU for `x`, `weight` and `bias`, from burn's tensor
/// operations (any backend).
pub(crate) fn group_norm_elu_backward_composed<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    groups: usize,
    output_grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let x = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    let weight = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(weight));
    let bias = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(bias));
    let grad = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(output_grad));
    let [n, c, h, w] = x.dims();
    let size = (c / groups) * h * w;
    let (normalized, std) = group_standardize(x, groups);
    let gamma = weight.reshape([1, c, 1, 1]);
    let z = normalized.clone() * gamma.clone() + bias.reshape([1, c, 1, 1]);
    // ELU'(z) is 1 above zero and exp(z) below: exp(min(z, 0)) covers both.
    let dz = grad * z.clamp_max(0.0).exp();
    let per_channel = |t: Tensor<B, 4>| t.sum_dim(3).sum_dim(2).sum_dim(0).reshape([c]);
    let grad_bias = per_channel(dz.clone());
    let grad_weight = per_channel(dz.clone() * normalized.clone());
    let dnorm = (dz * gamma).reshape([n, groups, size]);
    let normalized = normalized.reshape([n, groups, size]);
    let grad_x =
        (dnorm.clone() - dnorm.clone().mean_dim(2) - normalized.clone() * (dnorm * normalized).mean_dim(2))
            / std;
    (
        grad_x.reshape([n, c, h, w]).into_primitive().tensor(),
        grad_weight.into_primitive().tensor(),
        grad_bias.into_primitive().tensor(),
    )
}

/// A burn backend the engine can run on: burn's `Backend` plus the hooks above.
pub trait EngineBackend: Backend {
    /// What a 3x3 convolution whose gradient will be taken keeps for its backward step besides
    /// its inputs ([`conv3x3_keeping`](Self::conv3x3_keeping)): `()` where nothing.
    type Conv3x3Kept: Clone + Default + Send + Sync + std::fmt::Debug + 'static;

    /// 3x3 convolution, stride 1, zero padding 1, no bias.
    /// `x` [N, C, H, W], `weight` [K, C, 3, 3] -> [N, K, H, W].
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, conv3x3_options())
    }

    /// [`conv3x3`](Self::conv3x3) when its gradient will be taken: also returns what its
    /// backward step can reuse (the CPU backend: the Winograd-transformed input of a small
    /// layer, which the weight gradient would otherwise compute again).
    fn conv3x3_keeping(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, Self::Conv3x3Kept) {
        (Self::conv3x3(x, weight), Self::Conv3x3Kept::default())
    }

    /// Gradients of [`conv3x3`](Self::conv3x3) for `x` and `weight`, given the output's gradient
    /// and what [`conv3x3_keeping`](Self::conv3x3_keeping) kept (or the default).
    fn conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        _kept: Self::Conv3x3Kept,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let grad_x =
            Self::conv2d_x_backward(x.clone(), weight.clone(), output_grad.clone(), conv3x3_options());
        let grad_weight = Self::conv2d_weight_backward(x, weight, output_grad, conv3x3_options());
        (grad_x, grad_weight)
    }

    /// Transposed convolution, kernel 2, stride 2, with bias (exact 2x upsampling).
    /// `x` [N, C, H, W], `weight` [C, O, 2, 2] (PyTorch's layout), `bias` \[O\] -> [N, O, 2H, 2W].
    fn conv_transpose2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d(x, weight, Some(bias), up2x2_options())
    }

    /// Gradients of [`conv_transpose2x2`](Self::conv_transpose2x2) for `x`, `weight` and `bias`.
    fn conv_transpose2x2_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grad_x = Self::conv_transpose2d_x_backward(weight.clone(), output_grad.clone(), up2x2_options());
        let grad_bias = Self::conv_transpose2d_bias_backward(x.clone(), bias, output_grad.clone());
        let grad_weight = Self::conv_transpose2d_weight_backward(x, weight, output_grad, up2x2_options());
        (grad_x, grad_weight, grad_bias)
    }

    /// 2x2 max pooling, stride 2: `x` \[N, C, H, W\] -> \[N, C, H/2, W/2\] (rounded down).
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        max_pool2x2_composed::<Self>(x)
    }

    /// Gradient of [`max_pool2x2`](Self::max_pool2x2) for `x`, given the output's gradient.
    fn max_pool2x2_backward(x: FloatTensor<Self>, output_grad: FloatTensor<Self>) -> FloatTensor<Self> {
        max_pool2x2_backward_composed::<Self>(x, output_grad)
    }

    /// GroupNorm (eps 1e-5, affine) followed by ELU: `x` \[N, C, H, W\], `weight` and `bias` \[C\].
    fn group_norm_elu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
    ) -> FloatTensor<Self> {
        group_norm_elu_composed::<Self>(x, weight, bias, groups)
    }

    /// Gradients of [`group_norm_elu`](Self::group_norm_elu) for `x`, `weight` and `bias`.
    fn group_norm_elu_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        group_norm_elu_backward_composed::<Self>(x, weight, bias, groups, output_grad)
    }

    /// A 1x1 convolution with bias, then `activation`: `x` \[N, C, H, W\], `weight`
    /// \[K, C, 1, 1\], `bias` \[K\] -> \[N, K, H, W\].
    fn pointwise(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        pointwise_composed::<Self>(x, weight, bias, activation)
    }

    /// Gradients of [`pointwise`](Self::pointwise) for `x`, `weight` and `bias`, given the
    /// layer's output and the output's gradient.
    fn pointwise_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        activation: Activation,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        pointwise_backward_composed::<Self>(x, weight, output, activation, output_grad)
    }

    /// A short name for reports ("cpu", "wgpu", "cuda").
    fn engine_name() -> &'static str;

    /// Whether the backend's tensors live in host memory (so that they count against RAM).
    fn tensors_on_host() -> bool {
        false
    }
}

// The GPU backends' own convolution kernels (cubecl, with autotuning) are used as they are.
impl EngineBackend for Wgpu {
    type Conv3x3Kept = ();

    fn engine_name() -> &'static str {
        "wgpu"
    }
}

impl EngineBackend for Cuda {
    type Conv3x3Kept = ();

    fn engine_name() -> &'static str {
        "cuda"
    }
}

impl EngineBackend for NdArray {
    type Conv3x3Kept = Option<std::sync::Arc<cpu::KeptInput>>;

    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::conv3x3(x, weight)
    }

    fn conv3x3_keeping(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, Self::Conv3x3Kept) {
        let (output, kept) = cpu::conv3x3_keeping_input(x, weight);
        (output, kept.map(std::sync::Arc::new))
    }

    fn conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        kept: Self::Conv3x3Kept,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cpu::conv3x3_backward(x, weight, output_grad, kept.as_deref())
    }

    fn conv_transpose2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cpu::conv_transpose2x2(x, weight, bias)
    }

    fn conv_transpose2x2_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        cpu::conv_transpose2x2_backward(x, weight, bias, output_grad)
    }

    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::max_pool(x)
    }

    fn max_pool2x2_backward(x: FloatTensor<Self>, output_grad: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::max_pool_backward(x, output_grad)
    }

    fn group_norm_elu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
    ) -> FloatTensor<Self> {
        cpu::group_norm_elu(x, weight, bias, groups)
    }

    fn group_norm_elu_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        groups: usize,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        cpu::group_norm_elu_backward(x, weight, bias, groups, output_grad)
    }

    fn pointwise(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        cpu::pointwise(x, weight, bias, activation)
    }

    fn pointwise_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output: FloatTensor<Self>,
        activation: Activation,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        cpu::pointwise_backward(x, weight, output, activation, output_grad)
    }

    fn engine_name() -> &'static str {
        "cpu"
    }

    fn tensors_on_host() -> bool {
        true
    }
}
