//! Losses over a rollout: functions of the initial state psi_0 and the final state, each
//! returning the differentiable total and its named parts.
//!
//! States are the engine's [B, 2d, H, W]; every term is computed per universe and averaged over
//! the batch. `|psi_c|` is the magnitude of one complex channel, taken as
//! `sqrt(re^2 + im^2 + 1e-12)` so that its gradient stays finite at zero.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// `survival * w_s + symmetry * w_y + complexity * w_c` (the lab's default).
    Evolutionary,
    /// `(E_final - E_0)^2`.
    MseEnergy,
    /// `mean |psi| + w_tv * total variation of |psi|`.
    Structure,
}

impl std::str::FromStr for LossKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        crate::names::parse(text, "loss").map_err(Error::InvalidTraining)
    }
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::names::name_of(self))
    }
}

/// Term weights (the lab's values by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// Weight of the survival term.
    pub survival: f64,
    /// Weight of the symmetry term.
    pub symmetry: f64,
    /// Weight of the complexity term.
    pub complexity: f64,
    /// Weight of the total variation in the `structure` loss.
    pub total_variation: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self { survival: 10.0, symmetry: 5.0, complexity: 1.0, total_variation: 0.1 }
    }
}

/// The total (differentiable) and the named terms of a loss.
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    /// The loss, \[1\].
    pub total: Tensor<B, 1>,
    /// Its named terms, \[1\] each.
    pub terms: Vec<(&'static str, Tensor<B, 1>)>,
}

impl<B: Backend> LossOutput<B> {
    /// Reads the total and the terms back as numbers (one device read for all).
    pub fn values(&self) -> crate::error::Result<(f64, Vec<(&'static str, f64)>)> {
        let mut all = vec![self.total.clone()];
        all.extend(self.terms.iter().map(|(_, tensor)| tensor.clone()));
        let values: Vec<f64> =
            crate::readback::values::<f64, B, 1, burn::tensor::Float>(Tensor::cat(all, 0))?;
        let total = values.first().copied().unwrap_or(f64::NAN);
        let terms =
            self.terms.iter().zip(values.iter().skip(1)).map(|((name, _), value)| (*name, *value)).collect();
        Ok((total, terms))
    }
}

/// Energy `E = sum |psi|^2` of each universe, \[B\].
pub fn energy<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 1> {
    let batch = psi.dims()[0];
    row_sums(psi.square().reshape([batch as i32, -1]))
}

/// The sum of each row of `x` \[B, N\], \[B\]. The CPU backend sums the row of a one-row
/// tensor one column at a time (ndarray takes the length-1 axis for the contiguous one), which
/// had cost a tenth of a training step; a single row takes the whole-tensor sum instead.
fn row_sums<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let [rows, _] = x.dims();
    if rows == 1 {
        x.sum()
    } else {
        x.sum_dim(1).reshape([rows])
    }
}

/// `|psi_c|` per channel, [B, d, H, W], with the epsilon that keeps its gradient finite.
pub fn magnitudes<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 4> {
    crate::complex::magnitudes(psi, MAGNITUDE_EPSILON)
}

/// Added to `|psi_c|^2` under the root of a magnitude, so that its gradient is finite at zero.
const MAGNITUDE_EPSILON: f64 = 1e-12;

/// `torch.rot90(x, 1, dims=[2, 3])`: flip the last axis, then swap the last two.
pub fn rot90<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.flip([3]).swap_dims(2, 3)
}

/// The lab's survival: `|E_final - 0.8 E_0| / (E_0 + 1e-6)`, batch mean.
pub fn survival<B: Backend>(psi0: Tensor<B, 4>, psi: Tensor<B, 4>) -> Tensor<B, 1> {
    let (e0, e) = (energy(psi0), energy(psi));
    ((e - e0.clone() * 0.8).abs() / (e0 + 1e-6)).mean()
}

/// `mean((|psi| - |rot90(psi)|)^2)` over channels and cells, batch mean. Needs a square grid.
pub fn symmetry<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 1> {
    let m = magnitudes(psi);
    (m.clone() - rot90(m)).square().mean()
}

/// `-log(std over cells of sum_c |psi_c| + 1e-6)` (unbiased std, as PyTorch), batch mean.
pub fn complexity<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 1> {
    let [batch, _, height, width] = psi.dims();
    let cells = height * width;
    let per_cell = magnitudes(psi).sum_dim(1).reshape([batch, cells]);
    // The unbiased variance over the cells, in two passes as burn's `var` (through `row_sums`).
    let mean = row_sums(per_cell.clone()) / cells as f64;
    let centered = per_cell - mean.reshape([batch, 1]);
    let std = (row_sums(centered.square()) / (cells as f64 - 1.0)).sqrt();
    (std + 1e-6).log().neg().mean()
}

/// Mean absolute difference of neighbouring magnitudes, vertically plus horizontally.
pub fn total_variation<B: Backend>(m: Tensor<B, 4>) -> Tensor<B, 1> {
    let [_, _, height, width] = m.dims();
    let vertical = (m.clone().narrow(2, 1, height - 1) - m.clone().narrow(2, 0, height - 1)).abs().mean();
    let horizontal = (m.clone().narrow(3, 1, width - 1) - m.narrow(3, 0, width - 1)).abs().mean();
    vertical + horizontal
}

/// Evaluates `kind` on a rollout from `psi0` to `psi`.
pub fn compute<B: Backend>(
    kind: LossKind,
    weights: &LossWeights,
    psi0: Tensor<B, 4>,
    psi: Tensor<B, 4>,
) -> Result<LossOutput<B>> {
    let [_, _, height, width] = psi.dims();
    Ok(match kind {
        LossKind::Evolutionary => {
            if height != width {
                return Err(Error::InvalidTraining(format!(
                    "the evolutionary loss compares psi with its 90-degree rotation and needs a square grid, got {height}x{width}"
                )));
            }
            let survival = survival(psi0, psi.clone());
            let symmetry = symmetry(psi.clone());
            let complexity = complexity(psi);
            let total = survival.clone() * weights.survival
                + symmetry.clone() * weights.symmetry
                + complexity.clone() * weights.complexity;
            LossOutput {
                total,
                terms: vec![("survival", survival), ("symmetry", symmetry), ("complexity", complexity)],
            }
        }
        LossKind::MseEnergy => {
            let difference = (energy(psi) - energy(psi0)).square().mean();
            LossOutput { total: difference.clone(), terms: vec![("energy_mse", difference)] }
        }
        LossKind::Structure => {
            if height < 2 || width < 2 {
                return Err(Error::InvalidTraining("the structure loss needs a grid of at least 2x2".into()));
            }
            let m = magnitudes(psi);
            let mean = m.clone().mean();
            let variation = total_variation(m);
            let total = mean.clone() + variation.clone() * weights.total_variation;
            LossOutput { total, terms: vec![("mean_magnitude", mean), ("total_variation", variation)] }
        }
    })
}

/// The lab's combined metric for choosing the best checkpoint: `10 survival + 5 symmetry`
/// (lower is better), from evaluated terms; `None` when the loss has no such terms.
pub fn combined_metric(terms: &[(&str, f64)]) -> Option<f64> {
    let find = |name| terms.iter().find(|(term, _)| *term == name).map(|(_, value)| *value);
    Some(10.0 * find("survival")? + 5.0 * find("symmetry")?)
}
