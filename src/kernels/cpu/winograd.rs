//! Winograd F(2x2, 3x3) convolution: 4x4 input tiles are transformed, multiplied channel-wise
//! as 16 independent GEMMs and transformed back into 2x2 output tiles (2.25 times fewer
//! multiplications than the direct convolution). Its gradients are in [`super::winograd_grad`].

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::gemm::{matmul, Mat, SharedMut};
use super::scratch::{
    Scratch, ScratchBuffer, BLOCK_INPUT_SCRATCH, BLOCK_PRODUCT_SCRATCH, INPUT_SCRATCH, PRODUCT_SCRATCH,
};
use super::written_whole;
use crate::kernels::simd;

/// Kernels transformed recently, with the raw kernels they came from: a model steps with the
/// same weights again and again, and transforming them costs as much as a small layer. A hit
/// needs the raw values to be equal, so updated weights (training) are never served stale.
pub(super) static TRANSFORMED: Mutex<Vec<TransformedKernels>> = Mutex::new(Vec::new());

/// `(K, C, raw kernels, transformed kernels)`.
type TransformedKernels = (usize, usize, Vec<f32>, Arc<Vec<f32>>);

/// Kernels kept in [`TRANSFORMED`]: every 3x3 layer of a U-Net, with room to spare.
pub(super) const TRANSFORMED_KEPT: usize = 32;

/// [`winograd_weights`] of `weight`, from the cache when the same kernels were seen before.
pub(super) fn transformed_weights(weight: &[f32], k: usize, c: usize) -> Arc<Vec<f32>> {
    let lookup = |cache: &Vec<TransformedKernels>| {
        cache
            .iter()
            .find(|(kept_k, kept_c, raw, _)| (*kept_k, *kept_c) == (k, c) && same_bits(raw, weight))
            .map(|(_, _, _, u)| u.clone())
    };
    if let Some(u) = TRANSFORMED.lock().ok().and_then(|cache| lookup(&cache)) {
        return u;
    }
    let u = Arc::new(winograd_weights(weight, k, c));
    // Copied by both threads (a training step caches every layer's new weights), before the
    // lock is taken: a thread waiting for its parallel work may run another convolution's.
    let mut raw = Vec::with_capacity(weight.len());
    raw.par_extend(weight.par_iter().copied());
    if let Ok(mut cache) = TRANSFORMED.lock() {
        if cache.len() >= TRANSFORMED_KEPT {
            cache.remove(0);
        }
        cache.push((k, c, raw, u.clone()));
    }
    u
}

/// Whether `a` and `b` hold the same bits. Compared as bytes, which is one `memcmp`: compared
/// as floats, one value at a time, the lookup of an inference step's kernels (the bottleneck's
/// alone are half a million floats) was 3% of a step.
pub(super) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    // SAFETY: every f32 is 4 initialised bytes, and each view covers exactly its slice.
    let bytes =
        |s: &[f32]| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) };
    bytes(a) == bytes(b)
}

/// U = G g G^T for every (k, c) kernel, stored [16][K][C]. Kernels are transformed a chunk at
/// a time into a [16][chunk] buffer that is then copied row by row (written straight into the
/// 16 planes, every value went to another cache line); the chunks are shared out among the
/// threads, since training transforms every layer's new weights at every step.
pub(super) fn winograd_weights(weight: &[f32], k: usize, c: usize) -> Vec<f32> {
    const CHUNK: usize = 256;
    let kernels = k * c;
    // Not zeroed first: the chunks cover every plane (zeroing was 1% of a training step).
    let mut u: Vec<f32> = Vec::with_capacity(16 * kernels);
    let planes = SharedMut(u.as_mut_ptr());
    (0..kernels.div_ceil(CHUNK)).into_par_iter().for_each(|chunk| {
        // Captures the whole Send wrapper, not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let planes = planes;
        let start = chunk * CHUNK;
        let len = CHUNK.min(kernels - start);
        let mut buffer = [[0.0f32; CHUNK]; 16];
        for (offset, g) in weight[start * 9..(start + len) * 9].chunks_exact(9).enumerate() {
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
                let values =
                    [row[0], 0.5 * (row[0] + row[1] + row[2]), 0.5 * (row[0] - row[1] + row[2]), row[2]];
                for (j, value) in values.into_iter().enumerate() {
                    buffer[i * 4 + j][offset] = value;
                }
            }
        }
        for (e, values) in buffer.iter().enumerate() {
            // SAFETY: `e * kernels + start + len <= 16 * kernels`, inside the capacity; the
            // chunks' ranges are disjoint.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), planes.0.add(e * kernels + start), len) };
        }
    });
    // SAFETY: the chunks `start..start + len` cover `0..kernels`, and each wrote its range in
    // all 16 planes.
    unsafe { u.set_len(16 * kernels) };
    u
}

/// The 16 transformed kernels of a convolution as the left operands of its 16 GEMMs, `A_e`
/// [outputs][inputs]: the forward convolution's `U_e`, or the input gradient's kernel read from
/// the same `U` (no flipped copy of the weights, no second transform, one cache entry).
pub(super) struct WinogradKernels {
    /// `U = G g G^T` of the forward kernels `g` [K][C], stored [16][K][C].
    u: Arc<Vec<f32>>,
    k: usize,
    c: usize,
    /// Whether these are the kernels of the input gradient: `g` flipped in space with its
    /// channels swapped, [C][K].
    flipped: bool,
}

impl WinogradKernels {
    /// The kernels of the convolution with `weight` [K, C, 3, 3].
    pub(super) fn forward(weight: &[f32], k: usize, c: usize) -> Self {
        Self { u: transformed_weights(weight, k, c), k, c, flipped: false }
    }

    /// The kernels of the convolution with `weight` [K, C, 3, 3] flipped in space and its
    /// channels swapped ([C, K, 3, 3]): the input gradient of the forward convolution.
    pub(super) fn input_gradient(weight: &[f32], k: usize, c: usize) -> Self {
        Self { flipped: true, ..Self::forward(weight, k, c) }
    }

    /// Output channels of the convolution.
    fn outputs(&self) -> usize {
        if self.flipped {
            self.c
        } else {
            self.k
        }
    }

    /// `A_e`, [outputs][inputs].
    fn term(&self, e: usize) -> Mat {
        let (k, c) = (self.k, self.c);
        if !self.flipped {
            return Mat { ptr: self.u.as_ptr().wrapping_add(e * k * c), row: c as isize, col: 1 };
        }
        // Flipping g reverses G's columns, which is G with rows 0 and 3 swapped (rows 1 and 2
        // are symmetric), so G flip(g) G^T is U with terms 0 and 3 swapped along both axes; the
        // swapped channels transpose each term.
        const SWAP: [usize; 4] = [3, 1, 2, 0];
        let source = SWAP[e / 4] * 4 + SWAP[e % 4];
        Mat { ptr: self.u.as_ptr().wrapping_add(source * k * c), row: 1, col: c as isize }
    }
}

/// Tiles per layer (all images together) from which [`winograd_conv3x3`] works a few tile rows
/// at a time: the transformed inputs of a whole 128x128 layer, or of four 64x64 ones (tens of
/// MB), would not stay in cache.
pub(super) const BLOCKED_FROM_TILES: usize = 2048;

/// Tiles per block of the blocked path: small enough for a block's transformed inputs and
/// products to stay in L2, large enough for efficient GEMMs.
pub(super) const TILES_PER_BLOCK: usize = 64;

/// 3x3 convolution, stride 1, zero padding 1, of `x` [N, C, H, W] with `weight` [K, C, 3, 3].
pub fn winograd_conv3x3(x: &[f32], dims: [usize; 4], weight: &[f32], k: usize) -> Vec<f32> {
    winograd_with(x, dims, &WinogradKernels::forward(weight, k, dims[1]))
}

/// The input gradient of [`winograd_conv3x3`]: `grad` [N, K, H, W] convolved with `weight`
/// [K, C, 3, 3] flipped in space and its channels swapped -> [N, C, H, W].
pub fn winograd_conv3x3_input_grad(grad: &[f32], dims: [usize; 4], weight: &[f32], c: usize) -> Vec<f32> {
    winograd_with(grad, dims, &WinogradKernels::input_gradient(weight, dims[1], c))
}

/// [`winograd_conv3x3`], also returning its transformed input `V` when the layer is small enough
/// to be transformed whole (fewer than 2048 tiles, all images together; the blocked path never
/// holds all of it), for the 3x3 weight gradient to read instead of transforming `x` again.
pub fn winograd_conv3x3_keeping_input(
    x: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    k: usize,
) -> (Vec<f32>, Option<KeptInput>) {
    let kernels = WinogradKernels::forward(weight, k, dims[1]);
    if is_blocked(dims) {
        return (winograd_blocked(x, dims, &kernels, TILES_PER_BLOCK), None);
    }
    let mut kept = KeptInput::take(dims);
    transform_inputs(x, dims, &mut kept.transformed);
    (winograd_from_inputs(kept.transformed(), dims, &kernels), Some(kept))
}

fn winograd_with(x: &[f32], dims: [usize; 4], kernels: &WinogradKernels) -> Vec<f32> {
    if is_blocked(dims) {
        winograd_blocked(x, dims, kernels, TILES_PER_BLOCK)
    } else {
        winograd_whole(x, dims, kernels)
    }
}

/// Whether a layer of `dims` [N, C, H, W] is worked in blocks of tile rows.
fn is_blocked([n, _, h, w]: [usize; 4]) -> bool {
    n * h.div_ceil(2) * w.div_ceil(2) >= BLOCKED_FROM_TILES
}

/// The transformed input `V` \[C\]\[16\]\[tiles\] of a forward convolution, kept for the layer's
/// weight gradient. Its buffer comes from a pool shared by the threads
/// (the backward step may run on another thread than the forward) and goes back to it when
/// dropped: a fresh buffer costs a page fault per 4 KiB and a memset.
pub struct KeptInput {
    transformed: ScratchBuffer,
    dims: [usize; 4],
}

/// Buffers of dropped [`KeptInput`]s, for the next ones.
static KEPT_INPUTS: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Buffers [`KEPT_INPUTS`] holds at most: every 3x3 layer of a U-Net's training step, with room
/// to spare.
const KEPT_INPUTS_POOLED: usize = 32;

impl KeptInput {
    /// A buffer for the transformed input of a layer of `dims` [N, C, H, W]: the shortest pooled
    /// one that is long enough, else a fresh one (lengthening another would leave the layer it
    /// fitted a fresh one to make next time).
    fn take(dims @ [n, c, h, w]: [usize; 4]) -> Self {
        let len = c * 16 * n * h.div_ceil(2) * w.div_ceil(2);
        let pooled = KEPT_INPUTS.lock().ok().and_then(|mut pool| {
            let fits = pool.iter().enumerate().filter(|(_, b)| b.len() >= len).min_by_key(|(_, b)| b.len());
            fits.map(|(index, _)| index).map(|index| pool.swap_remove(index))
        });
        let buffer = pooled.unwrap_or_else(|| vec![0.0; len]);
        Self { transformed: ScratchBuffer { buffer, len }, dims }
    }

    /// `V` [C][16][P], P = N * tiles_y * tiles_x.
    pub(super) fn transformed(&self) -> &[f32] {
        &self.transformed
    }

    /// The [N, C, H, W] of the input it was transformed from.
    pub(super) fn dims(&self) -> [usize; 4] {
        self.dims
    }
}

impl Drop for KeptInput {
    fn drop(&mut self) {
        if let Ok(mut pool) = KEPT_INPUTS.lock() {
            if pool.len() < KEPT_INPUTS_POOLED {
                pool.push(std::mem::take(&mut self.transformed.buffer));
            }
        }
    }
}

impl std::fmt::Debug for KeptInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptInput").field("dims", &self.dims).field("len", &self.transformed.len).finish()
    }
}

/// Winograd over a block of tile rows per task: transform the block's inputs, 16 GEMMs,
/// transform back, all in cache.
pub(super) fn winograd_blocked(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    kernels: &WinogradKernels,
    target_tiles: usize,
) -> Vec<f32> {
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    if n * tiles_y * tiles_x == 0 {
        return Vec::new();
    }
    let rows_per_block = (target_tiles / tiles_x).clamp(1, tiles_y);
    let blocks_per_image = tiles_y.div_ceil(rows_per_block);
    let k = kernels.outputs();
    // Not zeroed first: the tasks' output rows cover every plane (`output_tile_row`).
    let len = n * k * h * w;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let out_ptr = SharedMut(out.as_mut_ptr());
    (0..n * blocks_per_image).into_par_iter().for_each_init(
        || (simd::InputScratch::new(tiles_x), vec![0.0f32; 12 * tiles_x]),
        |(scratch, out_scratch), task| {
            // Captures the whole Send wrapper, not its raw-pointer field (edition 2021
            // closures capture fields separately).
            #[allow(clippy::redundant_locals)]
            let out_ptr = out_ptr;
            let (ni, block) = (task / blocks_per_image, task % blocks_per_image);
            let ty0 = block * rows_per_block;
            let rows = rows_per_block.min(tiles_y - ty0);
            let pb = rows * tiles_x;
            // V [16][C][pb] and M [16][K][pb]: each term's matrix is contiguous. Kept by the
            // thread from task to task: rayon calls `for_each_init`'s init once per job it
            // splits off, and fresh buffers cost a memset each (3% of a 128x128 step).
            let most_tiles = rows_per_block * tiles_x;
            let mut v = Scratch::take(&BLOCK_INPUT_SCRATCH, 16 * c * most_tiles);
            let mut m = Scratch::take(&BLOCK_PRODUCT_SCRATCH, 16 * k * most_tiles);
            transform_tile_rows(x, [n, c, h, w], ni, ty0..ty0 + rows, scratch, &mut v, pb, c * pb);
            for e in 0..16 {
                // SAFETY: A_e is k x c inside U, V_e is c x pb and M_e is k x pb, contiguous
                // and inside their buffers; M does not alias U or V.
                unsafe {
                    matmul(
                        k,
                        pb,
                        c,
                        kernels.term(e),
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
                let plane = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_ptr.0.add((ni * k + ki) * h * w).cast::<MaybeUninit<f32>>(),
                        h * w,
                    )
                };
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
            Scratch::give_back(&BLOCK_INPUT_SCRATCH, v);
            Scratch::give_back(&BLOCK_PRODUCT_SCRATCH, m);
        },
    );
    // SAFETY: the tasks cover every image's tile rows `0..tiles_y`, and each wrote all the
    // cells of those rows in every output plane.
    unsafe { out.set_len(len) };
    out
}

/// Winograd over the whole layer at once: one transform pass, 16 large GEMMs (one per task),
/// one inverse pass. Better than blocking while the layer is small.
pub(super) fn winograd_whole(
    x: &[f32],
    dims @ [n, c, h, w]: [usize; 4],
    kernels: &WinogradKernels,
) -> Vec<f32> {
    let mut v = Scratch::take(&INPUT_SCRATCH, c * 16 * n * h.div_ceil(2) * w.div_ceil(2));
    transform_inputs(x, dims, &mut v);
    let out = winograd_from_inputs(&v, dims, kernels);
    Scratch::give_back(&INPUT_SCRATCH, v);
    out
}

/// The 16 GEMMs and the inverse pass of [`winograd_whole`], from the transformed input `v`
/// [C][16][P] of an input of `dims` [N, C, H, W].
fn winograd_from_inputs(v: &[f32], [n, c, h, w]: [usize; 4], kernels: &WinogradKernels) -> Vec<f32> {
    let k = kernels.outputs();
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = tiles_y * tiles_x;
    let p = n * tiles;
    if p == 0 {
        return Vec::new();
    }
    assert_eq!(v.len(), c * 16 * p, "transformed input of another shape");

    // M_e = A_e V_e for the 16 tile positions e; M stored [K][16][P].
    let mut m = Scratch::take(&PRODUCT_SCRATCH, k * 16 * p);
    let m_ptr = SharedMut(m.as_mut_ptr());
    (0..16).into_par_iter().for_each(|e| {
        // Captures the whole Send wrapper, not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let m_ptr = m_ptr;
        // SAFETY: A_e is k x c inside U, V_e is c x p with row stride 16p, and each e writes
        // its own rows of M (offset e * p within every k block).
        unsafe {
            matmul(
                k,
                p,
                c,
                kernels.term(e),
                Mat { ptr: v.as_ptr().add(e * p), row: (16 * p) as isize, col: 1 },
                m_ptr.0.add(e * p),
                (16 * p) as isize,
                false,
                false,
            );
        }
    });

    // Y = A^T M A: 2x2 outputs per tile, written plane by plane.
    // SAFETY: each plane's tile rows `0..tiles_y` write all of its cells.
    let out = unsafe {
        written_whole(n * k * h * w, |out| {
            out.par_chunks_mut((h * w).max(1)).enumerate().for_each_init(
                || vec![0.0f32; 12 * tiles_x],
                |scratch, (plane_index, plane)| {
                    let (ni, ki) = (plane_index / k, plane_index % k);
                    let block = &m[ki * 16 * p..(ki + 1) * 16 * p];
                    for ty in 0..tiles_y {
                        let offset = ni * tiles + ty * tiles_x;
                        simd::output_tile_row(&block[offset..], p, h, w, ty, scratch, plane);
                    }
                },
            )
        })
    };
    Scratch::give_back(&PRODUCT_SCRATCH, m);
    out
}

/// `V = B^T d B` for tile rows `tile_rows` of every channel of image `ni` of `x` [N, C, H, W]
/// (zero padding 1): term `e` of tile `tx` in the block's row `r`, channel `ci`, goes to
/// `v[ci * channel_stride + e * term_stride + r * tiles_x + tx]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn transform_tile_rows(
    x: &[f32],
    [_, c, h, w]: [usize; 4],
    ni: usize,
    tile_rows: std::ops::Range<usize>,
    scratch: &mut simd::InputScratch,
    v: &mut [f32],
    channel_stride: usize,
    term_stride: usize,
) {
    let tiles_x = w.div_ceil(2);
    for ci in 0..c {
        let plane = &x[(ni * c + ci) * h * w..(ni * c + ci + 1) * h * w];
        for (r, ty) in tile_rows.clone().enumerate() {
            let out = &mut v[ci * channel_stride + r * tiles_x..];
            simd::input_tile_row(plane, h, w, ty, scratch, out, term_stride);
        }
    }
}

/// `V = B^T d B` for every 4x4 input tile of `x` [N, C, H, W] (zero padding 1), stored
/// [C][16][P] with P = N * tiles_y * tiles_x (tile index `(ni * tiles_y + ty) * tiles_x + tx`):
/// each channel is one task's block and each tile row's terms are contiguous.
fn transform_inputs(x: &[f32], [n, c, h, w]: [usize; 4], v: &mut [f32]) {
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let p = n * tiles_y * tiles_x;
    if p == 0 {
        return;
    }
    v[..c * 16 * p].par_chunks_mut(16 * p).enumerate().for_each(|(ci, block)| {
        let mut scratch = simd::InputScratch::new(tiles_x);
        for ni in 0..n {
            let plane = &x[(ni * c + ci) * h * w..(ni * c + ci + 1) * h * w];
            for ty in 0..tiles_y {
                let offset = (ni * tiles_y + ty) * tiles_x;
                simd::input_tile_row(plane, h, w, ty, &mut scratch, &mut block[offset..], p);
            }
        }
    });
}
