//! Moving tiles between the tile store and dense grids: cutting, pasting, counting matter.

use std::collections::HashMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::TileCoord;
use crate::error::Result;
use crate::observables::{matter_distance, read_floats};

/// Where the tiles a gather needs come from: stored tiles by their row in the store, the rest
/// from a block of vacuum tiles generated for the gather.
pub(super) struct Pool<B: Backend> {
    pub(super) stored: Option<Tensor<B, 4>>,
    pub(super) vacuum: Option<Tensor<B, 4>>,
    pub(super) sources: HashMap<TileCoord, Source>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Stored(usize),
    Vacuum(usize),
}

impl<B: Backend> Pool<B> {
    /// Tile `coord` as [1, C, T, T] (a view, not a copy).
    pub(super) fn tile(&self, coord: TileCoord) -> Tensor<B, 4> {
        let (tensor, row) = match self.sources[&coord] {
            Source::Stored(row) => (&self.stored, row),
            Source::Vacuum(row) => (&self.vacuum, row),
        };
        tensor.as_ref().expect("a tile's source holds it").clone().narrow(0, row, 1)
    }

    /// Grids [groups, C, height, width] from tile pieces: each `(group, coord, top, left)`
    /// puts tile `coord` with its top-left cell at (`top`, `left`) of grid `group`, clipped to
    /// the grid; one slice copy per tile, nothing copied that the grids do not show. The pieces
    /// must cover every cell (the grids start uninitialised).
    pub(super) fn paste(
        &self,
        pieces: &[(usize, TileCoord, i64, i64)],
        groups: usize,
        height: usize,
        width: usize,
    ) -> Tensor<B, 4> {
        let sample = self.stored.as_ref().or(self.vacuum.as_ref()).expect("a gather has tiles");
        let [_, channels, t, _] = sample.dims();
        let mut grid = Tensor::empty([groups, channels, height, width], &sample.device());
        for &(group, coord, top, left) in pieces {
            let (y0, y1) = (top.max(0), (top + t as i64).min(height as i64));
            let (x0, x1) = (left.max(0), (left + t as i64).min(width as i64));
            if y0 >= y1 || x0 >= x1 {
                continue;
            }
            let piece = self.tile(coord).narrow(2, (y0 - top) as usize, (y1 - y0) as usize).narrow(
                3,
                (x0 - left) as usize,
                (x1 - x0) as usize,
            );
            let target = [group..group + 1, 0..channels, y0 as usize..y1 as usize, x0 as usize..x1 as usize];
            grid = grid.slice_assign(target, piece);
        }
        grid
    }
}

/// One grid [1, C, ny T, nx T] to its tiles [ny * nx, C, T, T], row-major.
pub(super) fn cut<B: Backend>(grid: Tensor<B, 4>, tile: usize) -> Tensor<B, 4> {
    let [_, _, height, width] = grid.dims();
    let blocks = (0..height / tile)
        .flat_map(|j| (0..width / tile).map(move |i| (j, i)))
        .map(|(j, i)| grid.clone().narrow(2, j * tile, tile).narrow(3, i * tile, tile))
        .collect();
    Tensor::cat(blocks, 0)
}

/// Matter cells per tile of [N, 2d, T, T].
pub(super) fn matter_counts<B: Backend>(tiles: Tensor<B, 4>, threshold: f64) -> Result<Vec<usize>> {
    let [n, _, t, _] = tiles.dims();
    let distance = matter_distance(tiles);
    // Counts of at most T^2 <= 2^20 cells are exact in f32.
    let counts = distance.greater_elem(threshold).float().reshape([n, t * t]).sum_dim(1);
    Ok(read_floats(counts)?.into_iter().map(|count| count as usize).collect())
}

pub(super) fn indices<B: Backend>(values: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}
