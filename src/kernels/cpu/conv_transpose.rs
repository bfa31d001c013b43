//! Transposed convolution, kernel 2, stride 2: no two inputs reach the same output pixel, so
//! it is one GEMM followed by a scatter, and its gradients a gather followed by GEMMs.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm::{matmul, Mat};
use super::written_whole;

/// Output channel-taps plus the bias: row (o, i, j) of the GEMM result goes to pixel
/// (2y + i, 2x + j) of output channel o, to which `bias[o]` is added on the way.
/// The taps of each input pixel cover the output plane, so every value of `out` is written.
pub(super) fn up2x2_scatter(y: &[f32], [_, o, h, w]: [usize; 4], bias: &[f32], out: &mut [MaybeUninit<f32>]) {
    let hw = h * w;
    out.par_chunks_mut((4 * hw).max(1)).enumerate().for_each(|(plane_index, plane)| {
        let (ni, oi) = (plane_index / o, plane_index % o);
        for tap in 0..4 {
            let (i, j) = (tap / 2, tap % 2);
            let row = &y[(ni * 4 * o + oi * 4 + tap) * hw..][..hw];
            for yy in 0..h {
                let target = &mut plane[(2 * yy + i) * 2 * w..][..2 * w];
                for xx in 0..w {
                    target[2 * xx + j].write(row[yy * w + xx] + bias[oi]);
                }
            }
        }
    });
}

/// The inverse of [`up2x2_scatter`]: [N, O, 2H, 2W] -> [N, 4O, H*W].
pub(super) fn up2x2_gather(grad: &[f32], [n, o, h, w]: [usize; 4]) -> Vec<f32> {
    let hw = h * w;
    let mut gathered = vec![0.0f32; n * 4 * o * hw];
    gathered.par_chunks_mut(4 * hw).enumerate().for_each(|(plane_index, rows)| {
        let plane = &grad[plane_index * 4 * hw..][..4 * hw];
        for tap in 0..4 {
            let (i, j) = (tap / 2, tap % 2);
            let row = &mut rows[tap * hw..][..hw];
            for yy in 0..h {
                let source = &plane[(2 * yy + i) * 2 * w..][..2 * w];
                for xx in 0..w {
                    row[yy * w + xx] = source[2 * xx + j];
                }
            }
        }
    });
    gathered
}

/// Transposed convolution, kernel 2, stride 2, with bias: `x` [N, C, H, W], `weight`
/// [C, O, 2, 2], `bias` \[O\] -> [N, O, 2H, 2W]. The bias is added in the scatter, which writes
/// every output anyway (a separate broadcast add was 3% of a 128x128 step).
pub fn up_conv2x2(x: &[f32], [n, c, h, w]: [usize; 4], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (hw, o) = (h * w, bias.len());
    // Y_n [4O, HW] = W^T [4O, C] X_n [C, HW], W viewed as [C, 4O]. Neither Y nor the output
    // is zeroed first: the GEMMs (which do not read their destination) and the scatter write
    // every value (the two memsets were 1.3% of an inference step).
    let len = n * 4 * o * hw;
    let gemms = |y: &mut [MaybeUninit<f32>]| {
        for ni in 0..n {
            // SAFETY: sizes follow the shapes above, inside `y`; the GEMM only writes its
            // destination (`accumulate` is false).
            unsafe {
                matmul(
                    4 * o,
                    hw,
                    c,
                    Mat { ptr: weight.as_ptr(), row: 1, col: (4 * o) as isize },
                    Mat { ptr: x.as_ptr().add(ni * c * hw), row: hw as isize, col: 1 },
                    y.as_mut_ptr().cast::<f32>().add(ni * 4 * o * hw),
                    hw as isize,
                    false,
                    true,
                );
            }
        }
    };
    // SAFETY: the GEMMs write the [4O, HW] block of every image, `0..len` together (with
    // `c == 0` they write zeros).
    let y = unsafe { written_whole(len, gemms) };
    // SAFETY: the scatter writes every value of every plane.
    unsafe { written_whole(len, |out| up2x2_scatter(&y, [n, o, h, w], bias, out)) }
}
