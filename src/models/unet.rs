//! The lab's U-Net (and its RMSNorm and ConvLSTM variants).
//!
//! ```text
//! x1 = inc(x)                      h   @ H
//! x2 = down1(maxpool(x1))          2h  @ H/2
//! x3 = down2(maxpool(x2))          4h  @ H/4
//! m  = ConvLSTM(x3, memory)        4h  @ H/4   (ConvLSTM variant only; else m = x3)
//! x4 = bot(m)                      8h  @ H/4
//! u1 = conv_up1(cat[up1(x4), x2])  4h  @ H/2
//! u2 = conv_up2(cat[up2(u1), x1])  h   @ H
//! out = outc(u2)                   2d  @ H
//! ```

use burn::module::Module;
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::layers::{Conv1x1, Conv3x3, ConvBlock, NormKind, UpConv2x2};
use super::params::{Init, ParamSource};
use super::{Architecture, Memory};
use crate::error::Result;
use crate::kernels::{max_pool2x2, EngineBackend};

/// Standard deviation of `outc`'s initial weights: the untrained law starts near zero.
const OUTC_INIT_STD: f64 = 1e-5;

/// The lab's U-Net law (see the module docs for its graph).
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    /// The input block: 2d -> h at full resolution.
    pub inc: ConvBlock<B>,
    /// `down1.1`: h -> 2h at half resolution.
    pub down1: ConvBlock<B>,
    /// `down2.1`: 2h -> 4h at quarter resolution.
    pub down2: ConvBlock<B>,
    /// The ConvLSTM's gates, 8h -> 16h (the ConvLSTM variant only).
    pub conv_gates: Option<Conv3x3<B>>,
    /// The bottleneck: 4h -> 8h.
    pub bot: ConvBlock<B>,
    /// Upsampling 8h -> 4h.
    pub up1: UpConv2x2<B>,
    /// 6h (upsampled and skip) -> 4h at half resolution.
    pub conv_up1: ConvBlock<B>,
    /// Upsampling 4h -> 2h.
    pub up2: UpConv2x2<B>,
    /// 3h (upsampled and skip) -> h at full resolution.
    pub conv_up2: ConvBlock<B>,
    /// The output: h -> 2d, per cell.
    pub outc: Conv1x1<B>,
}

impl<B: EngineBackend> UNet<B> {
    pub(crate) fn build<S: ParamSource<B>>(
        source: &mut S,
        arch: Architecture,
        d_state: usize,
        h: usize,
    ) -> Result<Self> {
        let norm = if arch.uses_rmsnorm() { NormKind::Rms } else { NormKind::Group };
        let inc = ConvBlock::build(source, "inc", 2 * d_state, h, norm)?;
        // PyTorch's `down = Sequential(MaxPool2d(2), ConvBlock)`: the block is item 1.
        let down1 = ConvBlock::build(source, "down1.1", h, 2 * h, norm)?;
        let down2 = ConvBlock::build(source, "down2.1", 2 * h, 4 * h, norm)?;
        let conv_gates = if arch.has_memory() {
            Some(Conv3x3::build(source, "conv_gates", 8 * h, 16 * h, true)?)
        } else {
            None
        };
        let bot = ConvBlock::build(source, "bot", 4 * h, 8 * h, norm)?;
        let up1 = UpConv2x2::build(source, "up1", 8 * h, 4 * h)?;
        let conv_up1 = ConvBlock::build(source, "conv_up1", 6 * h, 4 * h, norm)?;
        let up2 = UpConv2x2::build(source, "up2", 4 * h, 2 * h)?;
        let conv_up2 = ConvBlock::build(source, "conv_up2", 3 * h, h, norm)?;
        let outc = Conv1x1::build(
            source,
            "outc",
            h,
            2 * d_state,
            Some(Init::Normal { std: OUTC_INIT_STD }),
            Some(Init::Zeros),
        )?;
        Ok(Self { inc, down1, down2, conv_gates, bot, up1, conv_up1, up2, conv_up2, outc })
    }

    /// `M(x)`, and the ConvLSTM's memory after it (other variants pass `None` through).
    ///
    /// # Shapes
    /// - `x`: \[N, 2d, H, W\] -> \[N, 2d, H, W\]; memory \[N, 4h, H/4, W/4\] each
    pub fn forward(&self, x: Tensor<B, 4>, memory: Option<Memory<B>>) -> (Tensor<B, 4>, Option<Memory<B>>) {
        let x1 = self.inc.forward(x);
        let x2 = self.down1.forward(max_pool2x2(x1.clone()));
        let x3 = self.down2.forward(max_pool2x2(x2.clone()));
        let (bottom, memory) = match &self.conv_gates {
            Some(gates) => {
                let memory =
                    memory.unwrap_or_else(|| Memory { hidden: x3.zeros_like(), cell: x3.zeros_like() });
                let next = lstm_cell(gates, x3, memory);
                (next.hidden.clone(), Some(next))
            }
            None => (x3, None),
        };
        let x4 = self.bot.forward(bottom);
        let u1 = self.conv_up1.forward(Tensor::cat(vec![self.up1.forward(x4), x2], 1));
        let u2 = self.conv_up2.forward(Tensor::cat(vec![self.up2.forward(u1), x1], 1));
        (self.outc.forward(u2), memory)
    }
}

/// One ConvLSTM step: gates f, i, o, g from a 3x3 convolution of cat[x, h];
/// `c' = s(f) c + s(i) tanh(g)`, `h' = s(o) tanh(c')`.
fn lstm_cell<B: EngineBackend>(gates: &Conv3x3<B>, x: Tensor<B, 4>, memory: Memory<B>) -> Memory<B> {
    let all = gates.forward(Tensor::cat(vec![x, memory.hidden], 1));
    let [forget, input, output, candidate]: [Tensor<B, 4>; 4] =
        all.chunk(4, 1).try_into().expect("conv_gates has 4 * hidden output channels");
    let cell = sigmoid(forget) * memory.cell + sigmoid(input) * tanh(candidate);
    let hidden = sigmoid(output) * tanh(cell.clone());
    Memory { hidden, cell }
}
