//! The laws that read each cell's 8 neighbours: the lab's `DeepQCA` and its first engine's
//! `QCA_Operator_Deep`.
//!
//! Both start with a fixed grouped convolution `conv_neighbors` ([16d, 1, 3, 3], groups 2d,
//! ones with a zero centre, padding 1): each of the 2d input channels becomes 8 identical
//! copies of the sum of that channel over the cell's 8 neighbours. A stack of 1x1 convolutions
//! (`processing_net.{0,2,4,...}`, ELU between) follows:
//!
//! | law | layers | bias | output |
//! |---|---|---|---|
//! | `deep-qca` | 16d -> h -> h -> 2d | yes | 2d channels read as the update |
//! | `qca-operator-deep` | 16d -> h -> h -> h -> h -> 8d | no | real = the first 4d channels, imag = the last 4d, each as [4, d] averaged over the 4, times 0.1 |
//!
//! and `qca-operator-deep` has a learned `M_bias_real`, `M_bias_imag` [d] that its step adds to
//! every cell (see [`crate::dynamics::step`]).
//!
//! The 8 copies are never materialised: `processing_net.0` reads 8 equal inputs per channel, so
//! its weight is summed over them, and the first engine's averaging is folded into its last
//! weight. Both are the same linear maps, computed in another order; gradients reach every
//! stored weight as they do in PyTorch.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::layers::{neighbour_sums, Pointwise};
use super::params::{Init, ParamSource};
use super::Architecture;
use crate::error::Result;
use crate::kernels::{self, Activation, EngineBackend};

/// Copies of each channel's neighbour sum that `conv_neighbors` makes.
const COPIES: usize = 8;

/// The first engine's output scale.
const FIRST_ENGINE_SCALE: f64 = 0.1;

/// Standard deviation of today's `DeepQCA` last layer at initialisation (the lab's).
const OUTPUT_INIT_STD: f64 = 1e-5;

/// A law that reads the neighbours (see the module docs).
#[derive(Module, Debug)]
pub struct DeepQca<B: Backend> {
    /// `conv_neighbors.weight`, \[16d, 1, 3, 3\]: the fixed pattern, kept so that the weights
    /// export as the lab's state_dict; never trained.
    pub conv_neighbors: Param<Tensor<B, 4>>,
    /// `processing_net.0`, `.2`, `.4`, ...
    pub layers: Vec<Pointwise<B>>,
    /// The first engine's learned bias.
    pub update_bias: Option<UpdateBias<B>>,
    /// Complex channels per cell.
    pub d_state: usize,
    /// Whether the output is the first engine's 8d averaged in fours.
    pub averaged_output: bool,
}

/// The first engine's bias, added to every cell's update.
#[derive(Module, Debug)]
pub struct UpdateBias<B: Backend> {
    /// `M_bias_real`, \[d\].
    pub real: Param<Tensor<B, 1>>,
    /// `M_bias_imag`, \[d\].
    pub imag: Param<Tensor<B, 1>>,
}

/// The values of `conv_neighbors.weight` for `d_state`: ones, with a zero centre.
fn neighbour_pattern(d_state: usize) -> Vec<f32> {
    let mut pattern = vec![1.0; 2 * d_state * COPIES * 9];
    for centre in pattern.iter_mut().skip(4).step_by(9) {
        *centre = 0.0;
    }
    pattern
}

impl<B: EngineBackend> DeepQca<B> {
    pub(crate) fn build<S: ParamSource<B>>(
        source: &mut S,
        arch: Architecture,
        d: usize,
        h: usize,
    ) -> Result<Self> {
        let conv_neighbors =
            source.take_fixed("conv_neighbors.weight", [2 * d * COPIES, 1, 3, 3], &neighbour_pattern(d))?;
        let first_engine = arch == Architecture::QcaOperatorDeep;
        let output = if first_engine { 8 * d } else { 2 * d };
        let widths: Vec<usize> = std::iter::once(2 * d * COPIES)
            .chain(std::iter::repeat_n(h, arch.hidden_layers()))
            .chain(std::iter::once(output))
            .collect();
        let last = widths.len() - 2;
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(index, pair)| {
                // The lab starts today's DeepQCA near zero: its last weight at N(0, 1e-5).
                let init = (index == last && !first_engine).then_some(Init::Normal { std: OUTPUT_INIT_STD });
                let name = format!("processing_net.{}", 2 * index);
                Pointwise::build(source, &name, pair[0], pair[1], !first_engine, init)
            })
            .collect::<Result<Vec<_>>>()?;
        let update_bias = if first_engine {
            let real = source.take("M_bias_real", [d], Init::Zeros)?;
            let imag = source.take("M_bias_imag", [d], Init::Zeros)?;
            Some(UpdateBias { real: Param::from_tensor(real), imag: Param::from_tensor(imag) })
        } else {
            None
        };
        Ok(Self {
            conv_neighbors: Param::from_tensor(conv_neighbors).set_require_grad(false),
            layers,
            update_bias,
            d_state: d,
            averaged_output: first_engine,
        })
    }

    /// `M(x)`: the update of every cell from its neighbours.
    ///
    /// # Shapes
    /// - `x`: \[N, 2d, H, W\] -> \[N, 2d, H, W\]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = self.d_state;
        let last = self.layers.len() - 1;
        let mut y = neighbour_sums(x);
        for (index, layer) in self.layers.iter().enumerate() {
            let mut weight = layer.weight.val();
            let [channels_out, channels_in, ..] = weight.dims();
            if index == 0 {
                // 8 equal inputs per channel: one input with the 8 weights summed.
                let folded = weight.reshape([channels_out, channels_in / COPIES, COPIES]).sum_dim(2);
                weight = folded.reshape([channels_out, channels_in / COPIES, 1, 1]);
            }
            if index == last && self.averaged_output {
                // [8d] as (real, imag) x 4 x d, averaged over the 4 and scaled.
                let averaged = weight.reshape([2, 4, d, channels_in]).mean_dim(1) * FIRST_ENGINE_SCALE;
                weight = averaged.reshape([2 * d, channels_in, 1, 1]);
            }
            // A layer without a bias adds zeros (exact), so that every layer is the one hook.
            let bias = match &layer.bias {
                Some(bias) => bias.val(),
                None => Tensor::zeros([weight.dims()[0]], &weight.device()),
            };
            // ELU sits between the layers: after every one but the last.
            let activation = if index == last { Activation::Identity } else { Activation::Elu };
            y = kernels::pointwise(y, weight, bias, activation);
        }
        y
    }

    /// The first engine's `[M_bias_real; M_bias_imag]`, \[2d\].
    pub fn update_bias(&self) -> Option<Tensor<B, 1>> {
        self.update_bias.as_ref().map(|bias| Tensor::cat(vec![bias.real.val(), bias.imag.val()], 0))
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Tensor;

    use super::*;

    #[test]
    fn the_pattern_is_ones_with_a_zero_centre() {
        let pattern = neighbour_pattern(2);
        assert_eq!(pattern.len(), 4 * 8 * 9);
        for kernel in pattern.chunks(9) {
            assert_eq!(kernel, [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        }
    }

    #[test]
    fn neighbour_sums_leave_out_the_centre_and_pad_with_zeros() {
        // A 3x3 grid of 1..9: the centre's neighbours sum to 40, the corner (1)'s to 2+4+5.
        let x = Tensor::<NdArray, 4>::from_floats(
            [[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]],
            &Default::default(),
        );
        let sums = crate::readback::floats(neighbour_sums(x)).unwrap();
        assert_eq!(sums, [11.0, 19.0, 13.0, 23.0, 40.0, 27.0, 17.0, 31.0, 19.0]);
    }
}
