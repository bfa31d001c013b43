//! Convolutions for the CPU backend (burn's NdArray), built on a fast GEMM.
//!
//! burn-ndarray convolves with a direct multiply-add loop, an order of magnitude below the
//! machine's matrix-multiply rate. Here:
//! - the 3x3 convolution is Winograd F(2x2, 3x3): 4x4 input tiles are transformed, multiplied
//!   channel-wise as 16 independent GEMMs, and transformed back into 2x2 output tiles, which
//!   needs 2.25 times fewer multiplications than the direct convolution;
//! - its input gradient is the same convolution with the kernel flipped and transposed; its
//!   weight gradient is taken in the Winograd domain (16 GEMMs over the tiles of the
//!   transformed input and the transformed output gradient);
//! - the 2x2 stride-2 transposed convolution has no overlap between output pixels, so it is one
//!   GEMM followed by a scatter (and its gradients a gather followed by GEMMs);
//! - GroupNorm + ELU, the 1x1 layers and the 2x2 max pooling are fused passes of their own;
//! - AdamW's update is one pass over each parameter and its moments.
//!
//! Tensors are read as contiguous row-major NCHW f32 (copied first only when a view is
//! strided); anything else (another float dtype) takes burn's generic path.

pub mod adamw;
mod conv_transpose;
mod gemm;
mod group_norm;
pub mod host;
mod max_pool;
mod pointwise;
mod scratch;
mod transpose;
mod winograd;
mod winograd_grad;

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::NdArray;
use burn::tensor::ops::{FloatTensor, ModuleOps};
use ndarray::{ArcArray, ArrayView1, ArrayViewD, Axis, IxDyn};
use rayon::prelude::*;

pub use conv_transpose::up_conv2x2;
pub use group_norm::{fused_group_norm_elu, fused_group_norm_elu_backward};
pub use max_pool::{max_pool2x2, max_pool2x2_backward};
pub use pointwise::{pointwise_gemm, pointwise_gemm_backward};
pub use winograd::{
    winograd_conv3x3, winograd_conv3x3_input_grad, winograd_conv3x3_keeping_input, KeptInput,
};

use super::{
    conv3x3_options, max_pool2x2_backward_composed, max_pool2x2_composed, simd, up2x2_options, Activation,
};
use conv_transpose::up2x2_gather;
use gemm::{matmul, Mat};
use transpose::{transpose, transposed_batches};
use winograd_grad::conv3x3_weight_grad;

type Cpu = NdArray;

/// A new vector of `len` floats filled by `write`, not zeroed first: a kernel that writes its
/// output whole would pay for the zeroing twice (a memset, and the values' second trip
/// through the cache).
///
/// # Safety
/// `write` must initialise all `len` elements of the slice it is handed.
unsafe fn written_whole(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    write(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the caller's promise: `write` initialised all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// Data of an f32 tensor, contiguous; `None` for other dtypes.
fn contiguous(tensor: &NdArrayTensor) -> Option<(Vec<usize>, Cow<'_, [f32]>)> {
    match tensor {
        NdArrayTensor::F32(storage) => {
            let view = storage.view();
            let shape = view.shape().to_vec();
            let data = match view.to_slice() {
                Some(slice) => Cow::Borrowed(slice),
                None => Cow::Owned(standard_layout(view)),
            };
            Some((shape, data))
        }
        _ => None,
    }
}

/// The elements of a strided view in row-major order: as a batch of transposes when the view
/// moves the innermost axis of its memory forward (a permuted NHWC state read as NCHW),
/// otherwise copied lane by lane along the last axis, lanes in parallel. ndarray's element
/// iterator over a view of dynamic rank costs tens of cycles per element.
fn standard_layout(view: ArrayViewD<'_, f32>) -> Vec<f32> {
    if let Some((memory, dims)) = transposed_memory(&view) {
        return transposed_batches(memory, dims);
    }
    let Some(&last) = view.shape().last() else {
        return view.iter().copied().collect();
    };
    let mut out = vec![0.0f32; view.len()];
    if last == 0 {
        return out;
    }
    let lanes: Vec<ArrayView1<'_, f32>> = view.lanes(Axis(view.ndim() - 1)).into_iter().collect();
    out.par_chunks_mut(last).zip(lanes.into_par_iter()).for_each(|(out, lane)| match lane.as_slice() {
        Some(slice) => out.copy_from_slice(slice),
        None => out.iter_mut().zip(lane.iter()).for_each(|(out, &value)| *out = value),
    });
    out
}

/// The memory of `view` and its dims `[a, b, c]` when the view reads that contiguous
/// [a, b, c] array as [a, c, b]: one axis, the innermost in memory, moved forward (a permuted
/// NHWC array read as NCHW is the memory `[N, H * W, C]`).
fn transposed_memory<'a>(view: &ArrayViewD<'a, f32>) -> Option<(&'a [f32], [usize; 3])> {
    let (shape, strides) = (view.shape(), view.strides());
    let moved = (0..shape.len()).find(|&axis| shape[axis] > 1 && strides[axis] == 1)?;
    let mut order: Vec<usize> = (0..shape.len()).filter(|&axis| axis != moved).collect();
    order.push(moved);
    let memory = view.clone().permuted_axes(IxDyn(&order)).to_slice()?;
    let outer = shape[..moved].iter().product();
    let inner = shape[moved + 1..].iter().product();
    Some((memory, [outer, inner, shape[moved]]))
}

/// Data of an f32 tensor of rank 4, contiguous NCHW; `None` for other dtypes and ranks. The
/// check every adapter needs before it may hand the data to a kernel.
fn nchw(tensor: &NdArrayTensor) -> Option<([usize; 4], Cow<'_, [f32]>)> {
    let (shape, data) = contiguous(tensor)?;
    let dims: [usize; 4] = shape.try_into().ok()?;
    Some((dims, data))
}

/// Data of an f32 tensor of rank 1 and length `len`, contiguous.
fn vector(tensor: &NdArrayTensor, len: usize) -> Option<Cow<'_, [f32]>> {
    contiguous(tensor).filter(|(shape, _)| shape[..] == [len]).map(|(_, data)| data)
}

fn tensor(shape: &[usize], data: Vec<f32>) -> NdArrayTensor {
    let array = ArcArray::from_shape_vec(IxDyn(shape), data).expect("kernel output length matches its shape");
    NdArrayTensor::from(array)
}

/// [`super::EngineBackend::conv3x3`] for the CPU backend.
pub fn conv3x3(x: FloatTensor<Cpu>, weight: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
    conv3x3_on_host(x, weight, false).0
}

/// [`super::EngineBackend::conv3x3_keeping`] for the CPU backend: the convolution and, for a
/// layer small enough to be transformed whole, its transformed input.
pub fn conv3x3_keeping_input(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
) -> (FloatTensor<Cpu>, Option<KeptInput>) {
    conv3x3_on_host(x, weight, true)
}

/// The 3x3 convolution by Winograd (burn's for tensors it cannot read), keeping its transformed
/// input when asked and the layer allows.
fn conv3x3_on_host(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    keep: bool,
) -> (FloatTensor<Cpu>, Option<KeptInput>) {
    let output = match (nchw(&x), nchw(&weight)) {
        (Some((dims, xd)), Some(([k, c, 3, 3], wd))) if c == dims[1] => {
            let (output, kept) = if keep {
                winograd_conv3x3_keeping_input(&xd, dims, &wd, k)
            } else {
                (winograd_conv3x3(&xd, dims, &wd, k), None)
            };
            Some((tensor(&[dims[0], k, dims[2], dims[3]], output), kept))
        }
        _ => None,
    };
    output.unwrap_or_else(|| (<Cpu as ModuleOps<Cpu>>::conv2d(x, weight, None, conv3x3_options()), None))
}

/// [`super::EngineBackend::conv3x3_backward`] for the CPU backend; `kept` is the forward's
/// transformed input, if it kept it.
pub fn conv3x3_backward(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    grad: FloatTensor<Cpu>,
    kept: Option<&KeptInput>,
) -> (FloatTensor<Cpu>, FloatTensor<Cpu>) {
    let fast = match (nchw(&x), nchw(&weight), nchw(&grad)) {
        (Some(([n, c, h, w], xd)), Some(([k, wc, 3, 3], wd)), Some((gs, gd)))
            if wc == c && gs == [n, k, h, w] =>
        {
            let grad_x = winograd_conv3x3_input_grad(&gd, [n, k, h, w], &wd, c);
            let grad_w = conv3x3_weight_grad(&xd, [n, c, h, w], &gd, k, kept);
            Some((tensor(&[n, c, h, w], grad_x), tensor(&[k, c, 3, 3], grad_w)))
        }
        _ => None,
    };
    fast.unwrap_or_else(|| {
        let grad_x = <Cpu as ModuleOps<Cpu>>::conv2d_x_backward(
            x.clone(),
            weight.clone(),
            grad.clone(),
            conv3x3_options(),
        );
        let grad_w = <Cpu as ModuleOps<Cpu>>::conv2d_weight_backward(x, weight, grad, conv3x3_options());
        (grad_x, grad_w)
    })
}

/// [`super::EngineBackend::conv_transpose2x2`] for the CPU backend.
pub fn conv_transpose2x2(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    bias: FloatTensor<Cpu>,
) -> FloatTensor<Cpu> {
    let output = match (nchw(&x), nchw(&weight)) {
        (Some((dims, xd)), Some(([c, o, 2, 2], wd))) if c == dims[1] => vector(&bias, o).map(|bd| {
            let data = up_conv2x2(&xd, dims, &wd, &bd);
            tensor(&[dims[0], o, 2 * dims[2], 2 * dims[3]], data)
        }),
        _ => None,
    };
    output
        .unwrap_or_else(|| <Cpu as ModuleOps<Cpu>>::conv_transpose2d(x, weight, Some(bias), up2x2_options()))
}

/// [`super::EngineBackend::conv_transpose2x2_backward`] for the CPU backend.
pub fn conv_transpose2x2_backward(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    bias: FloatTensor<Cpu>,
    grad: FloatTensor<Cpu>,
) -> (FloatTensor<Cpu>, FloatTensor<Cpu>, FloatTensor<Cpu>) {
    let fast = match (nchw(&x), nchw(&weight), nchw(&grad)) {
        (Some(([n, c, h, w], xd)), Some(([wc, o, 2, 2], wd)), Some((gs, gd)))
            if wc == c && gs == [n, o, 2 * h, 2 * w] && vector(&bias, o).is_some() =>
        {
            let hw = h * w;
            let gathered = up2x2_gather(&gd, [n, o, h, w]);
            let mut grad_x = vec![0.0f32; n * c * hw];
            let mut grad_w = vec![0.0f32; c * 4 * o];
            // grad_w^T [4O, C] accumulates G_n [4O, HW] X_n^T [HW, C]: the GEMM wants its right
            // operand row-major, and X_n has C rows to transpose where G_n has 4O (twice as
            // many in the U-Net).
            let mut grad_w_t = vec![0.0f32; 4 * o * c];
            let mut x_t = vec![0.0f32; hw * c];
            for ni in 0..n {
                let g = gathered.as_ptr().wrapping_add(ni * 4 * o * hw);
                transpose(&xd[ni * c * hw..(ni + 1) * c * hw], c, hw, &mut x_t);
                // SAFETY: W [C, 4O], G_n [4O, HW], X_n^T [HW, C]; outputs are fresh buffers.
                unsafe {
                    // grad_x_n [C, HW] = W [C, 4O] G_n [4O, HW].
                    matmul(
                        c,
                        hw,
                        4 * o,
                        Mat { ptr: wd.as_ptr(), row: (4 * o) as isize, col: 1 },
                        Mat { ptr: g, row: hw as isize, col: 1 },
                        grad_x.as_mut_ptr().add(ni * c * hw),
                        hw as isize,
                        false,
                        true,
                    );
                    matmul(
                        4 * o,
                        c,
                        hw,
                        Mat { ptr: g, row: hw as isize, col: 1 },
                        Mat { ptr: x_t.as_ptr(), row: c as isize, col: 1 },
                        grad_w_t.as_mut_ptr(),
                        c as isize,
                        ni > 0,
                        true,
                    );
                }
            }
            transpose(&grad_w_t, 4 * o, c, &mut grad_w);
            let grad_b = channel_sums(&gd, o, 4 * h * w);
            Some((tensor(&[n, c, h, w], grad_x), tensor(&[c, o, 2, 2], grad_w), tensor(&[o], grad_b)))
        }
        _ => None,
    };
    fast.unwrap_or_else(|| {
        let grad_x = <Cpu as ModuleOps<Cpu>>::conv_transpose2d_x_backward(
            weight.clone(),
            grad.clone(),
            up2x2_options(),
        );
        let grad_b = <Cpu as ModuleOps<Cpu>>::conv_transpose2d_bias_backward(x.clone(), bias, grad.clone());
        let grad_w =
            <Cpu as ModuleOps<Cpu>>::conv_transpose2d_weight_backward(x, weight, grad, up2x2_options());
        (grad_x, grad_w, grad_b)
    })
}

/// The sum over N, H and W of each channel of `x` [N, channels, H, W] with planes of `plane`
/// values (the gradient of a per-channel bias).
pub(super) fn channel_sums(x: &[f32], channels: usize, plane: usize) -> Vec<f32> {
    let plane_sums: Vec<f64> =
        x.par_chunks(plane.max(1)).map(|values| simd::sum_and_squares(values).0).collect();
    let mut sums = vec![0.0f64; channels];
    for (index, sum) in plane_sums.iter().enumerate() {
        sums[index % channels] += sum;
    }
    sums.into_iter().map(|sum| sum as f32).collect()
}

/// [`super::EngineBackend::max_pool2x2`] for the CPU backend.
pub fn max_pool(x: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
    let output =
        nchw(&x).map(|([n, c, h, w], xd)| tensor(&[n, c, h / 2, w / 2], max_pool2x2(&xd, [n, c, h, w])));
    output.unwrap_or_else(|| max_pool2x2_composed::<Cpu>(x))
}

/// [`super::EngineBackend::max_pool2x2_backward`] for the CPU backend.
pub fn max_pool_backward(x: FloatTensor<Cpu>, grad: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
    let fast = match (nchw(&x), nchw(&grad)) {
        (Some((dims @ [n, c, h, w], xd)), Some((gs, gd))) if gs == [n, c, h / 2, w / 2] => {
            Some(tensor(&dims, max_pool2x2_backward(&xd, dims, &gd)))
        }
        _ => None,
    };
    fast.unwrap_or_else(|| max_pool2x2_backward_composed::<Cpu>(x, grad))
}

/// [`super::EngineBackend::group_norm_elu`] for the CPU backend.
pub fn group_norm_elu(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    bias: FloatTensor<Cpu>,
    groups: usize,
) -> FloatTensor<Cpu> {
    let fused = nchw(&x).filter(|(dims, _)| groups > 0 && dims[1] % groups == 0).and_then(|(dims, xd)| {
        let (wd, bd) = (vector(&weight, dims[1])?, vector(&bias, dims[1])?);
        Some(tensor(&dims, fused_group_norm_elu(&xd, dims, &wd, &bd, groups)))
    });
    fused.unwrap_or_else(|| super::group_norm_elu_composed::<Cpu>(x, weight, bias, groups))
}

/// [`super::EngineBackend::group_norm_elu_backward`] for the CPU backend.
pub fn group_norm_elu_backward(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    bias: FloatTensor<Cpu>,
    groups: usize,
    grad: FloatTensor<Cpu>,
) -> (FloatTensor<Cpu>, FloatTensor<Cpu>, FloatTensor<Cpu>) {
    let fused = match (nchw(&x), nchw(&grad)) {
        (Some((dims, xd)), Some((gs, gd))) if groups > 0 && dims[1] % groups == 0 && gs == dims => (|| {
            let (wd, bd) = (vector(&weight, dims[1])?, vector(&bias, dims[1])?);
            let (dx, dw, db) = fused_group_norm_elu_backward(&xd, dims, &wd, &bd, groups, &gd);
            Some((tensor(&dims, dx), tensor(&[dims[1]], dw), tensor(&[dims[1]], db)))
        })(
        ),
        _ => None,
    };
    fused.unwrap_or_else(|| super::group_norm_elu_backward_composed::<Cpu>(x, weight, bias, groups, grad))
}

/// [`super::EngineBackend::pointwise`] for the CPU backend.
pub fn pointwise(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    bias: FloatTensor<Cpu>,
    activation: Activation,
) -> FloatTensor<Cpu> {
    let fast = match (nchw(&x), nchw(&weight)) {
        (Some(([n, c, h, w], xd)), Some(([k, wc, 1, 1], wd))) if wc == c && c > 0 => vector(&bias, k)
            .map(|bd| tensor(&[n, k, h, w], pointwise_gemm(&xd, [n, c, h * w], &wd, &bd, activation))),
        _ => None,
    };
    fast.unwrap_or_else(|| super::pointwise_composed::<Cpu>(x, weight, bias, activation))
}

/// [`super::EngineBackend::pointwise_backward`] for the CPU backend.
pub fn pointwise_backward(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    output: FloatTensor<Cpu>,
    activation: Activation,
    grad: FloatTensor<Cpu>,
) -> (FloatTensor<Cpu>, FloatTensor<Cpu>, FloatTensor<Cpu>) {
    let fast = match (nchw(&x), nchw(&weight), nchw(&output), nchw(&grad)) {
        (Some((dims @ [n, c, h, w], xd)), Some(([k, wc, 1, 1], wd)), Some((ys, yd)), Some((gs, gd)))
            if wc == c && c > 0 && ys == [n, k, h, w] && gs == ys =>
        {
            let (dx, dw, db) = pointwise_gemm_backward(&xd, [n, c, h * w], &wd, &yd, activation, &gd);
            Some((tensor(&dims, dx), tensor(&[k, c, 1, 1], dw), tensor(&[k], db)))
        }
        _ => None,
    };
    fast.unwrap_or_else(|| super::pointwise_backward_composed::<Cpu>(x, weight, output, activation, grad))
}

#[cfg(test)]
mod tests;
