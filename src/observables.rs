//! Maps and numbers computed from a state, for pictures and logs.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Density `sum_c |psi_c|^2` per cell, [B, H, W]. 1 everywhere for a normalised state; the
/// decay and the law move it only between renormalisations, so the interesting structure is
/// in the pre-normalisation update and the phases.
pub fn density<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    psi.square().sum_dim(1).squeeze_dim(1)
}

/// Energy of an update: `sum_c |delta_c|^2` per cell, [B, H, W].
pub fn update_energy<B: Backend>(delta: Tensor<B, 4>) -> Tensor<B, 3> {
    delta.square().sum_dim(1).squeeze_dim(1)
}
