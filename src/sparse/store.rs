//! Moving tiles between the tile store and dense grids: cutting, pasting, counting matter.

use std::collections::HashMap;
use std::mem::MaybeUninit;

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
        let device = sample.device();
        let sources: Vec<&Tensor<B, 4>> = [&self.stored, &self.vacuum].into_iter().flatten().collect();
        let vacuum_index = usize::from(self.stored.is_some());
        let mut by_group = vec![Vec::new(); groups];
        for &(group, coord, top, left) in pieces {
            by_group[group].push((coord, top, left));
        }
        let plane = height * width;
        let total = groups * channels * plane;
        // Written as zeros instead of zeroing every grid before the tiles are copied in.
        let gaps: Vec<_> = by_group.iter().map(|pieces| uncovered(pieces, t, height, width)).collect();
        let data = kernels::cpu::host::with_host_data(&sources, |data| {
            let mut grids: Vec<f32> = Vec::with_capacity(total);
            let cells = &mut grids.spare_capacity_mut()[..total];
            cells.par_chunks_mut(plane.max(1)).enumerate().for_each(|(index, target)| {
                let (group, channel) = (index / channels, index % channels);
                for &(y, x0, x1) in &gaps[group] {
                    target[y * width + x0..y * width + x1].fill(MaybeUninit::new(0.0));
                }
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
                        for (cell, &value) in
                            target[to..to + columns].iter_mut().zip(&tile[from..from + columns])
                        {
                            cell.write(value);
                        }
                    }
                }
            });
            // SAFETY: every cell of every grid was written above: it lies in one of its
            // group's gaps or in the visible part of one of its pieces (`uncovered`).
            unsafe { grids.set_len(total) };
            grids
        })?;
        Some(kernels::cpu::host::from_host([groups, channels, height, width], data, &device))
    }
}

impl<B: Backend> Pool<B> {
    /// On the CPU backend, the tiles at `frames` laid over `grid` [1, C, H, W], as
    /// [N, C, T, T] with the matter cells of each: every `(coord, top, left)` puts tile `coord`
    /// with its top-left cell at (`top`, `left`) of the grid; the cells the grid covers come from
    /// it, the rest from this pool's tile `coord`, which a tile the grid covers only in part must
    /// have. Tiles in parallel, each counted while it is in cache (burn's path slices, cuts and
    /// counts in a dozen passes over the whole grid). `None` on other backends.
    pub(super) fn cut_on_host(
        &self,
        grid: &Tensor<B, 4>,
        frames: &[(TileCoord, i64, i64)],
        t: usize,
        threshold: f64,
    ) -> Option<(Tensor<B, 4>, Vec<usize>)> {
        let [_, channels, height, width] = grid.dims();
        let mut sources = vec![grid];
        sources.extend([&self.stored, &self.vacuum].into_iter().flatten());
        let vacuum_index = 1 + usize::from(self.stored.is_some());
        let block = channels * t * t;
        let (data, counts) = kernels::cpu::host::with_host_data(&sources, |data| {
            let mut tiles = vec![0.0f32; frames.len() * block];
            let counts = tiles
                .par_chunks_mut(block)
                .zip(frames.par_iter())
                .map(|(out, &(coord, top, left))| {
                    let outside = self.sources.get(&coord).map(|&source| {
                        let (tensor, row) = match source {
                            Source::Stored(row) => (data[1], row),
                            Source::Vacuum(row) => (data[vacuum_index], row),
                        };
                        &tensor[row * block..][..block]
                    });
                    let inside = visible(top, left, t, height, width);
                    for (channel, out) in out.chunks_mut(t * t).enumerate() {
                        let plane = &data[0][channel * height * width..][..height * width];
                        let outside = outside.map(|tile| &tile[channel * t * t..][..t * t]);
                        for (y, row) in out.chunks_mut(t).enumerate() {
                            let grid_y = top + y as i64;
                            let (x0, x1) = match inside {
                                Some((y0, y1, x0, x1)) if (y0..y1).contains(&grid_y) => {
                                    ((x0 - left) as usize, (x1 - left) as usize)
                                }
                                _ => (0, 0),
                            };
                            if x0 > 0 || x1 < t {
                                let outside = outside.expect("a partly covered tile is in the pool");
                                row.copy_from_slice(&outside[y * t..][..t]);
                            }
                            if x0 < x1 {
                                let from = grid_y as usize * width + (left + x0 as i64) as usize;
                                row[x0..x1].copy_from_slice(&plane[from..from + (x1 - x0)]);
                            }
                        }
                    }
                    count_matter(out, channels / 2, t * t, threshold)
                })
                .collect();
            (tiles, counts)
        })?;
        let tiles = kernels::cpu::host::from_host([frames.len(), channels, t, t], data, &grid.device());
        Some((tiles, counts))
    }
}

impl<B: Backend> Pool<B> {
    /// [`cut_on_host`](Self::cut_on_host) through burn's slice operations, for any backend;
    /// `frames` must be row-major over a rectangle of tiles.
    pub(super) fn cut_with_slices(
        &self,
        grid: Tensor<B, 4>,
        frames: &[(TileCoord, i64, i64)],
        t: usize,
        threshold: f64,
    ) -> Result<(Tensor<B, 4>, Vec<usize>)> {
        let [_, channels, height, width] = grid.dims();
        let side = t as i64;
        let (top, left) =
            (frames.iter().map(|f| f.1).min().unwrap_or(0), frames.iter().map(|f| f.2).min().unwrap_or(0));
        let rows = (frames.iter().map(|f| f.1).max().unwrap_or(0) - top + side) as usize;
        let columns = (frames.iter().map(|f| f.2).max().unwrap_or(0) - left + side) as usize;
        let partial: Vec<_> = frames
            .iter()
            .filter(|&&(_, y, x)| y < 0 || x < 0 || y + side > height as i64 || x + side > width as i64)
            .map(|&(coord, y, x)| (0, coord, y - top, x - left))
            .collect();
        let full = if partial.is_empty() {
            grid
        } else {
            let (y0, x0) = ((-top) as usize, (-left) as usize);
            // The cells under the grid are left unset by the paste and set by the grid.
            self.paste(&partial, 1, rows, columns)
                .slice_assign([0..1, 0..channels, y0..y0 + height, x0..x0 + width], grid)
        };
        let tiles = cut(full, t);
        let counts = matter_counts(tiles.clone(), threshold)?;
        Ok((tiles, counts))
    }
}

/// Matter cells of one tile, channel-major [2d, cells]: the cells whose L1 distance of channel
/// densities from `1/d` exceeds `threshold`, summed over the channels in order in f32 as
/// [`matter_distance`] sums them, so both paths agree to the bit.
fn count_matter(tile: &[f32], d: usize, cells: usize, threshold: f64) -> usize {
    let (vacuum, threshold) = ((1.0 / d as f64) as f32, threshold as f32);
    let mut distance = vec![0.0f32; cells];
    for channel in 0..d {
        let (re, im) = (&tile[channel * cells..][..cells], &tile[(d + channel) * cells..][..cells]);
        for ((sum, &re), &im) in distance.iter_mut().zip(re).zip(im) {
            *sum += (re * re + im * im - vacuum).abs();
        }
    }
    distance.iter().filter(|&&sum| sum > threshold).count()
}

/// The rows `y0..y1` and columns `x0..x1` of a height x width grid that a T x T tile with its
/// top-left cell at (`top`, `left`) covers; `None` when it covers none.
fn visible(top: i64, left: i64, t: usize, height: usize, width: usize) -> Option<(i64, i64, i64, i64)> {
    let (y0, y1) = (top.max(0), (top + t as i64).min(height as i64));
    let (x0, x1) = (left.max(0), (left + t as i64).min(width as i64));
    (y0 < y1 && x0 < x1).then_some((y0, y1, x0, x1))
}

/// The cells of a height x width grid that none of the T x T tiles with their top-left cells
/// at `pieces`' (top, left) covers, as runs `(row, x0, x1)`. Rows are taken in bands between
/// the tiles' edges, within which the same tiles cover every row.
fn uncovered(
    pieces: &[(TileCoord, i64, i64)],
    t: usize,
    height: usize,
    width: usize,
) -> Vec<(usize, usize, usize)> {
    let spans: Vec<_> =
        pieces.iter().filter_map(|&(_, top, left)| visible(top, left, t, height, width)).collect();
    let mut edges: Vec<i64> =
        spans.iter().flat_map(|&(y0, y1, _, _)| [y0, y1]).chain([0, height as i64]).collect();
    edges.sort_unstable();
    edges.dedup();
    let mut gaps = Vec::new();
    let mut covered = Vec::new();
    for band in edges.windows(2) {
        let (y0, y1) = (band[0], band[1]);
        covered.clear();
        covered.extend(spans.iter().filter(|span| span.0 <= y0 && y1 <= span.1).map(|span| (span.2, span.3)));
        covered.sort_unstable();
        let mut runs = Vec::new();
        let mut x = 0;
        for &(x0, x1) in &covered {
            if x0 > x {
                runs.push((x as usize, x0 as usize));
            }
            x = x.max(x1);
        }
        if x < width as i64 {
            runs.push((x as usize, width));
        }
        for y in y0 as usize..y1 as usize {
            gaps.extend(runs.iter().map(|&(x0, x1)| (y, x0, x1)));
        }
    }
    gaps
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
    let [_, channels, t, _] = tiles.dims();
    let block = channels * t * t;
    let on_host = kernels::cpu::host::with_host_data(&[&tiles], |data| {
        data[0].par_chunks(block).map(|tile| count_matter(tile, channels / 2, t * t, threshold)).collect()
    });
    match on_host {
        Some(counts) => Ok(counts),
        None => matter_counts_composed(tiles, threshold),
    }
}

/// [`matter_counts`] in burn's tensor operations: any backend.
fn matter_counts_composed<B: Backend>(tiles: Tensor<B, 4>, threshold: f64) -> Result<Vec<usize>> {
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
        // Two 10x13 grids covered by tiles clipped on every side, the second shifted; a third
        // with two tiles on a diagonal and one overlapping them, the rest of it left zero.
        let mut pieces = Vec::new();
        for (group, (dy, dx)) in [(0usize, (-3i64, -2i64)), (1, (-5, -3))] {
            for (j, i) in [(0i64, 0i64), (0, 1), (1, 0), (1, 1)] {
                pieces.push((group, ((i + j) % 2, j), dy + j * t as i64, dx + i * t as i64));
            }
        }
        pieces.extend([(2, (0, 0), -3, -2), (2, (1, 1), 5, 6), (2, (1, 0), 2, 3)]);
        let host = pool.paste_on_host(&pieces, 3, 10, 13).expect("the CPU backend takes the host path");
        let sliced = pool.paste_with_slices(&pieces, 3, 10, 13);
        assert_eq!(host.dims(), [3, channels, 10, 13]);
        assert_eq!(host.into_data().to_vec::<f32>().unwrap(), sliced.into_data().to_vec::<f32>().unwrap());
    }

    #[test]
    fn the_gaps_are_exactly_the_cells_no_tile_covers() {
        let t = 8;
        let layouts: [&[(i64, i64)]; 4] =
            [&[(-3, -2), (5, 6), (2, 3)], &[(0, 0), (0, 8), (8, 0), (8, 8)], &[], &[(20, 20), (-9, 0)]];
        for (tops_and_lefts, (height, width)) in
            layouts.into_iter().zip([(10, 13), (16, 16), (3, 4), (12, 9)])
        {
            let pieces: Vec<_> = tops_and_lefts.iter().map(|&(top, left)| ((0, 0), top, left)).collect();
            let mut gap_cells = vec![false; height * width];
            for (y, x0, x1) in uncovered(&pieces, t, height, width) {
                for x in x0..x1 {
                    assert!(!gap_cells[y * width + x], "({y}, {x}) listed twice");
                    gap_cells[y * width + x] = true;
                }
            }
            for y in 0..height as i64 {
                for x in 0..width as i64 {
                    let covered = pieces.iter().any(|&(_, top, left)| {
                        (top..top + t as i64).contains(&y) && (left..left + t as i64).contains(&x)
                    });
                    assert_eq!(gap_cells[(y * width as i64 + x) as usize], !covered, "({y}, {x})");
                }
            }
        }
    }

    fn floats(tensor: Tensor<NdArray, 4>) -> Vec<f32> {
        tensor.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn the_host_cut_matches_the_slice_cut_and_count() {
        let device = Default::default();
        let (channels, t, threshold) = (6, 8, 0.6);
        let stored = Tensor::<NdArray, 4>::random([3, channels, t, t], Distribution::Default, &device);
        let vacuum = Tensor::<NdArray, 4>::random([5, channels, t, t], Distribution::Default, &device);
        // A 20x20 grid with its top-left cell at (4, 4) of a 3x3 cover of 8x8 tiles: the
        // middle tile inside it, the eight around it partly covered, some stored, some vacuum.
        let grid = Tensor::<NdArray, 4>::random([1, channels, 20, 20], Distribution::Default, &device);
        let coords: Vec<TileCoord> = (0..3).flat_map(|j| (0..3).map(move |i| (i, j))).collect();
        let partial: Vec<TileCoord> = coords.iter().copied().filter(|&coord| coord != (1, 1)).collect();
        let sources = partial
            .iter()
            .enumerate()
            .map(|(k, &coord)| {
                (coord, if k % 3 == 0 { Source::Stored(k / 3) } else { Source::Vacuum(k % 5) })
            })
            .collect();
        let pool = Pool { stored: Some(stored), vacuum: Some(vacuum), sources };
        let frames: Vec<_> = coords.iter().map(|&(i, j)| ((i, j), j * 8 - 4, i * 8 - 4)).collect();
        let (tiles, counts) = pool.cut_on_host(&grid, &frames, t, threshold).expect("the CPU backend's path");

        let (expected, expected_counts) = pool.cut_with_slices(grid, &frames, t, threshold).unwrap();
        assert_eq!(floats(tiles.clone()), floats(expected.clone()));
        assert_eq!(counts, expected_counts);
        assert_eq!(
            matter_counts(tiles, threshold).unwrap(),
            matter_counts_composed(expected.clone(), threshold).unwrap()
        );
        // Uniform values in [0, 1) put some cells on each side of the threshold.
        assert!(counts.iter().any(|&count| count > 0 && count < t * t), "{counts:?}");
    }
}
