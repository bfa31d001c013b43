//! The one transpose of the CPU kernels: matrices and batches of matrices, in tiles taken in
//! parallel that keep their reads in L1 whatever the matrix's aspect (the state's 16 channels
//! against its H*W cells, a gradient's few channels against a wide image).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::written_whole;

/// Floats per tile (16 KB): the block a tile reads stays in L1 on every CPU we run on.
const TILE: usize = 4096;
/// The fewest columns a tile spans, so that each input row it reads is at least two cache lines.
const MIN_WIDTH: usize = 32;

/// `out[j][i] = a[i][j]` for `a` [rows][cols] row-major and `out` [cols][rows].
pub(super) fn transpose(a: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    assert_eq!(out.len(), a.len(), "the transpose's output holds as many floats as its input");
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `transpose_into` writes only
    // initialised values, so every element stays a valid f32.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    transpose_into(a, [1, rows, cols], out);
}

/// Each matrix of `a` [batches][rows][cols] transposed: a new [batches][cols][rows] array.
pub(super) fn transposed_batches(a: &[f32], dims: [usize; 3]) -> Vec<f32> {
    // SAFETY: `transpose_into` writes all `a.len()` elements (each output index is one input
    // index, and the tiles cover every input index).
    unsafe { written_whole(a.len(), |out| transpose_into(a, dims, out)) }
}

/// Writes every element of `out` [batches][cols][rows] from `a` [batches][rows][cols].
///
/// A tile spans `width` columns and `band` rows of one matrix: it reads `band` runs of `width`
/// contiguous floats and writes `width` runs of `band` contiguous floats, one per output row.
/// Few columns (the state's channels) make tall tiles, few rows (a gradient's channels) wide ones.
fn transpose_into(a: &[f32], [batches, rows, cols]: [usize; 3], out: &mut [MaybeUninit<f32>]) {
    assert_eq!(a.len(), batches * rows * cols, "the input holds [batches][rows][cols] floats");
    assert_eq!(out.len(), a.len(), "the output holds as many floats as the input");
    if a.is_empty() {
        return;
    }
    let width = cols.min(MIN_WIDTH.max(TILE / rows));
    let band = rows.min((TILE / width).max(1));
    // Each tile: where its first input row starts, and its run of each output row it writes.
    type Tile<'o> = (usize, Vec<&'o mut [MaybeUninit<f32>]>);
    let mut tiles: Vec<Tile<'_>> = Vec::with_capacity(batches * cols.div_ceil(width) * rows.div_ceil(band));
    for (batch, matrix) in out.chunks_mut(cols * rows).enumerate() {
        for (block, block_rows) in matrix.chunks_mut(width * rows).enumerate() {
            let first = tiles.len();
            tiles.extend((0..rows.div_ceil(band)).map(|index| {
                let start = (batch * rows + index * band) * cols + block * width;
                (start, Vec::with_capacity(width))
            }));
            for out_row in block_rows.chunks_mut(rows) {
                for ((_, runs), run) in tiles[first..].iter_mut().zip(out_row.chunks_mut(band)) {
                    runs.push(run);
                }
            }
        }
    }
    tiles.into_par_iter().for_each(|(start, mut runs)| {
        let (band, width) = (runs[0].len(), runs.len());
        // The tile's input rows, each `cols` apart; the last one cut after the tile's columns.
        let input = &a[start..start + (band - 1) * cols + width];
        for (column, run) in runs.iter_mut().enumerate() {
            for (out, row) in run.iter_mut().zip(input.chunks(cols)) {
                out.write(row[column]);
            }
        }
    });
}
