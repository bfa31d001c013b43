//! 2x2 max pooling with stride 2 (the U-Net's downsampling) and its gradient, plane by plane.
//! burn-ndarray's general pooling first copies the input into a padded array and then indexes
//! every element through four dimensions (4% of a 128x128 step for two small layers).
//!
//! As in PyTorch's `MaxPool2d(2)`: an odd last row or column is left out, a NaN in a window is
//! its maximum, and the gradient goes to the first maximum of a window in reading order.

use rayon::prelude::*;

use crate::kernels::simd::multiversion;

/// The position (0..4 in reading order) of the window's maximum: the first of equal values, and
/// a NaN over anything (where burn's pooling would skip it and return the rest's maximum).
#[inline(always)]
fn window_max_position(values: [f32; 4]) -> usize {
    let mut best = (values[0], 0);
    for (position, &value) in values.iter().enumerate().skip(1) {
        if value > best.0 || (value.is_nan() && !best.0.is_nan()) {
            best = (value, position);
        }
    }
    best.1
}

/// The four values of window (oy, ox) of a plane `w` wide, in reading order.
#[inline(always)]
fn window(plane: &[f32], w: usize, oy: usize, ox: usize) -> [f32; 4] {
    let top = (2 * oy) * w + 2 * ox;
    let bottom = top + w;
    [plane[top], plane[top + 1], plane[bottom], plane[bottom + 1]]
}

/// Max over every 2x2 window of `x` [N, C, H, W] -> [N, C, H/2, W/2] (rounded down).
pub fn max_pool2x2(x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0f32; n * c * oh * ow];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(out, plane)| {
        for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
            max_pool_row(&plane[2 * oy * w..][..2 * ow], &plane[(2 * oy + 1) * w..][..2 * ow], row);
        }
    });
    out
}

multiversion! {
    /// `out[i]` = the maximum of `top[2i]`, `top[2i + 1]`, `bottom[2i]` and `bottom[2i + 1]`, a NaN
    /// among them included.
    pub fn max_pool_row(top: &[f32], bottom: &[f32], out: &mut [f32]) => max_pool_row_generic
}

#[inline(always)]
fn max_pool_row_generic(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    // Selects, not branches, so that the row is vector operations (the window-by-window
    // version with its first-maximum search ran scalar).
    let max = |a: f32, b: f32| if b > a || b.is_nan() { b } else { a };
    for ((value, t), b) in out.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
        *value = max(max(t[0], t[1]), max(b[0], b[1]));
    }
}

/// Gradient of [`max_pool2x2`] for `x` [N, C, H, W], given the output's gradient `grad`
/// [N, C, H/2, W/2]: each window's gradient goes to its maximum, zero elsewhere.
pub fn max_pool2x2_backward(x: &[f32], [n, c, h, w]: [usize; 4], grad: &[f32]) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut grad_x = vec![0.0f32; n * c * h * w];
    if oh * ow == 0 {
        return grad_x;
    }
    grad_x.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).zip(grad.par_chunks(oh * ow)).for_each(
        |((target, plane), grad)| {
            for (oy, row) in grad.chunks_exact(ow).enumerate() {
                for (ox, &value) in row.iter().enumerate() {
                    let position = window_max_position(window(plane, w, oy, ox));
                    target[(2 * oy + position / 2) * w + 2 * ox + position % 2] = value;
                }
            }
        },
    );
    grad_x
}
