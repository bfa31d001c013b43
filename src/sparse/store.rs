//! Moving tiles between the tile store and dense grids: cutting, pasting, counting matter.

use std::collections::HashMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::TileCoord;
use crate::error::Result;
use crate::kernels;
use crate::observables::{matter_distance, read_floats};
use rayon::prelude::*;

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
        match self.paste_on_host(pieces, groups, height, width) {
            Some(grids) => grids,
            None => self.paste_with_slices(pieces, groups, height, width),
        }
    }

    /// [`paste`](Self::paste) through burn's slice assignment, one tile at a time: any backend.
    fn paste_with_slices(
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
            let Some((y0, y1, x0, x1)) = visible(top, left, t, height, width) else {
                continue;
            };
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

    /// [`paste`](Self::paste) on the CPU backend: the grids' planes written in parallel, row
    /// by row from the tiles' rows (burn's slice assignment copies one tile at a time on one
    /// thread, into a grid zeroed first). `None` on other backends.
    fn paste_on_host(
        &self,
        pieces: &[(usize, TileCoord, i64, i64)],
        groups: usize,
        height: usize,
        width: usize,
    ) -> Option<Tensor<B, 4>> {
        let sample = self.stored.as_ref().or(self.vacuum.as_ref())?;
        let [_, channels, t, _] = sample.dims();
        let sources: Vec<&Tensor<B, 4>> = [&self.stored, &self.vacuum].into_iter().flatten().collect();
        let vacuum_index = usize::from(self.stored.is_some());
        let mut by_group = vec![Vec::new(); groups];
        for &(group, coord, top, left) in pieces {
            by_group[group].push((coord, top, left));
        }
        let plane = height * width;
        let data = kernels::cpu::host::with_host_data(&sources, |data| {
            let mut grids = vec![0.0f32; groups * channels * plane];
            grids.par_chunks_mut(plane).enumerate().for_each(|(index, target)| {
                let (group, channel) = (index / channels, index % channels);
                for &(coord, top, left) in &by_group[group] {
                    let Some((y0, y1, x0, x1)) = visible(top, left, t, height, width) else {
                        continue;
                    };
                    let (source, row) = match self.sources[&coord] {
                        Source::Stored(row) => (data[0], row),
                        Source::Vacuum(row) => (data[vacuum_index], row),
                    };
                    let tile = &source[(row * channels + channel) * t * t..][..t * t];
                    let (columns, from_x) = ((x1 - x0) as usize, (x0 - left) as usize);
                    for y in y0..y1 {
                        let from = ((y - top) as usize) * t + from_x;
                        let to = y as usize * width + x0 as usize;
                        target[to..to + columns].copy_from_slice(&tile[from..from + columns]);
                    }
                }
            });
            grids
        })?;
        kernels::cpu::host::from_host([groups, channels, height, width], data)
    }
}

/// The rows `y0..y1` and columns `x0..x1` of a height x width grid that a T x T tile with its
/// top-left cell at (`top`, `left`) covers; `None` when it covers none.
fn visible(top: i64, left: i64, t: usize, height: usize, width: usize) -> Option<(i64, i64, i64, i64)> {
    let (y0, y1) = (top.max(0), (top + t as i64).min(height as i64));
    let (x0, x1) = (left.max(0), (left + t as i64).min(width as i64));
    (y0 < y1 && x0 < x1).then_some((y0, y1, x0, x1))
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

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn the_host_paste_copies_what_the_slice_assignment_copies() {
        let device = Default::default();
        let (channels, t) = (3, 8);
        let stored = Tensor::<NdArray, 4>::random([4, channels, t, t], Distribution::Default, &device);
        let vacuum = Tensor::<NdArray, 4>::random([2, channels, t, t], Distribution::Default, &device);
        let sources: HashMap<TileCoord, Source> = [
            ((0, 0), Source::Stored(2)),
            ((1, 0), Source::Vacuum(1)),
            ((0, 1), Source::Stored(0)),
            ((1, 1), Source::Vacuum(0)),
        ]
        .into_iter()
        .collect();
        let pool = Pool { stored: Some(stored), vacuum: Some(vacuum), sources };
        // Two 10x13 grids covered by tiles clipped on every side, the second shifted.
        let mut pieces = Vec::new();
        for (group, (dy, dx)) in [(0usize, (-3i64, -2i64)), (1, (-5, -3))] {
            for (j, i) in [(0i64, 0i64), (0, 1), (1, 0), (1, 1)] {
                pieces.push((group, ((i + j) % 2, j), dy + j * t as i64, dx + i * t as i64));
            }
        }
        let host = pool.paste_on_host(&pieces, 2, 10, 13).expect("the CPU backend takes the host path");
        let sliced = pool.paste_with_slices(&pieces, 2, 10, 13);
        assert_eq!(host.dims(), [2, channels, 10, 13]);
        assert_eq!(host.into_data().to_vec::<f32>().unwrap(), sliced.into_data().to_vec::<f32>().unwrap());
    }
}
