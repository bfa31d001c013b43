//! GroupNorm + ELU in two passes (statistics, then normalise-affine-activate) instead of the
//! dozen full-tensor passes of the composed tensor operations, and its backward in two passes.

use rayon::prelude::*;

use super::written_whole;
use crate::kernels::reference::GROUP_NORM_EPS;
use crate::kernels::simd;

/// Mean and inverse standard deviation (biased variance, eps 1e-5) of every (image, group)
/// of contiguous [N, C, H, W].
pub(super) fn group_stats(x: &[f32], [n, c, h, w]: [usize; 4], groups: usize) -> Vec<(f64, f64)> {
    let hw = h * w;
    // Per-channel sums, combined per group in f64.
    let sums: Vec<(f64, f64)> = x.par_chunks(hw).map(simd::sum_and_squares).collect();
    let per_group = c / groups;
    let count = (per_group * hw) as f64;
    (0..n * groups)
        .map(|index| {
            let (ni, gi) = (index / groups, index % groups);
            let first = ni * c + gi * per_group;
            let (s, q) =
                sums[first..first + per_group].iter().fold((0.0, 0.0), |(a, b), (s, q)| (a + s, b + q));
            let mean = s / count;
            let variance = (q / count - mean * mean).max(0.0);
            (mean, 1.0 / (variance + GROUP_NORM_EPS).sqrt())
        })
        .collect()
}

/// Fused GroupNorm + ELU on contiguous [N, C, H, W]: one pass for the statistics, one to
/// normalise, scale, shift and activate.
pub fn fused_group_norm_elu(
    x: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    groups: usize,
) -> Vec<f32> {
    let [_, c, h, w] = dims;
    let (hw, per_group) = (h * w, c / groups);
    let stats = group_stats(x, dims, groups);
    // Not zeroed first (the memset was 1% of an inference step).
    // SAFETY: the planes cover `0..x.len()`, and `affine_elu` writes each of them whole.
    unsafe {
        written_whole(x.len(), |out| {
            let planes = out.par_chunks_mut(hw.max(1)).zip(x.par_chunks(hw.max(1)));
            planes.enumerate().for_each(|(plane, (target, source))| {
                let (ni, ci) = (plane / c, plane % c);
                let (mean, inv_std) = stats[ni * groups + ci / per_group];
                let scale = (inv_std * weight[ci] as f64) as f32;
                let shift = (bias[ci] as f64 - mean * scale as f64) as f32;
                simd::affine_elu(source, scale, shift, target);
            });
        })
    }
}

/// Gradients of [`fused_group_norm_elu`] for `x`, `weight` and `bias` given the output's
/// gradient `dy`, in two passes: `dz = dy ELU'(z)` with its per-channel sums, then
/// `dx = inv_std (weight dz - mean_g(weight dz) - x_hat mean_g(weight dz x_hat))`, which is
/// affine in `dz` and `x` per channel.
pub fn fused_group_norm_elu_backward(
    x: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    groups: usize,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [n, c, h, w] = dims;
    let (hw, per_group) = (h * w, c / groups);
    let stats = group_stats(x, dims, groups);
    let mut dx = vec![0.0f32; x.len()];
    // Per plane: sum of dz and of dz * x.
    let sums: Vec<(f64, f64)> = dx
        .par_chunks_mut(hw)
        .zip(x.par_chunks(hw).zip(dy.par_chunks(hw)))
        .enumerate()
        .map(|(plane, (dz, (x, dy)))| {
            let (ni, ci) = (plane / c, plane % c);
            let (mean, inv_std) = stats[ni * groups + ci / per_group];
            let scale = (inv_std * weight[ci] as f64) as f32;
            let shift = (bias[ci] as f64 - mean * scale as f64) as f32;
            simd::affine_elu_backward(x, dy, scale, shift, dz)
        })
        .collect();
    // Sum of dz * x_hat per plane, x_hat = (x - mean) inv_std.
    let weighted: Vec<f64> = (0..n * c)
        .map(|plane| {
            let (mean, inv_std) = stats[(plane / c) * groups + (plane % c) / per_group];
            let (total, with_x) = sums[plane];
            inv_std * (with_x - mean * total)
        })
        .collect();
    let mut grad_weight = vec![0.0f32; c];
    let mut grad_bias = vec![0.0f32; c];
    for ci in 0..c {
        grad_bias[ci] = (0..n).map(|ni| sums[ni * c + ci].0).sum::<f64>() as f32;
        grad_weight[ci] = (0..n).map(|ni| weighted[ni * c + ci]).sum::<f64>() as f32;
    }
    // Group means of weight * dz and of weight * dz * x_hat.
    let count = (per_group * hw) as f64;
    let group_means: Vec<(f64, f64)> = (0..n * groups)
        .map(|index| {
            let (ni, gi) = (index / groups, index % groups);
            let planes = ni * c + gi * per_group..ni * c + (gi + 1) * per_group;
            let gamma = |plane: usize| weight[plane % c] as f64;
            let mean_dz = planes.clone().map(|p| gamma(p) * sums[p].0).sum::<f64>() / count;
            let mean_dz_xhat = planes.map(|p| gamma(p) * weighted[p]).sum::<f64>() / count;
            (mean_dz, mean_dz_xhat)
        })
        .collect();
    dx.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(plane, (dz, x))| {
        let (ni, ci) = (plane / c, plane % c);
        let group = ni * groups + ci / per_group;
        let (mean, inv_std) = stats[group];
        let (mean_dz, mean_dz_xhat) = group_means[group];
        // inv (g dz - m1 - (x - mean) inv m2) = (inv g) dz - (inv^2 m2) x + inv (inv m2 mean - m1).
        let a = inv_std * weight[ci] as f64;
        let b = -inv_std * inv_std * mean_dz_xhat;
        let c0 = inv_std * (inv_std * mean_dz_xhat * mean - mean_dz);
        simd::combine_in_place(dz, x, a as f32, b as f32, c0 as f32);
    });
    (dx, grad_weight, grad_bias)
}
