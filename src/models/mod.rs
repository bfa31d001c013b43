//! The learned operators ("law M") and their configuration.
//!
//! Every architecture of the original lab is here with PyTorch's parameter names, so that its
//! state_dicts load by name: the U-Net (GroupNorm or RMSNorm blocks, optionally with a ConvLSTM
//! memory at the bottleneck) and the per-cell MLP.

pub mod detect;
pub mod layers;
mod mlp;
pub mod params;
mod unet;

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub use mlp::Mlp;
pub use unet::UNet;

use crate::complex::Renormalization;
use crate::dynamics::UpdateRule;
use crate::error::{Error, Result};
use crate::io::weights::WeightFile;
use crate::kernels::EngineBackend;
use params::{NamedWeights, ParamSource, SeededInit};

/// The lab's default Lindblad decay rate.
pub const DEFAULT_GAMMA: f64 = 0.01;

/// The registry of architectures (names as in config.json and on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// U-Net with GroupNorm blocks; `delta = M(psi)`.
    Unet,
    /// The same network with the unitary update `delta = M(psi) * psi`.
    UnetUnitary,
    /// Unitary U-Net whose blocks normalise with RMSNorm instead of GroupNorm.
    UnetUnitaryRmsnorm,
    /// U-Net with a ConvLSTM memory at the bottleneck, carried across steps.
    UnetConvlstm,
    /// Three 1x1 convolutions with ELU: a per-cell law with no spatial coupling.
    Mlp,
}

impl Architecture {
    /// Every architecture, in the registry's order.
    pub fn all() -> impl Iterator<Item = Architecture> {
        <Self as clap::ValueEnum>::value_variants().iter().copied()
    }

    /// The name in config.json and on the command line (`unet-unitary`).
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }

    /// Whether the update multiplies the network output by psi.
    pub fn is_unitary(self) -> bool {
        matches!(self, Architecture::UnetUnitary | Architecture::UnetUnitaryRmsnorm)
    }

    /// How the law's output becomes the next state (see [`crate::dynamics::step`]).
    pub fn update_rule(self) -> UpdateRule {
        UpdateRule { unitary: self.is_unitary(), renormalization: Renormalization::EpsilonAddedToNorm }
    }

    /// Whether the network pools twice, so grids must be multiples of 4.
    pub fn is_unet(self) -> bool {
        !matches!(self, Architecture::Mlp)
    }

    /// Whether the model carries a recurrent memory between steps.
    pub fn has_memory(self) -> bool {
        matches!(self, Architecture::UnetConvlstm)
    }

    /// How far, in cells, one step can carry information: an output cell depends on input
    /// cells at most this far away (Chebyshev distance), counting the convolutions only (the
    /// U-Net's norm layers couple the whole grid through their statistics). 0 for the MLP.
    ///
    /// Walks the U-Net's graph backwards along one axis: the input cells that one output
    /// cell reads, through every 3x3 convolution (one cell more each side at its resolution),
    /// transposed convolution (the coarse cell under a fine one), pooling (two fine cells per
    /// coarse one) and skip connection (the union of both branches), for the four alignments
    /// of the cell with the pooling grid. 31 cells for the U-Nets, 35 with the ConvLSTM.
    pub fn receptive_radius(self) -> usize {
        if !self.is_unet() {
            return 0;
        }
        type Span = (i64, i64);
        let conv = |(a, b): Span, count: i64| (a - count, b + count);
        let under = |(a, b): Span| (a.div_euclid(2), b.div_euclid(2));
        let pooled = |(a, b): Span| (2 * a, 2 * b + 1);
        let union = |(a, b): Span, (c, d): Span| (a.min(c), b.max(d));
        let gates = i64::from(self.has_memory());
        (0..4i64)
            .map(|cell| {
                let cat2 = conv((cell, cell), 2); // conv_up2 reads cat[up2(u1), x1]
                let cat1 = conv(under(cat2), 2); // conv_up1 reads cat[up1(x4), x2]
                let x3 = conv(under(cat1), 2 + gates); // bot (after the gates) reads x3
                let x2 = union(cat1, pooled(conv(x3, 2))); // down2 reads pooled x2
                let x1 = union(cat2, pooled(conv(x2, 2))); // down1 reads pooled x1
                let input = conv(x1, 2); // inc
                (cell - input.0).max(input.1 - cell) as usize
            })
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Architecture {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        crate::names::parse(text, "architecture").map_err(Error::InvalidModel)
    }
}

fn default_gamma() -> f64 {
    DEFAULT_GAMMA
}

/// A model directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Architecture,
    /// Complex channels per cell (the network sees twice as many real channels).
    pub d_state: usize,
    /// Width of the network (`h` in the U-Net's 2h/4h/8h progression).
    pub hidden_channels: usize,
    /// Default Lindblad decay rate for runs with this model.
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Whether the weights were trained (false for a seeded initialisation).
    #[serde(default)]
    pub trained: bool,
    /// Free text shown to users (what the model is, how it was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the weights came from: the training command and metrics, or the imported
    /// checkpoint's episode and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<serde_json::Value>,
}

impl ModelConfig {
    /// A configuration with the lab's default gamma, untrained, without provenance.
    pub fn new(arch: Architecture, d_state: usize, hidden_channels: usize) -> Self {
        Self {
            arch,
            d_state,
            hidden_channels,
            gamma: DEFAULT_GAMMA,
            trained: false,
            description: None,
            provenance: None,
        }
    }

    /// Checks the values a file or a flag could get wrong.
    pub fn validate(&self) -> Result<()> {
        if self.d_state == 0 || self.d_state > 4096 {
            return Err(Error::InvalidModel(format!(
                "d_state must be between 1 and 4096, got {}",
                self.d_state
            )));
        }
        if self.hidden_channels == 0 || self.hidden_channels > 4096 {
            return Err(Error::InvalidModel(format!(
                "hidden_channels must be between 1 and 4096, got {}",
                self.hidden_channels
            )));
        }
        check_gamma(self.gamma)
    }

    /// Checks that a grid fits the architecture (the U-Net pools twice).
    pub fn check_grid(&self, height: usize, width: usize) -> Result<()> {
        check_grid(self.arch, height, width)
    }
}

/// Checks a decay rate: finite and in [0, 1].
pub fn check_gamma(gamma: f64) -> Result<()> {
    if gamma.is_finite() && (0.0..=1.0).contains(&gamma) {
        Ok(())
    } else {
        Err(Error::InvalidModel(format!("gamma must be in [0, 1], got {gamma}")))
    }
}

/// Checks that a grid is non-empty and, for the U-Nets, a multiple of 4 on both sides.
pub fn check_grid(arch: Architecture, height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(Error::InvalidGrid { height, width, reason: "the grid is empty".into() });
    }
    if arch.is_unet() && (!height.is_multiple_of(4) || !width.is_multiple_of(4)) {
        return Err(Error::InvalidGrid {
            height,
            width,
            reason: format!("the {arch} pools twice, so height and width must be multiples of 4"),
        });
    }
    Ok(())
}

/// The recurrent memory of the ConvLSTM U-Net: hidden and cell states, [B, 4h, H/4, W/4].
#[derive(Debug, Clone)]
pub struct Memory<B: Backend> {
    /// The hidden state.
    pub hidden: Tensor<B, 4>,
    /// The cell state.
    pub cell: Tensor<B, 4>,
}

/// The network of a law M.
// One law per model, built once: the size of the U-Net variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Law<B: Backend> {
    /// The U-Nets.
    UNet(UNet<B>),
    /// The per-cell MLP.
    Mlp(Mlp<B>),
}

impl<B: EngineBackend> Law<B> {
    /// Builds the network of `config`, drawing parameters from `source`.
    pub(crate) fn build<S: ParamSource<B>>(config: &ModelConfig, source: &mut S) -> Result<Self> {
        config.validate()?;
        Ok(match config.arch {
            Architecture::Mlp => Law::Mlp(Mlp::build(source, config.d_state, config.hidden_channels)?),
            arch => Law::UNet(UNet::build(source, arch, config.d_state, config.hidden_channels)?),
        })
    }

    /// `M(x)`: x [B, 2d, H, W] (real parts, then imaginary parts) to the same shape.
    /// The memory is used and returned by the ConvLSTM U-Net; other laws pass `None` through.
    pub fn forward(&self, x: Tensor<B, 4>, memory: Option<Memory<B>>) -> (Tensor<B, 4>, Option<Memory<B>>) {
        match self {
            Law::UNet(net) => net.forward(x, memory),
            Law::Mlp(net) => (net.forward(x), None),
        }
    }

    /// A learned term the step adds to every cell's update, \[2d\] (real parts, then
    /// imaginary parts), for the laws that have one.
    pub fn update_bias(&self) -> Option<Tensor<B, 1>> {
        match self {
            Law::UNet(_) | Law::Mlp(_) => None,
        }
    }
}

/// A law M with its configuration: what `atheria run` loads and `atheria train` produces.
#[derive(Debug, Clone)]
pub struct Model<B: Backend> {
    /// The architecture, sizes, default gamma and provenance.
    pub config: ModelConfig,
    /// The network.
    pub law: Law<B>,
}

impl<B: EngineBackend> Model<B> {
    /// A freshly initialised model (PyTorch's default initialisation, `outc` at N(0, 1e-5)),
    /// reproducible from `seed` on every backend.
    pub fn seeded(config: ModelConfig, seed: u64, device: &B::Device) -> Result<Self> {
        let law = Law::build(&config, &mut SeededInit::<B>::new(seed, device))?;
        Ok(Self { config, law })
    }

    /// A model whose parameters come from PyTorch-named tensors. Every tensor the
    /// architecture needs must be present with its exact shape, and nothing else may be.
    pub fn from_weights(config: ModelConfig, weights: &WeightFile, device: &B::Device) -> Result<Self> {
        let mut source = NamedWeights::<B>::new(weights, config.arch.to_string(), device);
        let law = Law::build(&config, &mut source)?;
        source.finish()?;
        Ok(Self { config, law })
    }

    /// Parameters in the network.
    pub fn num_params(&self) -> usize {
        self.law.num_params()
    }

    /// The parameters' PyTorch names with their ids, in declaration order.
    pub fn parameter_names(&self) -> Result<Vec<(String, ParamId)>> {
        let layout = parameter_layout(&self.config)?;
        let found: Vec<(ParamId, Vec<usize>)> = params::collect_parameters(&self.law)?
            .into_iter()
            .map(|(id, tensor)| (id, tensor.shape))
            .collect();
        if layout.len() != found.len() || layout.iter().zip(&found).any(|((_, a), (_, b))| a != b) {
            return Err(Error::InvalidModel(format!(
                "the {} network does not have the layout of its configuration",
                self.config.arch
            )));
        }
        Ok(layout.into_iter().zip(found).map(|((name, _), (id, _))| (name, id)).collect())
    }

    /// The weights under the lab's state_dict names (what `from_weights` reads back).
    pub fn export_weights(&self, path: &std::path::Path) -> Result<WeightFile> {
        let names = parameter_layout(&self.config)?;
        let values = params::collect_parameters(&self.law)?;
        if names.len() != values.len() {
            return Err(Error::InvalidModel(format!(
                "the {} network does not have the layout of its configuration",
                self.config.arch
            )));
        }
        let tensors = names.into_iter().zip(values).map(|((name, _), (_, tensor))| (name, tensor)).collect();
        Ok(WeightFile { path: path.to_path_buf(), tensors, origin: Default::default() })
    }
}

/// The PyTorch names and shapes of an architecture's parameters, in declaration order.
pub fn parameter_layout(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
    type Host = burn::backend::NdArray;
    let device = Default::default();
    let mut recorder = params::NameRecorder::<Host>::new(&device);
    Law::<Host>::build(config, &mut recorder)?;
    Ok(recorder.names)
}

/// Floating-point operations of one forward pass of the law on a `height` x `width` grid per
/// universe: two per multiply-add of every convolution, counted as a direct convolution
/// (whatever algorithm a backend uses), elementwise work excluded. This is the convention of
/// the benchmarks' GFLOP/s.
pub fn forward_flops(config: &ModelConfig, height: usize, width: usize) -> f64 {
    let (d, h) = (config.d_state as f64, config.hidden_channels as f64);
    let cells = (height * width) as f64;
    let conv3 = |c_in: f64, c_out: f64, scale: f64| 2.0 * 9.0 * c_in * c_out * cells * scale;
    let block = |c_in: f64, c_out: f64, scale: f64| conv3(c_in, c_out, scale) + conv3(c_out, c_out, scale);
    match config.arch {
        Architecture::Mlp => 2.0 * cells * (2.0 * d * h + h * h + h * 2.0 * d),
        arch => {
            let (half, quarter) = (0.25, 1.0 / 16.0);
            let mut flops = block(2.0 * d, h, 1.0)
                + block(h, 2.0 * h, half)
                + block(2.0 * h, 4.0 * h, quarter)
                + block(4.0 * h, 8.0 * h, quarter)
                // Transposed 2x2 convolutions: every input cell feeds 4 outputs.
                + 2.0 * 8.0 * h * 4.0 * h * 4.0 * cells * quarter
                + block(6.0 * h, 4.0 * h, half)
                + 2.0 * 4.0 * h * 2.0 * h * 4.0 * cells * half
                + block(3.0 * h, h, 1.0)
                + 2.0 * h * 2.0 * d * cells;
            if arch.has_memory() {
                flops += conv3(8.0 * h, 16.0 * h, quarter);
            }
            flops
        }
    }
}
