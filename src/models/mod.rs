//! The learned operators ("law M") and their configuration.
//!
//! Every architecture of the original lab is here with PyTorch's parameter names, so that its
//! state_dicts load by name: the U-Net (GroupNorm or RMSNorm blocks, optionally with a ConvLSTM
//! memory at the bottleneck), the per-cell MLP, and the laws that read each cell's neighbours
//! (today's `DeepQCA` and the first engine's `QCA_Operator_Deep`).

mod architecture;
mod config;
mod deep_qca;
pub mod detect;
pub mod layers;
mod mlp;
pub mod params;
mod unet;

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

pub use architecture::Architecture;
pub use config::{check_gamma, check_grid, ModelConfig, RunDefaults, DEFAULT_GAMMA};
pub use deep_qca::DeepQca;
pub use mlp::Mlp;
pub use unet::UNet;

use crate::error::{Error, Result};
use crate::io::weights::WeightFile;
use crate::kernels::EngineBackend;
use params::{NamedWeights, ParamSource, SeededInit};

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
    /// The laws that read the neighbours (`deep-qca`, `qca-operator-deep`).
    DeepQca(DeepQca<B>),
}

impl<B: EngineBackend> Law<B> {
    /// Builds the network of `config`, drawing parameters from `source`.
    pub(crate) fn build<S: ParamSource<B>>(config: &ModelConfig, source: &mut S) -> Result<Self> {
        config.validate()?;
        let (d, h) = (config.d_state, config.hidden_channels);
        Ok(match config.arch {
            Architecture::Mlp => Law::Mlp(Mlp::build(source, d, h)?),
            arch if arch.reads_neighbours() => Law::DeepQca(DeepQca::build(source, arch, d, h)?),
            arch => Law::UNet(UNet::build(source, arch, d, h)?),
        })
    }

    /// `M(x)`: x [B, 2d, H, W] (real parts, then imaginary parts) to the same shape.
    /// The memory is used and returned by the ConvLSTM U-Net; other laws pass `None` through.
    pub fn forward(&self, x: Tensor<B, 4>, memory: Option<Memory<B>>) -> (Tensor<B, 4>, Option<Memory<B>>) {
        match self {
            Law::UNet(net) => net.forward(x, memory),
            Law::Mlp(net) => (net.forward(x), None),
            Law::DeepQca(net) => (net.forward(x), None),
        }
    }

    /// A learned term the step adds to every cell's update, \[2d\] (real parts, then
    /// imaginary parts), for the laws that have one.
    pub fn update_bias(&self) -> Option<Tensor<B, 1>> {
        match self {
            Law::DeepQca(net) => net.update_bias(),
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
        arch if !arch.is_unet() => {
            // As the lab defines the layers: the neighbour convolution's 16d outputs of 9 taps,
            // 16d inputs to the first 1x1 layer, the first engine's 8d outputs.
            let (neighbours, inputs, outputs) = match arch {
                Architecture::Mlp => (0.0, 2.0 * d, 2.0 * d),
                Architecture::QcaOperatorDeep => (9.0 * 16.0 * d, 16.0 * d, 8.0 * d),
                _ => (9.0 * 16.0 * d, 16.0 * d, 2.0 * d),
            };
            let hidden = (arch.hidden_layers() - 1) as f64 * h * h;
            2.0 * cells * (neighbours + inputs * h + hidden + h * outputs)
        }
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
