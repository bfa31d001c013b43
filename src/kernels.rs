//! The operations of the law M that a backend may implement better than the generic path.
//!
//! The models call these hooks instead of burn's modules so that a backend can swap in a faster
//! kernel (the CPU backend does, see `fast_cpu`) while every backend keeps the same maths. The
//! default of each hook is burn's own operation, which autodiff already knows how to
//! differentiate.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::{Autodiff, Cuda, NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};

/// A burn backend the engine can run on: burn's `Backend` plus the hooks above.
pub trait EngineBackend: Backend {
    /// 3x3 convolution, stride 1, zero padding 1. `x` [N, C, H, W], `weight` [O, C, 3, 3].
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, ConvOptions::new([1, 1], [1, 1], [1, 1], 1))
    }

    /// Transposed convolution with kernel 2 and stride 2 (exact 2x upsampling).
    /// `x` [N, C, H, W], `weight` [C, O, 2, 2] (PyTorch's layout), output [N, O, 2H, 2W].
    fn conv_transpose2x2(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose2d(
            x,
            weight,
            bias,
            ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1),
        )
    }

    /// A short name for reports ("cpu", "wgpu", "cuda").
    fn engine_name() -> &'static str;
}

impl EngineBackend for NdArray {
    fn engine_name() -> &'static str {
        "cpu"
    }
}

impl EngineBackend for Wgpu {
    fn engine_name() -> &'static str {
        "wgpu"
    }
}

impl EngineBackend for Cuda {
    fn engine_name() -> &'static str {
        "cuda"
    }
}

impl<B: EngineBackend, C: CheckpointStrategy> EngineBackend for Autodiff<B, C> {
    fn engine_name() -> &'static str {
        B::engine_name()
    }
}
