//! The registry of architectures: what each law is, how its output becomes the next state,
//! and which class of the lab it is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::complex::Renormalization;
use crate::dynamics::UpdateRule;
use crate::error::{Error, Result};

/// The registry of architectures (names as in config.json and on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// U-Net with GroupNorm blocks; `delta = M(psi)` (the lab's `UNet`).
    Unet,
    /// The same network with the unitary update `delta = M(psi) * psi` (`UNetUnitary`).
    UnetUnitary,
    /// U-Net whose blocks normalise with RMSNorm; `delta = M(psi)`. The lab's
    /// `UNetUnitaryRMSNorm` as the lab runs it: its engine applies the unitary product only to
    /// a class named exactly `UNetUnitary`.
    UnetRmsnorm,
    /// The RMSNorm U-Net with the unitary product, which its class name promises but the
    /// lab's engine never applied: an explicit choice.
    UnetUnitaryRmsnorm,
    /// U-Net with a ConvLSTM memory at the bottleneck, carried across steps (`UNetConvLSTM`).
    UnetConvlstm,
    /// Three 1x1 convolutions with ELU: a per-cell law with no spatial coupling (`MLP`).
    Mlp,
    /// The lab's `DeepQCA`: a fixed sum over the 8 neighbours, then 1x1 convolutions with bias
    /// 16d -> h -> h -> 2d with ELU; `delta = M(psi)`.
    DeepQca,
    /// The lab's first engine, `QCA_Operator_Deep`: the same neighbour sum, five 1x1
    /// convolutions without bias (16d -> h -> h -> h -> h -> 8d, ELU between) whose 8d outputs
    /// are averaged in fours and scaled by 0.1, plus a learned bias added to every cell; no
    /// decay, and the epsilon under the renormalisation's root.
    QcaOperatorDeep,
}

/// The lab's class names, and the architecture each one runs as.
const LAB_CLASSES: [(&str, Architecture); 7] = [
    ("UNet", Architecture::Unet),
    ("UNetUnitary", Architecture::UnetUnitary),
    ("UNetUnitaryRMSNorm", Architecture::UnetRmsnorm),
    ("UNetConvLSTM", Architecture::UnetConvlstm),
    ("MLP", Architecture::Mlp),
    ("DeepQCA", Architecture::DeepQca),
    ("QCA_Operator_Deep", Architecture::QcaOperatorDeep),
];

/// The lab's `MODEL_ARCHITECTURE` names (its `MODEL_MAP`), and what each runs as. `DEEP_QCA`
/// named the first engine's law before today's `DeepQCA` took the name, so its tensors decide.
const LAB_MODEL_MAP: [(&str, &[Architecture]); 6] = [
    ("UNET", &[Architecture::Unet]),
    ("UNET_UNITARY", &[Architecture::UnetUnitary]),
    ("UNET_UNITARY_RMSNORM", &[Architecture::UnetRmsnorm]),
    ("UNET_CONVLSTM", &[Architecture::UnetConvlstm]),
    ("MLP", &[Architecture::Mlp]),
    ("DEEP_QCA", &[Architecture::DeepQca, Architecture::QcaOperatorDeep]),
];

impl Architecture {
    /// Every architecture, in the registry's order.
    pub fn all() -> impl Iterator<Item = Architecture> {
        <Self as clap::ValueEnum>::value_variants().iter().copied()
    }

    /// The name in config.json and on the command line (`unet-unitary`).
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }

    /// The architecture a lab class runs as (`UNetUnitaryRMSNorm` -> `unet-rmsnorm`); `None`
    /// for a class atheria does not implement.
    pub fn from_lab_class(class: &str) -> Option<Architecture> {
        LAB_CLASSES.iter().find(|(name, _)| *name == class).map(|(_, arch)| *arch)
    }

    /// The architectures a lab `MODEL_ARCHITECTURE` name can be (one, or for `DEEP_QCA` the two
    /// laws that carried it); `None` for a name atheria does not implement.
    pub fn from_lab_model_map(name: &str) -> Option<&'static [Architecture]> {
        LAB_MODEL_MAP.iter().find(|(key, _)| *key == name).map(|(_, archs)| *archs)
    }

    /// Whether the update multiplies the network output by psi.
    pub fn is_unitary(self) -> bool {
        matches!(self, Architecture::UnetUnitary | Architecture::UnetUnitaryRmsnorm)
    }

    /// How the law's output becomes the next state (see [`crate::dynamics::step`]).
    pub fn update_rule(self) -> UpdateRule {
        let renormalization = match self {
            Architecture::QcaOperatorDeep => Renormalization::EpsilonUnderRoot,
            _ => Renormalization::EpsilonAddedToNorm,
        };
        UpdateRule { unitary: self.is_unitary(), renormalization }
    }

    /// The decay rate of the engine the law was made for: the lab's 0.01, or 0 for the first
    /// engine (it had no decay).
    pub fn default_gamma(self) -> f64 {
        match self {
            Architecture::QcaOperatorDeep => 0.0,
            _ => super::DEFAULT_GAMMA,
        }
    }

    /// Whether the network is a U-Net: it pools twice, so grids must be multiples of 4.
    pub fn is_unet(self) -> bool {
        matches!(
            self,
            Architecture::Unet
                | Architecture::UnetUnitary
                | Architecture::UnetRmsnorm
                | Architecture::UnetUnitaryRmsnorm
                | Architecture::UnetConvlstm
        )
    }

    /// Whether the U-Net's blocks normalise with RMSNorm.
    pub fn uses_rmsnorm(self) -> bool {
        matches!(self, Architecture::UnetRmsnorm | Architecture::UnetUnitaryRmsnorm)
    }

    /// Whether the law starts with the fixed sum over each cell's 8 neighbours.
    pub fn reads_neighbours(self) -> bool {
        matches!(self, Architecture::DeepQca | Architecture::QcaOperatorDeep)
    }

    /// Hidden layers of a law made of 1x1 convolutions (0 for the U-Nets).
    pub fn hidden_layers(self) -> usize {
        match self {
            Architecture::Mlp | Architecture::DeepQca => 2,
            Architecture::QcaOperatorDeep => 4,
            _ => 0,
        }
    }

    /// Whether the model carries a recurrent memory between steps.
    pub fn has_memory(self) -> bool {
        matches!(self, Architecture::UnetConvlstm)
    }

    /// How far, in cells, one step can carry information: an output cell depends on input
    /// cells at most this far away (Chebyshev distance), counting the convolutions only (the
    /// U-Net's norm layers couple the whole grid through their statistics). 0 for the MLP, 1
    /// for the laws that read the neighbours.
    ///
    /// Walks the U-Net's graph backwards along one axis: the input cells that one output
    /// cell reads, through every 3x3 convolution (one cell more each side at its resolution),
    /// transposed convolution (the coarse cell under a fine one), pooling (two fine cells per
    /// coarse one) and skip connection (the union of both branches), for the four alignments
    /// of the cell with the pooling grid. 31 cells for the U-Nets, 35 with the ConvLSTM.
    pub fn receptive_radius(self) -> usize {
        if !self.is_unet() {
            return usize::from(self.reads_neighbours());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_runs_only_unet_unitary_with_the_product() {
        let unitary: Vec<&str> =
            LAB_CLASSES.iter().filter(|(_, arch)| arch.is_unitary()).map(|(class, _)| *class).collect();
        assert_eq!(unitary, ["UNetUnitary"]);
        assert_eq!(Architecture::from_lab_class("UNetUnitaryRMSNorm"), Some(Architecture::UnetRmsnorm));
        assert_eq!(Architecture::from_lab_class("SNNUNet"), None);
    }

    #[test]
    fn the_first_engine_keeps_its_rule() {
        let rule = Architecture::QcaOperatorDeep.update_rule();
        assert_eq!(rule.renormalization, Renormalization::EpsilonUnderRoot);
        assert!(!rule.unitary);
        assert_eq!(Architecture::QcaOperatorDeep.default_gamma(), 0.0);
        assert_eq!(Architecture::DeepQca.update_rule(), Architecture::Unet.update_rule());
    }

    #[test]
    fn receptive_radii() {
        assert_eq!(Architecture::Mlp.receptive_radius(), 0);
        assert_eq!(Architecture::DeepQca.receptive_radius(), 1);
        assert_eq!(Architecture::UnetRmsnorm.receptive_radius(), 31);
        assert_eq!(Architecture::UnetConvlstm.receptive_radius(), 35);
    }
}
