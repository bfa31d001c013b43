//! The pointwise layer (1x1 convolution, bias, activation) as GEMMs over blocks of cells, with
//! the bias and the ELU applied to each block while its product is still in cache. The
//! composed form made four more passes over the output (bias, and ELU's clamp, exp, sum) and
//! multiplied through a weight expanded once per universe.

use rayon::prelude::*;

use super::channel_sums;
use super::gemm::{matmul, Mat, SharedMut};
use super::transpose::transpose;
use crate::kernels::{simd, Activation};

/// Cells per task: a K x 2048 block of outputs stays in L2 cache for the epilogue.
const BLOCK: usize = 2048;

/// `activation(W x + b)` for `x: [N][C][HW]`, `weight: [K][C]`, `bias: [K]`; returns
/// `[N][K][HW]`.
/// `c` must be at least 1 (the GEMM then writes every output before the epilogue reads it).
pub fn pointwise_gemm(
    x: &[f32],
    [n, c, hw]: [usize; 3],
    weight: &[f32],
    bias: &[f32],
    activation: Activation,
) -> Vec<f32> {
    let k = bias.len();
    assert!(c > 0 && x.len() == n * c * hw && weight.len() == k * c, "pointwise shapes disagree");
    let mut out = Vec::<f32>::with_capacity(n * k * hw);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let blocks = hw.div_ceil(BLOCK);
    (0..n * blocks).into_par_iter().for_each(|task| {
        // Captures the whole Send wrapper, not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let out_ptr = out_ptr;
        let (image, start) = (task / blocks, (task % blocks) * BLOCK);
        let width = (hw - start).min(BLOCK);
        // SAFETY: each task writes the columns [start, start + width) of its own image's K rows,
        // within the capacity reserved above; the GEMM writes every element it covers (c >= 1,
        // no accumulation) before the epilogue reads it.
        unsafe {
            let target = out_ptr.0.add(image * k * hw + start);
            matmul(
                k,
                width,
                c,
                Mat { ptr: weight.as_ptr(), row: c as isize, col: 1 },
                Mat { ptr: x.as_ptr().add(image * c * hw + start), row: hw as isize, col: 1 },
                target,
                hw as isize,
                false,
                false,
            );
            for (row, &shift) in bias.iter().enumerate() {
                let values = std::slice::from_raw_parts_mut(target.add(row * hw), width);
                match activation {
                    Activation::Elu => simd::shift_elu_in_place(values, shift),
                    Activation::Identity => values.iter_mut().for_each(|v| *v += shift),
                }
            }
        }
    });
    // SAFETY: the tasks above wrote all n * k * hw elements.
    unsafe { out.set_len(n * k * hw) };
    out
}

/// The gradients of [`pointwise_gemm`] for `x: [N][C][HW]`, `weight: [K][C]` and the bias
/// `[K]`, given the layer's `output` and its gradient `grad` (both `[N][K][HW]`).
pub fn pointwise_gemm_backward(
    x: &[f32],
    [n, c, hw]: [usize; 3],
    weight: &[f32],
    output: &[f32],
    activation: Activation,
    grad: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(c > 0 && x.len() == n * c * hw && weight.len().is_multiple_of(c), "pointwise shapes disagree");
    let k = weight.len() / c;
    let dz: std::borrow::Cow<[f32]> = match activation {
        Activation::Identity => grad.into(),
        Activation::Elu => {
            let mut dz = vec![0.0f32; grad.len()];
            dz.par_chunks_mut(BLOCK)
                .zip(output.par_chunks(BLOCK).zip(grad.par_chunks(BLOCK)))
                .for_each(|(dz, (y, g))| simd::elu_backward_from_output(y, g, dz));
            dz.into()
        }
    };
    let grad_bias = channel_sums(&dz, k, hw);
    let mut grad_x = vec![0.0f32; n * c * hw];
    let mut grad_weight = vec![0.0f32; k * c];
    let mut x_transposed = vec![0.0f32; hw * c];
    for image in 0..n {
        let dz_image = dz[image * k * hw..].as_ptr();
        let x_image = &x[image * c * hw..(image + 1) * c * hw];
        // SAFETY: W [K, C] read transposed, dz_n [K, HW], X_n^T [HW, C]; the outputs are fresh
        // buffers of the sizes written.
        unsafe {
            // grad_x_n [C, HW] = W^T [C, K] dz_n [K, HW].
            matmul(
                c,
                hw,
                k,
                Mat { ptr: weight.as_ptr(), row: 1, col: c as isize },
                Mat { ptr: dz_image, row: hw as isize, col: 1 },
                grad_x.as_mut_ptr().add(image * c * hw),
                hw as isize,
                false,
                true,
            );
            // grad_w [K, C] += dz_n [K, HW] X_n^T [HW, C], X_n^T made row-major.
            transpose(x_image, c, hw, &mut x_transposed);
            matmul(
                k,
                c,
                hw,
                Mat { ptr: dz_image, row: hw as isize, col: 1 },
                Mat { ptr: x_transposed.as_ptr(), row: c as isize, col: 1 },
                grad_weight.as_mut_ptr(),
                c as isize,
                image > 0,
                true,
            );
        }
    }
    (grad_x, grad_weight, grad_bias)
}
