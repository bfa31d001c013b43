//! The layers of the law M. Parameter names are PyTorch's (`weight`, `bias`) so that a
//! state_dict maps onto them by path alone; the forward passes go through the backend hooks
//! in [`crate::kernels`].

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::Tensor;

use super::params::{Init, ParamSource};
use crate::error::Result;
pub use crate::kernels::reference::{elu, group_norm, GROUP_NORM_EPS};
use crate::kernels::{self, Activation, EngineBackend};

/// 3x3 convolution, zero padding 1 (PyTorch `Conv2d(c_in, c_out, 3, padding=1)`).
#[derive(Module, Debug)]
pub struct Conv3x3<B: Backend> {
    /// \[c_out, c_in, 3, 3\].
    pub weight: Param<Tensor<B, 4>>,
    /// \[c_out\], when the layer has one.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: EngineBackend> Conv3x3<B> {
    pub(crate) fn build<S: ParamSource<B>>(
        source: &mut S,
        name: &str,
        channels_in: usize,
        channels_out: usize,
        with_bias: bool,
    ) -> Result<Self> {
        let bound = pytorch_default_bound(channels_in * 9);
        let weight = source.take(
            &format!("{name}.weight"),
            [channels_out, channels_in, 3, 3],
            Init::Uniform { bound },
        )?;
        let bias = if with_bias {
            Some(source.take(&format!("{name}.bias"), [channels_out], Init::Uniform { bound })?)
        } else {
            None
        };
        Ok(Self { weight: Param::from_tensor(weight), bias: bias.map(Param::from_tensor) })
    }

    /// The convolution.
    ///
    /// # Shapes
    /// - `x`: \[N, c_in, H, W\] -> \[N, c_out, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = kernels::conv3x3(x, self.weight.val());
        match &self.bias {
            Some(bias) => add_channel_bias(y, bias.val()),
            None => y,
        }
    }
}

/// 1x1 convolution with bias (PyTorch `Conv2d(c_in, c_out, 1)`), computed as a matmul.
#[derive(Module, Debug)]
pub struct Conv1x1<B: Backend> {
    /// \[c_out, c_in, 1, 1\].
    pub weight: Param<Tensor<B, 4>>,
    /// \[c_out\].
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: EngineBackend> Conv1x1<B> {
    pub(crate) fn build<S: ParamSource<B>>(
        source: &mut S,
        name: &str,
        channels_in: usize,
        channels_out: usize,
        weight_init: Option<Init>,
        bias_init: Option<Init>,
    ) -> Result<Self> {
        let bound = pytorch_default_bound(channels_in);
        let weight = source.take(
            &format!("{name}.weight"),
            [channels_out, channels_in, 1, 1],
            weight_init.unwrap_or(Init::Uniform { bound }),
        )?;
        let bias = source.take(
            &format!("{name}.bias"),
            [channels_out],
            bias_init.unwrap_or(Init::Uniform { bound }),
        )?;
        Ok(Self { weight: Param::from_tensor(weight), bias: Param::from_tensor(bias) })
    }

    /// The convolution.
    ///
    /// # Shapes
    /// - `x`: \[N, c_in, H, W\] -> \[N, c_out, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::pointwise(x, self.weight.val(), self.bias.val(), Activation::Identity)
    }

    /// The convolution followed by ELU, as one operation.
    ///
    /// # Shapes
    /// - `x`: \[N, c_in, H, W\] -> \[N, c_out, H, W\]
    pub fn forward_elu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::pointwise(x, self.weight.val(), self.bias.val(), Activation::Elu)
    }
}

/// 1x1 convolution with an optional bias (PyTorch `Conv2d(c_in, c_out, 1, bias=...)`), for the
/// laws whose layers may have none.
#[derive(Module, Debug)]
pub struct Pointwise<B: Backend> {
    /// \[c_out, c_in, 1, 1\].
    pub weight: Param<Tensor<B, 4>>,
    /// \[c_out\], when the layer has one.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: EngineBackend> Pointwise<B> {
    pub(crate) fn build<S: ParamSource<B>>(
        source: &mut S,
        name: &str,
        channels_in: usize,
        channels_out: usize,
        with_bias: bool,
        weight_init: Option<Init>,
    ) -> Result<Self> {
        let bound = pytorch_default_bound(channels_in);
        let weight = source.take(
            &format!("{name}.weight"),
            [channels_out, channels_in, 1, 1],
            weight_init.unwrap_or(Init::Uniform { bound }),
        )?;
        let bias = if with_bias {
            Some(source.take(&format!("{name}.bias"), [channels_out], Init::Uniform { bound })?)
        } else {
            None
        };
        Ok(Self { weight: Param::from_tensor(weight), bias: bias.map(Param::from_tensor) })
    }
}

/// The sum of each cell's 8 neighbours, per channel, zero outside the grid: what the lab's
/// fixed `conv_neighbors` (ones with a zero centre) computes for each of its 8 copies.
///
/// # Shapes
/// - `x`: \[N, C, H, W\] -> \[N, C, H, W\]
pub fn neighbour_sums<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, height, width] = x.dims();
    let padded = x.clone().pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let shifted = |t: Tensor<B, 4>, dim: usize, size: usize| {
        t.clone().narrow(dim, 0, size) + t.clone().narrow(dim, 1, size) + t.narrow(dim, 2, size)
    };
    let boxed = shifted(shifted(padded, 2, height), 3, width);
    boxed - x
}

/// Transposed convolution, kernel 2, stride 2, with bias (PyTorch `ConvTranspose2d(c_in,
/// c_out, 2, stride=2)`, weight [c_in, c_out, 2, 2]).
#[derive(Module, Debug)]
pub struct UpConv2x2<B: Backend> {
    /// \[c_in, c_out, 2, 2\] (PyTorch's layout).
    pub weight: Param<Tensor<B, 4>>,
    /// \[c_out\].
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: EngineBackend> UpConv2x2<B> {
    pub(crate) fn build<S: ParamSource<B>>(
        source: &mut S,
        name: &str,
        channels_in: usize,
        channels_out: usize,
    ) -> Result<Self> {
        // PyTorch computes a transposed convolution's fan-in from weight.size(1) * k * k.
        let bound = pytorch_default_bound(channels_out * 4);
        let weight = source.take(
            &format!("{name}.weight"),
            [channels_in, channels_out, 2, 2],
            Init::Uniform { bound },
        )?;
        let bias = source.take(&format!("{name}.bias"), [channels_out], Init::Uniform { bound })?;
        Ok(Self { weight: Param::from_tensor(weight), bias: Param::from_tensor(bias) })
    }

    /// The transposed convolution: every input cell becomes a 2x2 block.
    ///
    /// # Shapes
    /// - `x`: \[N, c_in, H, W\] -> \[N, c_out, 2H, 2W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::conv_transpose2x2(x, self.weight.val(), self.bias.val())
    }
}

/// GroupNorm with affine weight and bias, eps 1e-5 (PyTorch `nn.GroupNorm`).
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// The per-channel scale, \[C\].
    pub weight: Param<Tensor<B, 1>>,
    /// The per-channel shift, \[C\].
    pub bias: Param<Tensor<B, 1>>,
    /// Channel groups normalised together (the lab's rule, [`group_count`]).
    pub groups: usize,
}

impl<B: EngineBackend> GroupNorm<B> {
    pub(crate) fn build<S: ParamSource<B>>(source: &mut S, name: &str, channels: usize) -> Result<Self> {
        let weight = source.take(&format!("{name}.weight"), [channels], Init::Ones)?;
        let bias = source.take(&format!("{name}.bias"), [channels], Init::Zeros)?;
        Ok(Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            groups: group_count(channels),
        })
    }

    /// The normalisation.
    ///
    /// # Shapes
    /// - `x`: \[N, C, H, W\] -> \[N, C, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        group_norm(x, self.weight.val(), self.bias.val(), self.groups)
    }

    /// `elu(forward(x))`, through the backend's (possibly fused) kernel.
    pub fn forward_elu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::group_norm_elu(x, self.weight.val(), self.bias.val(), self.groups)
    }
}

/// The lab's group rule: c/8 groups when c > 8, else 1; 1 when that does not divide c.
pub fn group_count(channels: usize) -> usize {
    let groups = if channels > 8 { channels / 8 } else { 1 };
    if groups > 0 && channels.is_multiple_of(groups) {
        groups
    } else {
        1
    }
}

/// RMSNorm over the spatial plane: `x / sqrt(mean_{H,W}(x^2) + 1e-6) * weight`, no bias.
#[derive(Module, Debug)]
pub struct RmsNorm2d<B: Backend> {
    /// The per-channel scale, \[C\].
    pub weight: Param<Tensor<B, 1>>,
}

impl<B: EngineBackend> RmsNorm2d<B> {
    pub(crate) fn build<S: ParamSource<B>>(source: &mut S, name: &str, channels: usize) -> Result<Self> {
        let weight = source.take(&format!("{name}.weight"), [channels], Init::Ones)?;
        Ok(Self { weight: Param::from_tensor(weight) })
    }

    /// The normalisation.
    ///
    /// # Shapes
    /// - `x`: \[N, C, H, W\] -> \[N, C, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        const EPS: f64 = 1e-6;
        let [batch, channels, height, width] = x.dims();
        let flat = x.reshape([batch, channels, height * width]);
        let rms = (flat.clone().square().mean_dim(2) + EPS).sqrt();
        let normalized = (flat / rms).reshape([batch, channels, height, width]);
        normalized * self.weight.val().reshape([1, channels, 1, 1])
    }
}

/// The normalisation inside a convolution block.
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    /// GroupNorm with affine weight and bias.
    Group(GroupNorm<B>),
    /// RMSNorm over the plane, scale only.
    Rms(RmsNorm2d<B>),
}

impl<B: EngineBackend> Norm<B> {
    /// The normalisation.
    ///
    /// # Shapes
    /// - `x`: \[N, C, H, W\] -> \[N, C, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Norm::Group(norm) => norm.forward(x),
            Norm::Rms(norm) => norm.forward(x),
        }
    }

    /// `elu(forward(x))`.
    pub fn forward_elu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Norm::Group(norm) => norm.forward_elu(x),
            Norm::Rms(norm) => elu(norm.forward(x)),
        }
    }
}

/// Which normalisation a U-Net uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// GroupNorm (`unet`, `unet-unitary`, `unet-convlstm`).
    Group,
    /// RMSNorm (the RMSNorm U-Nets).
    Rms,
}

/// Conv3x3 -> Norm -> ELU -> Conv3x3 -> Norm -> ELU, no conv bias. PyTorch's
/// `conv_block.{0,1,3,4}` are `conv1`, `norm1`, `conv2`, `norm2` here.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    /// `conv_block.0`.
    pub conv1: Conv3x3<B>,
    /// `conv_block.1`.
    pub norm1: Norm<B>,
    /// `conv_block.3`.
    pub conv2: Conv3x3<B>,
    /// `conv_block.4`.
    pub norm2: Norm<B>,
}

impl<B: EngineBackend> ConvBlock<B> {
    pub(crate) fn build<S: ParamSource<B>>(
        source: &mut S,
        name: &str,
        channels_in: usize,
        channels_out: usize,
        norm: NormKind,
    ) -> Result<Self> {
        let prefix = format!("{name}.conv_block");
        let build_norm = |source: &mut S, index: usize| -> Result<Norm<B>> {
            let name = format!("{prefix}.{index}");
            Ok(match norm {
                NormKind::Group => Norm::Group(GroupNorm::build(source, &name, channels_out)?),
                NormKind::Rms => Norm::Rms(RmsNorm2d::build(source, &name, channels_out)?),
            })
        };
        let conv1 = Conv3x3::build(source, &format!("{prefix}.0"), channels_in, channels_out, false)?;
        let norm1 = build_norm(source, 1)?;
        let conv2 = Conv3x3::build(source, &format!("{prefix}.3"), channels_out, channels_out, false)?;
        let norm2 = build_norm(source, 4)?;
        Ok(Self { conv1, norm1, conv2, norm2 })
    }

    /// The block.
    ///
    /// # Shapes
    /// - `x`: \[N, c_in, H, W\] -> \[N, c_out, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.norm1.forward_elu(self.conv1.forward(x));
        self.norm2.forward_elu(self.conv2.forward(x))
    }
}

/// Adds a per-channel bias [C] to [N, C, H, W].
fn add_channel_bias<B: Backend>(x: Tensor<B, 4>, bias: Tensor<B, 1>) -> Tensor<B, 4> {
    let channels = bias.dims()[0];
    x + bias.reshape([1, channels, 1, 1])
}

/// PyTorch's default initialisation bound for weights and biases: 1/sqrt(fan_in).
fn pytorch_default_bound(fan_in: usize) -> f64 {
    1.0 / (fan_in.max(1) as f64).sqrt()
}
