//! The 3x3 convolution's weight gradient, taken in the Winograd domain (its input gradient is
//! the same Winograd convolution with the kernel flipped and transposed:
//! [`super::winograd::winograd_conv3x3_input_grad`]). The forward is
//! `Y = A^T [sum_c (G g G^T) . (B^T d B)] A` per tile, so
//! `dg = G^T [sum_tiles (A dY A^T) . (B^T d B)] G`, 16 GEMMs of C x K over the tiles, which do
//! 2.25 times fewer multiplications than the GEMM over the im2col matrix, and never build it.

use rayon::prelude::*;

use super::gemm::{matmul, Mat};
use super::scratch::Scratch;
use super::transpose::transposed_batches;
use super::winograd::{transform_tile_rows, KeptInput};
use crate::kernels::simd::{self, multiversion};

/// Floats of transformed inputs and output gradients one block of tiles of the weight gradient
/// may hold (512 KiB): the block's transforms are written and read by its GEMMs while in L2.
/// Over the whole layer at once, the transforms (4 values per input value) went to memory and
/// back and cost several times as much as the GEMMs.
const BLOCK_FLOATS: usize = 128 * 1024;

/// Tiles a block of the weight gradient holds at least, whatever [`BLOCK_FLOATS`] allows: they
/// are the depth of its GEMMs, which spend more on packing than on arithmetic when short.
const MIN_TILES_PER_BLOCK: usize = 256;

thread_local! {
    static INPUT_TRANSFORMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static GRADIENT_TRANSFORMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static RUN_SUMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gradient of the 3x3 convolution's weight (stride 1, zero padding 1) of `x` [N, C, H, W]
/// given the output's gradient `grad` [N, K, H, W]. Returns [K, C, 3, 3]. `kept`, the forward's
/// transformed input when it kept it ([`super::winograd::winograd_conv3x3_keeping_input`]),
/// is read instead of transforming `x` again.
///
/// Blocks of tile rows are shared out among the threads in contiguous runs; each run sums
/// `R_e = V_e dM_e^T` (C x K, for the 16 terms e) over its blocks, the runs' sums are added and
/// transformed back. Within a block the transformed inputs `V` are stored [C][16][tiles] and
/// the transformed output gradients `dM = A dY A^T` [tiles][16][K] (channels last), so that
/// both GEMM operands, `V_e` and `dM_e^T`, are read along rows.
pub(super) fn conv3x3_weight_grad(
    x: &[f32],
    dims: [usize; 4],
    grad: &[f32],
    k: usize,
    kept: Option<&KeptInput>,
) -> Vec<f32> {
    let kept = kept.filter(|kept| kept.dims() == dims).map(KeptInput::transformed);
    weight_grad_in_blocks(x, dims, grad, k, kept, BLOCK_FLOATS, MIN_TILES_PER_BLOCK)
}

/// [`conv3x3_weight_grad`] with blocks of at most `block_floats` transformed values, unless that
/// is fewer than `min_tiles` tiles (and at least one tile row). `kept`: the transformed input
/// [C][16][P] of the whole layer, or `None` to transform each block's.
pub(super) fn weight_grad_in_blocks(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    grad: &[f32],
    k: usize,
    kept: Option<&[f32]>,
    block_floats: usize,
    min_tiles: usize,
) -> Vec<f32> {
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let p = n * tiles_y * tiles_x;
    if let Some(kept) = kept {
        assert_eq!(kept.len(), c * 16 * p, "transformed input of another shape");
    }
    let rows_in_budget = block_floats / (16 * (c + k) * tiles_x);
    let rows_per_block = rows_in_budget.max(min_tiles.div_ceil(tiles_x)).clamp(1, tiles_y);
    let blocks_per_image = tiles_y.div_ceil(rows_per_block);
    let blocks = n * blocks_per_image;
    if blocks == 0 {
        // No tiles: nothing to sum (and no run whose first block would write its sum).
        return vec![0.0; k * c * 9];
    }
    let threads = rayon::current_num_threads();
    let runs = threads.clamp(1, blocks);
    // Fewer blocks than threads (the deep layers' few tiles and many channels): each GEMM is
    // shared out instead.
    let parallel_gemm = runs < threads;
    let channels_last = channels_last(grad, [n, k, h, w]);
    // Every run's sum R [16][C][K], kept from layer to layer (fresh, each was a memset or
    // page faults, 4 MB for the bottleneck): each run's first block overwrites its sum.
    let sum_len = 16 * c * k;
    let mut sums = Scratch::take(&RUN_SUMS, runs * sum_len);
    sums.par_chunks_mut(sum_len).enumerate().for_each(|(run, sum)| {
        // Kept by the thread from layer to layer (fresh, each cost a memset).
        let most_tiles = rows_per_block * tiles_x;
        let mut v = Scratch::take(&INPUT_TRANSFORMS, if kept.is_some() { 0 } else { 16 * c * most_tiles });
        let mut dm = Scratch::take(&GRADIENT_TRANSFORMS, most_tiles * 16 * k);
        let mut input_scratch = simd::InputScratch::new(tiles_x);
        let mut grad_scratch = vec![0.0f32; 8 * k];
        let zeros = vec![0.0f32; k];
        let run_blocks = blocks * run / runs..blocks * (run + 1) / runs;
        let first_block = run_blocks.start;
        for block in run_blocks {
            let (ni, ty0) = (block / blocks_per_image, block % blocks_per_image * rows_per_block);
            let rows = rows_per_block.min(tiles_y - ty0);
            let pb = rows * tiles_x;
            let tile_rows = ty0..ty0 + rows;
            // Where the block's V_0 (c x pb) starts, and how far apart its terms lie (its rows
            // lie 16 terms apart).
            let (v_e, row) = match kept {
                Some(kept) => (kept[(ni * tiles_y + ty0) * tiles_x..].as_ptr(), p),
                None => {
                    transform_tile_rows(
                        x,
                        [n, c, h, w],
                        ni,
                        tile_rows,
                        &mut input_scratch,
                        &mut v,
                        16 * pb,
                        pb,
                    );
                    (v.as_ptr(), pb)
                }
            };
            let image = &channels_last[ni * h * w * k..(ni + 1) * h * w * k];
            for r in 0..rows {
                let out = &mut dm[r * tiles_x * 16 * k..];
                output_grad_tile_row(image, k, h, w, ty0 + r, &zeros, &mut grad_scratch, out);
            }
            for e in 0..16 {
                // SAFETY: V_e is c x pb with row stride 16 * row, inside `v` or `kept` (whose
                // length was checked), dM_e^T is pb x k with row stride 16k inside `dm`; R_e is
                // c x k inside `sum`.
                unsafe {
                    matmul(
                        c,
                        k,
                        pb,
                        Mat { ptr: v_e.add(e * row), row: (16 * row) as isize, col: 1 },
                        Mat { ptr: dm.as_ptr().add(e * k), row: (16 * k) as isize, col: 1 },
                        sum.as_mut_ptr().add(e * c * k),
                        k as isize,
                        block != first_block,
                        parallel_gemm,
                    );
                }
            }
        }
        Scratch::give_back(&INPUT_TRANSFORMS, v);
        Scratch::give_back(&GRADIENT_TRANSFORMS, dm);
    });
    let (total, others) = sums.split_at_mut(sum_len);
    for sum in others.chunks_exact(sum_len) {
        total.iter_mut().zip(sum).for_each(|(t, s)| *t += s);
    }
    let grads = kernel_grads(total, k, c);
    Scratch::give_back(&RUN_SUMS, sums);
    grads
}

/// `grad` [N, K, H, W] as [N][H*W][K], so that a tile's four pixels are four contiguous
/// K-vectors.
fn channels_last(grad: &[f32], [n, k, h, w]: [usize; 4]) -> Vec<f32> {
    transposed_batches(grad, [n, k, h * w])
}

multiversion! {
    /// `dM = A dY A^T` for the tiles of tile row `ty` of one channels-last image `grad`
    /// [h * w][k]: tile `tx`'s term `e` goes to `out[(tx * 16 + e) * k..][..k]`. `zeros` holds
    /// k zeros, `scratch` 8k floats.
    #[allow(clippy::too_many_arguments)]
    pub fn output_grad_tile_row(grad: &[f32], k: usize, h: usize, w: usize, ty: usize, zeros: &[f32], scratch: &mut [f32], out: &mut [f32])
        => output_grad_tile_row_generic
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_grad_tile_row_generic(
    grad: &[f32],
    k: usize,
    h: usize,
    w: usize,
    ty: usize,
    zeros: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let pixel =
        |y: usize, x: usize| if y < h && x < w { &grad[(y * w + x) * k..(y * w + x + 1) * k] } else { zeros };
    let (top, bottom) = scratch[..8 * k].split_at_mut(4 * k);
    for (tx, tile) in out.chunks_exact_mut(16 * k).take(w.div_ceil(2)).enumerate() {
        let (y, x) = (2 * ty, 2 * tx);
        // Columns first: (y0, y1) -> (y0, y0 + y1, y0 - y1, -y1) along each of the two rows.
        for (row, py) in [(&mut *top, y), (&mut *bottom, y + 1)] {
            let (left, right) = (pixel(py, x), pixel(py, x + 1));
            let (t0, rest) = row.split_at_mut(k);
            let (t1, rest) = rest.split_at_mut(k);
            let (t2, t3) = rest.split_at_mut(k);
            for i in 0..k {
                let (a, b) = (left[i], right[i]);
                t0[i] = a;
                t1[i] = a + b;
                t2[i] = a - b;
                t3[i] = -b;
            }
        }
        // Then rows: term (i, j) from column term j of the top and bottom rows.
        for j in 0..4 {
            let (t, u) = (&top[j * k..(j + 1) * k], &bottom[j * k..(j + 1) * k]);
            let term = |i: usize| (i * 4 + j) * k;
            tile[term(0)..term(0) + k].copy_from_slice(t);
            let target = &mut tile[term(1)..term(1) + k];
            target.iter_mut().zip(t.iter().zip(u)).for_each(|(o, (a, b))| *o = a + b);
            let target = &mut tile[term(2)..term(2) + k];
            target.iter_mut().zip(t.iter().zip(u)).for_each(|(o, (a, b))| *o = a - b);
            let target = &mut tile[term(3)..term(3) + k];
            target.iter_mut().zip(u).for_each(|(o, b)| *o = -b);
        }
    }
}

/// `dg = G^T R G` for every (k, c) pair, from R [16][C][K] to [K, C, 3, 3]. Pairs are taken in
/// R's order, so that the 16 terms are read as 16 sequential streams (in the output's order
/// each read was a cache line of its own, 64 KiB and more apart).
fn kernel_grads(r: &[f32], k: usize, c: usize) -> Vec<f32> {
    // G^T: 3x4.
    const GT: [[f32; 4]; 3] = [[1.0, 0.5, 0.5, 0.0], [0.0, 0.5, -0.5, 0.0], [0.0, 0.5, 0.5, 1.0]];
    let mut out = vec![0.0f32; k * c * 9];
    for ci in 0..c {
        for ki in 0..k {
            let term = |e: usize| r[(e * c + ci) * k + ki];
            // G^T R: 3x4.
            let mut left = [[0.0f32; 4]; 3];
            for (a, row) in left.iter_mut().enumerate() {
                for (j, value) in row.iter_mut().enumerate() {
                    *value = (0..4).map(|i| GT[a][i] * term(i * 4 + j)).sum();
                }
            }
            // (G^T R) G: 3x3.
            let g = &mut out[(ki * c + ci) * 9..(ki * c + ci + 1) * 9];
            for a in 0..3 {
                for b in 0..3 {
                    g[a * 3 + b] = (0..4).map(|j| left[a][j] * GT[b][j]).sum();
                }
            }
        }
    }
    out
}
