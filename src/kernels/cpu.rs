//! Convolutions for the CPU backend (burn's NdArray), built on a fast GEMM.
//!
//! burn-ndarray convolves with a direct multiply-add loop, an order of magnitude below the
//! machine's matrix-multiply rate. Here:
//! - the 3x3 convolution is Winograd F(2x2, 3x3): 4x4 input tiles are transformed, multiplied
//!   channel-wise as 16 independent GEMMs, and transformed back into 2x2 output tiles, which
//!   needs 2.25 times fewer multiplications than the direct convolution;
//! - its input gradient is the same convolution with the kernel flipped and transposed; its
//!   weight gradient is one GEMM over the im2col matrix of the input;
//! - the 2x2 stride-2 transposed convolution has no overlap between output pixels, so it is one
//!   GEMM followed by a scatter (and its gradients a gather followed by GEMMs).
//!
//! Tensors are read as contiguous row-major NCHW f32 (copied first only when a view is
//! strided); anything else (another float dtype) takes burn's generic path.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::NdArray;
use burn::tensor::ops::{FloatTensor, ModuleOps};
use gemm::Parallelism;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::reference::GROUP_NORM_EPS;
use super::simd;
use super::{conv3x3_options, up2x2_options};

type Cpu = NdArray;

/// Data of an f32 tensor, contiguous; `None` for other dtypes.
fn contiguous(tensor: &NdArrayTensor) -> Option<(Vec<usize>, Cow<'_, [f32]>)> {
    match tensor {
        NdArrayTensor::F32(storage) => {
            let view = storage.view();
            let shape = view.shape().to_vec();
            let data = match view.to_slice() {
                Some(slice) => Cow::Borrowed(slice),
                None => Cow::Owned(view.iter().copied().collect()),
            };
            Some((shape, data))
        }
        _ => None,
    }
}

fn tensor(shape: &[usize], data: Vec<f32>) -> NdArrayTensor {
    let array = ArcArray::from_shape_vec(IxDyn(shape), data).expect("kernel output length matches its shape");
    NdArrayTensor::from(array)
}

/// Writes through a raw pointer from several rayon tasks, each to disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every use writes disjoint index sets from different tasks.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// A row-major matrix view for [`matmul`]: element (r, c) at `ptr + r * row + c * col`.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    row: isize,
    col: isize,
}

/// `c = a * b` (or `c += a * b`), `a` m x k, `b` k x n, `c` m x n with row stride `c_row`.
///
/// # Safety
/// All pointers must be valid for the strides and sizes given, and `c` must not alias `a` or
/// `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: *mut f32,
    c_row: isize,
    accumulate: bool,
    parallel: bool,
) {
    let parallelism = if parallel { Parallelism::Rayon(0) } else { Parallelism::None };
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        c_row,
        accumulate,
        a.ptr,
        a.col,
        a.row,
        b.ptr,
        b.col,
        b.row,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

// ---------------------------------------------------------------------------------------------
// Winograd F(2x2, 3x3)

/// The transformed inputs and products of the last convolution on this thread, kept for the
/// next one: a fresh buffer of that size costs a page fault per 4 KiB and a full memset.
struct Scratch;

thread_local! {
    static INPUT_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PRODUCT_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Scratch {
    /// A buffer of `len` floats (their values are whatever the last use left).
    fn take(slot: &'static std::thread::LocalKey<RefCell<Vec<f32>>>, len: usize) -> Vec<f32> {
        let mut buffer = slot.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        buffer.resize(len, 0.0);
        buffer
    }

    fn give_back(slot: &'static std::thread::LocalKey<RefCell<Vec<f32>>>, buffer: Vec<f32>) {
        slot.with(|cell| {
            let mut kept = cell.borrow_mut();
            if buffer.capacity() > kept.capacity() {
                *kept = buffer;
            }
        });
    }
}

/// Kernels transformed recently, with the raw kernels they came from: a model steps with the
/// same weights again and again, and transforming them costs as much as a small layer. A hit
/// needs the raw values to be equal, so updated weights (training) are never served stale.
static TRANSFORMED: Mutex<Vec<TransformedKernels>> = Mutex::new(Vec::new());

/// `(K, C, raw kernels, transformed kernels)`.
type TransformedKernels = (usize, usize, Vec<f32>, Arc<Vec<f32>>);

/// Kernels kept in [`TRANSFORMED`]: every 3x3 layer of a U-Net, with room to spare.
const TRANSFORMED_KEPT: usize = 32;

/// [`winograd_weights`] of `weight`, from the cache when the same kernels were seen before.
fn transformed_weights(weight: &[f32], k: usize, c: usize) -> Arc<Vec<f32>> {
    let lookup = |cache: &Vec<TransformedKernels>| {
        cache
            .iter()
            .find(|(kept_k, kept_c, raw, _)| (*kept_k, *kept_c) == (k, c) && raw.as_slice() == weight)
            .map(|(_, _, _, u)| u.clone())
    };
    if let Some(u) = TRANSFORMED.lock().ok().and_then(|cache| lookup(&cache)) {
        return u;
    }
    let u = Arc::new(winograd_weights(weight, k, c));
    if let Ok(mut cache) = TRANSFORMED.lock() {
        if cache.len() >= TRANSFORMED_KEPT {
            cache.remove(0);
        }
        cache.push((k, c, weight.to_vec(), u.clone()));
    }
    u
}

/// U = G g G^T for every (k, c) kernel, stored [16][K][C].
fn winograd_weights(weight: &[f32], k: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * k * c];
    for kc in 0..k * c {
        let g = &weight[kc * 9..kc * 9 + 9];
        // G g: 4x3.
        let mut t = [[0.0f32; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        // (G g) G^T: 4x4.
        for (i, row) in t.iter().enumerate() {
            let values = [row[0], 0.5 * (row[0] + row[1] + row[2]), 0.5 * (row[0] - row[1] + row[2]), row[2]];
            for (j, value) in values.into_iter().enumerate() {
                u[(i * 4 + j) * k * c + kc] = value;
            }
        }
    }
    u
}

/// Tiles per image from which [`winograd_conv3x3`] works a few tile rows at a time: the
/// transformed inputs of a whole 128x128 layer (tens of MB) would not stay in cache.
const BLOCKED_FROM_TILES: usize = 2048;

/// Tiles per block of the blocked path: small enough for a block's transformed inputs and
/// products to stay in L2, large enough for efficient GEMMs.
const TILES_PER_BLOCK: usize = 64;

/// 3x3 convolution, stride 1, zero padding 1, of `x` [N, C, H, W] with `weight` [K, C, 3, 3].
pub fn winograd_conv3x3(x: &[f32], dims: [usize; 4], weight: &[f32], k: usize) -> Vec<f32> {
    let [_, _, h, w] = dims;
    if h.div_ceil(2) * w.div_ceil(2) >= BLOCKED_FROM_TILES {
        winograd_blocked(x, dims, weight, k, TILES_PER_BLOCK)
    } else {
        winograd_whole(x, dims, weight, k)
    }
}

/// Winograd over a block of tile rows per task: transform the block's inputs, 16 GEMMs,
/// transform back, all in cache.
fn winograd_blocked(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    k: usize,
    target_tiles: usize,
) -> Vec<f32> {
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let rows_per_block = (target_tiles / tiles_x).clamp(1, tiles_y);
    let blocks_per_image = tiles_y.div_ceil(rows_per_block);
    let u = transformed_weights(weight, k, c);
    let mut out = vec![0.0f32; n * k * h * w];
    let out_ptr = SharedMut(out.as_mut_ptr());
    (0..n * blocks_per_image).into_par_iter().for_each_init(
        || {
            (
                Vec::<f32>::new(),
                Vec::<f32>::new(),
                simd::InputScratch::new(tiles_x),
                vec![0.0f32; 12 * tiles_x],
            )
        },
        |(v, m, scratch, out_scratch), task| {
            // Captures the whole Send wrapper, not its raw-pointer field (edition 2021
            // closures capture fields separately).
            #[allow(clippy::redundant_locals)]
            let out_ptr = out_ptr;
            let (ni, block) = (task / blocks_per_image, task % blocks_per_image);
            let ty0 = block * rows_per_block;
            let rows = rows_per_block.min(tiles_y - ty0);
            let pb = rows * tiles_x;
            // V [16][C][pb] and M [16][K][pb]: each term's matrix is contiguous.
            v.resize(16 * c * pb, 0.0);
            m.resize(16 * k * pb, 0.0);
            for ci in 0..c {
                let plane = &x[(ni * c + ci) * h * w..(ni * c + ci + 1) * h * w];
                for r in 0..rows {
                    simd::input_tile_row(
                        plane,
                        h,
                        w,
                        ty0 + r,
                        scratch,
                        &mut v[ci * pb + r * tiles_x..],
                        c * pb,
                    );
                }
            }
            for e in 0..16 {
                // SAFETY: U_e is k x c, V_e is c x pb and M_e is k x pb, all contiguous and
                // inside their buffers; M does not alias U or V.
                unsafe {
                    matmul(
                        k,
                        pb,
                        c,
                        Mat { ptr: u.as_ptr().add(e * k * c), row: c as isize, col: 1 },
                        Mat { ptr: v.as_ptr().add(e * c * pb), row: pb as isize, col: 1 },
                        m.as_mut_ptr().add(e * k * pb),
                        pb as isize,
                        false,
                        false,
                    );
                }
            }
            for ki in 0..k {
                // SAFETY: the task writes only the output rows of its own tile rows, which no
                // other task touches, and the plane lies inside `out`.
                let plane =
                    unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add((ni * k + ki) * h * w), h * w) };
                for r in 0..rows {
                    simd::output_tile_row(
                        &m[ki * pb + r * tiles_x..],
                        k * pb,
                        h,
                        w,
                        ty0 + r,
                        out_scratch,
                        plane,
                    );
                }
            }
        },
    );
    out
}

/// Winograd over the whole layer at once: one transform pass, 16 large GEMMs (one per task),
/// one inverse pass. Better than blocking while the layer is small.
fn winograd_whole(x: &[f32], [n, c, h, w]: [usize; 4], weight: &[f32], k: usize) -> Vec<f32> {
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = tiles_y * tiles_x;
    let p = n * tiles;

    // V = B^T d B for every 4x4 input tile, stored [C][16][P] so that each task owns a block
    // and each tile row's terms are contiguous.
    let mut v = Scratch::take(&INPUT_SCRATCH, c * 16 * p);
    v.par_chunks_mut(16 * p).enumerate().for_each(|(ci, block)| {
        let mut scratch = simd::InputScratch::new(tiles_x);
        for ni in 0..n {
            let plane = &x[(ni * c + ci) * h * w..(ni * c + ci + 1) * h * w];
            for ty in 0..tiles_y {
                let offset = ni * tiles + ty * tiles_x;
                simd::input_tile_row(plane, h, w, ty, &mut scratch, &mut block[offset..], p);
            }
        }
    });

    // M_e = U_e V_e for the 16 tile positions e; M stored [K][16][P].
    let u = transformed_weights(weight, k, c);
    let mut m = Scratch::take(&PRODUCT_SCRATCH, k * 16 * p);
    let m_ptr = SharedMut(m.as_mut_ptr());
    (0..16).into_par_iter().for_each(|e| {
        // Captures the whole Send wrapper, not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let m_ptr = m_ptr;
        // SAFETY: U_e is k x c contiguous, V_e is c x p with row stride 16p, and each e writes
        // its own rows of M (offset e * p within every k block).
        unsafe {
            matmul(
                k,
                p,
                c,
                Mat { ptr: u.as_ptr().add(e * k * c), row: c as isize, col: 1 },
                Mat { ptr: v.as_ptr().add(e * p), row: (16 * p) as isize, col: 1 },
                m_ptr.0.add(e * p),
                (16 * p) as isize,
                false,
                false,
            );
        }
    });

    // Y = A^T M A: 2x2 outputs per tile, written plane by plane.
    let mut out = vec![0.0f32; n * k * h * w];
    out.par_chunks_mut(h * w).enumerate().for_each(|(plane_index, plane)| {
        let (ni, ki) = (plane_index / k, plane_index % k);
        let block = &m[ki * 16 * p..(ki + 1) * 16 * p];
        let mut scratch = vec![0.0f32; 12 * tiles_x];
        for ty in 0..tiles_y {
            let offset = ni * tiles + ty * tiles_x;
            simd::output_tile_row(&block[offset..], p, h, w, ty, &mut scratch, plane);
        }
    });
    Scratch::give_back(&INPUT_SCRATCH, v);
    Scratch::give_back(&PRODUCT_SCRATCH, m);
    out
}

/// The kernel of the input gradient: flipped in space, input and output channels swapped.
/// [K, C, 3, 3] -> [C, K, 3, 3].
fn flip_transpose(weight: &[f32], k: usize, c: usize) -> Vec<f32> {
    let mut flipped = vec![0.0f32; c * k * 9];
    for ki in 0..k {
        for ci in 0..c {
            for tap in 0..9 {
                flipped[(ci * k + ki) * 9 + (8 - tap)] = weight[(ki * c + ci) * 9 + tap];
            }
        }
    }
    flipped
}

/// `out[j][i] = a[i][j]` for `a` [rows][cols] row-major, in cache-sized blocks.
fn transpose(a: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    const BLOCK: usize = 32;
    out.par_chunks_mut(BLOCK * rows).enumerate().for_each(|(block, target)| {
        let (j0, width) = (block * BLOCK, (cols - block * BLOCK).min(BLOCK));
        for i0 in (0..rows).step_by(BLOCK) {
            for i in i0..(i0 + BLOCK).min(rows) {
                for (dj, &value) in a[i * cols + j0..i * cols + j0 + width].iter().enumerate() {
                    target[dj * rows + i] = value;
                }
            }
        }
    });
}

/// Gradient of the 3x3 convolution's weight: for each image, grad [K, HW] times the
/// transposed im2col matrix [HW, 9C], accumulated over the batch. Returns [K, C, 3, 3].
fn conv3x3_weight_grad(x: &[f32], [n, c, h, w]: [usize; 4], grad: &[f32], k: usize) -> Vec<f32> {
    let hw = h * w;
    let mut result = vec![0.0f32; k * c * 9];
    // Every element of both is written before it is read.
    let mut columns = Scratch::take(&INPUT_SCRATCH, c * 9 * hw);
    let mut transposed = Scratch::take(&PRODUCT_SCRATCH, c * 9 * hw);
    for ni in 0..n {
        // im2col: row (ci, dy, dx) holds x[ci] shifted by (dy - 1, dx - 1), zero outside.
        columns.par_chunks_mut(9 * hw).enumerate().for_each(|(ci, rows)| {
            let plane = &x[(ni * c + ci) * hw..(ni * c + ci + 1) * hw];
            for tap in 0..9 {
                let (dy, dx) = (tap / 3, tap % 3);
                let row = &mut rows[tap * hw..(tap + 1) * hw];
                for y in 0..h {
                    let sy = y as isize + dy as isize - 1;
                    let line = &mut row[y * w..(y + 1) * w];
                    if sy < 0 || sy >= h as isize {
                        line.fill(0.0);
                        continue;
                    }
                    let source = &plane[sy as usize * w..(sy as usize + 1) * w];
                    // Column x reads source[x + dx - 1]: shifted copies with a zero at the edge.
                    match dx {
                        0 => {
                            line[0] = 0.0;
                            line[1..].copy_from_slice(&source[..w - 1]);
                        }
                        1 => line.copy_from_slice(source),
                        _ => {
                            line[..w - 1].copy_from_slice(&source[1..]);
                            line[w - 1] = 0.0;
                        }
                    }
                }
            }
        });
        // The GEMM reads its right operand fastest row-major: transpose the columns first
        // (a strided right operand ran it at a fifth of the speed).
        transpose(&columns, c * 9, hw, &mut transposed);
        // SAFETY: grad_n is k x hw contiguous; the transposed columns are hw x 9c contiguous;
        // result is k x 9c contiguous and distinct from both.
        unsafe {
            matmul(
                k,
                c * 9,
                hw,
                Mat { ptr: grad.as_ptr().add(ni * k * hw), row: hw as isize, col: 1 },
                Mat { ptr: transposed.as_ptr(), row: (c * 9) as isize, col: 1 },
                result.as_mut_ptr(),
                (c * 9) as isize,
                ni > 0,
                true,
            );
        }
    }
    Scratch::give_back(&INPUT_SCRATCH, columns);
    Scratch::give_back(&PRODUCT_SCRATCH, transposed);
    result
}

/// [`super::EngineBackend::conv3x3`] for the CPU backend.
pub fn conv3x3(x: FloatTensor<Cpu>, weight: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
    let output = match (contiguous(&x), contiguous(&weight)) {
        (Some((xs, xd)), Some((ws, wd))) if xs.len() == 4 && ws.len() == 4 && ws[2..] == [3, 3] => {
            let dims = [xs[0], xs[1], xs[2], xs[3]];
            let k = ws[0];
            Some(tensor(&[dims[0], k, dims[2], dims[3]], winograd_conv3x3(&xd, dims, &wd, k)))
        }
        _ => None,
    };
    output.unwrap_or_else(|| <Cpu as ModuleOps<Cpu>>::conv2d(x, weight, None, conv3x3_options()))
}

/// [`super::EngineBackend::conv3x3_backward`] for the CPU backend.
pub fn conv3x3_backward(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    grad: FloatTensor<Cpu>,
) -> (FloatTensor<Cpu>, FloatTensor<Cpu>) {
    let fast = match (contiguous(&x), contiguous(&weight), contiguous(&grad)) {
        (Some((xs, xd)), Some((ws, wd)), Some((_, gd))) if xs.len() == 4 && ws.len() == 4 => {
            let [n, c, h, w] = [xs[0], xs[1], xs[2], xs[3]];
            let k = ws[0];
            let flipped = flip_transpose(&wd, k, c);
            let grad_x = winograd_conv3x3(&gd, [n, k, h, w], &flipped, c);
            let grad_w = conv3x3_weight_grad(&xd, [n, c, h, w], &gd, k);
            Some((tensor(&xs, grad_x), tensor(&ws, grad_w)))
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

// ---------------------------------------------------------------------------------------------
// Transposed 2x2 stride-2 convolution

/// Output channel-taps: row (o, i, j) of the GEMM result goes to pixel (2y + i, 2x + j) of
/// output channel o.
fn up2x2_scatter(y: &[f32], [_, o, h, w]: [usize; 4], out: &mut [f32]) {
    let hw = h * w;
    out.par_chunks_mut(4 * hw).enumerate().for_each(|(plane_index, plane)| {
        let (ni, oi) = (plane_index / o, plane_index % o);
        for tap in 0..4 {
            let (i, j) = (tap / 2, tap % 2);
            let row = &y[(ni * 4 * o + oi * 4 + tap) * hw..][..hw];
            for yy in 0..h {
                let target = &mut plane[(2 * yy + i) * 2 * w..][..2 * w];
                for xx in 0..w {
                    target[2 * xx + j] = row[yy * w + xx];
                }
            }
        }
    });
}

/// The inverse of [`up2x2_scatter`]: [N, O, 2H, 2W] -> [N, 4O, H*W].
fn up2x2_gather(grad: &[f32], [n, o, h, w]: [usize; 4]) -> Vec<f32> {
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

/// Transposed convolution, kernel 2, stride 2: `x` [N, C, H, W], `weight` [C, O, 2, 2].
pub fn up_conv2x2(x: &[f32], [n, c, h, w]: [usize; 4], weight: &[f32], o: usize) -> Vec<f32> {
    let hw = h * w;
    // Y_n [4O, HW] = W^T [4O, C] X_n [C, HW], W viewed as [C, 4O].
    let mut y = vec![0.0f32; n * 4 * o * hw];
    for ni in 0..n {
        // SAFETY: sizes follow the shapes above; y is a fresh buffer.
        unsafe {
            matmul(
                4 * o,
                hw,
                c,
                Mat { ptr: weight.as_ptr(), row: 1, col: (4 * o) as isize },
                Mat { ptr: x.as_ptr().add(ni * c * hw), row: hw as isize, col: 1 },
                y.as_mut_ptr().add(ni * 4 * o * hw),
                hw as isize,
                false,
                true,
            );
        }
    }
    let mut out = vec![0.0f32; n * o * 4 * hw];
    up2x2_scatter(&y, [n, o, h, w], &mut out);
    out
}

/// [`super::EngineBackend::conv_transpose2x2`] for the CPU backend.
pub fn conv_transpose2x2(x: FloatTensor<Cpu>, weight: FloatTensor<Cpu>) -> FloatTensor<Cpu> {
    let output = match (contiguous(&x), contiguous(&weight)) {
        (Some((xs, xd)), Some((ws, wd))) if xs.len() == 4 && ws.len() == 4 && ws[2..] == [2, 2] => {
            let dims = [xs[0], xs[1], xs[2], xs[3]];
            let o = ws[1];
            let data = up_conv2x2(&xd, dims, &wd, o);
            Some(tensor(&[dims[0], o, 2 * dims[2], 2 * dims[3]], data))
        }
        _ => None,
    };
    output.unwrap_or_else(|| <Cpu as ModuleOps<Cpu>>::conv_transpose2d(x, weight, None, up2x2_options()))
}

/// [`super::EngineBackend::conv_transpose2x2_backward`] for the CPU backend.
pub fn conv_transpose2x2_backward(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    grad: FloatTensor<Cpu>,
) -> (FloatTensor<Cpu>, FloatTensor<Cpu>) {
    let fast = match (contiguous(&x), contiguous(&weight), contiguous(&grad)) {
        (Some((xs, xd)), Some((ws, wd)), Some((_, gd))) if xs.len() == 4 && ws.len() == 4 => {
            let [n, c, h, w] = [xs[0], xs[1], xs[2], xs[3]];
            let o = ws[1];
            let hw = h * w;
            let gathered = up2x2_gather(&gd, [n, o, h, w]);
            let mut grad_x = vec![0.0f32; n * c * hw];
            let mut grad_w = vec![0.0f32; c * 4 * o];
            let mut transposed = vec![0.0f32; 4 * o * hw];
            for ni in 0..n {
                let g = gathered.as_ptr().wrapping_add(ni * 4 * o * hw);
                // SAFETY: W [C, 4O], G_n [4O, HW], X_n [C, HW]; outputs are fresh buffers.
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
                    // grad_w [C, 4O] += X_n [C, HW] G_n^T [HW, 4O], G_n^T made row-major.
                    transpose(std::slice::from_raw_parts(g, 4 * o * hw), 4 * o, hw, &mut transposed);
                    matmul(
                        c,
                        4 * o,
                        hw,
                        Mat { ptr: xd.as_ptr().add(ni * c * hw), row: hw as isize, col: 1 },
                        Mat { ptr: transposed.as_ptr(), row: (4 * o) as isize, col: 1 },
                        grad_w.as_mut_ptr(),
                        (4 * o) as isize,
                        ni > 0,
                        true,
                    );
                }
            }
            Some((tensor(&xs, grad_x), tensor(&ws, grad_w)))
        }
        _ => None,
    };
    fast.unwrap_or_else(|| {
        let grad_x = <Cpu as ModuleOps<Cpu>>::conv_transpose2d_x_backward(
            weight.clone(),
            grad.clone(),
            up2x2_options(),
        );
        let grad_w =
            <Cpu as ModuleOps<Cpu>>::conv_transpose2d_weight_backward(x, weight, grad, up2x2_options());
        (grad_x, grad_w)
    })
}

// ---------------------------------------------------------------------------------------------
// GroupNorm + ELU in two passes (statistics, then normalise-affine-activate) instead of the
// dozen full-tensor passes of the composed tensor operations.

/// Mean and inverse standard deviation (biased variance, eps 1e-5) of every (image, group)
/// of contiguous [N, C, H, W].
fn group_stats(x: &[f32], [n, c, h, w]: [usize; 4], groups: usize) -> Vec<(f64, f64)> {
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
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(plane, (target, source))| {
        let (ni, ci) = (plane / c, plane % c);
        let (mean, inv_std) = stats[ni * groups + ci / per_group];
        let scale = (inv_std * weight[ci] as f64) as f32;
        let shift = (bias[ci] as f64 - mean * scale as f64) as f32;
        simd::affine_elu(source, scale, shift, target);
    });
    out
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

/// [`super::EngineBackend::group_norm_elu`] for the CPU backend.
pub fn group_norm_elu(
    x: FloatTensor<Cpu>,
    weight: FloatTensor<Cpu>,
    bias: FloatTensor<Cpu>,
    groups: usize,
) -> FloatTensor<Cpu> {
    let fused = match (contiguous(&x), contiguous(&weight), contiguous(&bias)) {
        (Some((xs, xd)), Some((_, wd)), Some((_, bd))) if xs.len() == 4 && xs[1] % groups == 0 => {
            let dims = [xs[0], xs[1], xs[2], xs[3]];
            Some(tensor(&xs, fused_group_norm_elu(&xd, dims, &wd, &bd, groups)))
        }
        _ => None,
    };
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
    let fused = match (contiguous(&x), contiguous(&weight), contiguous(&bias), contiguous(&grad)) {
        (Some((xs, xd)), Some((ws, wd)), Some((_, bd)), Some((gs, gd)))
            if xs.len() == 4 && xs[1] % groups == 0 && gs == xs =>
        {
            let dims = [xs[0], xs[1], xs[2], xs[3]];
            let (dx, dw, db) = fused_group_norm_elu_backward(&xd, dims, &wd, &bd, groups, &gd);
            Some((tensor(&xs, dx), tensor(&ws, dw), tensor(&ws, db)))
        }
        _ => None,
    };
    fused.unwrap_or_else(|| super::group_norm_elu_backward_composed::<Cpu>(x, weight, bias, groups, grad))
}

#[cfg(test)]
mod tests;
