//! The sparse universe: the tile store, its step, and its dense views.

use std::collections::{BTreeSet, HashMap, HashSet};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::store::{indices, matter_counts, Pool, Source};
use super::vacuum::mix;
use super::{check_law, halo, MatterSeed, Region, SparseConfig, SparseStepReport, TileCoord, Vacuum};
use crate::complex::{self, Renormalization};
use crate::dynamics::step;
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::models::{check_gamma, Model};
use crate::observables::read_floats;

/// An unbounded universe of tiles over a deterministic vacuum, on a device.
#[derive(Debug, Clone)]
pub struct SparseUniverse<B: Backend> {
    config: SparseConfig,
    vacuum: Vacuum,
    device: B::Device,
    /// Stored tiles in the order of `tiles`' first axis.
    coords: Vec<TileCoord>,
    slots: HashMap<TileCoord, usize>,
    /// Matter cells of each stored tile.
    matter: Vec<usize>,
    /// [S, 2d, T, T]; `None` while nothing is stored.
    tiles: Option<Tensor<B, 4>>,
    step: u64,
}

impl<B: Backend> SparseUniverse<B> {
    /// An empty universe: the vacuum everywhere.
    pub fn new(config: SparseConfig, d_state: usize, device: &B::Device) -> Result<Self> {
        config.validate()?;
        if d_state == 0 {
            return Err(Error::InvalidSparse("d_state must be at least 1".into()));
        }
        let vacuum = Vacuum { seed: config.vacuum_seed, strength: config.vacuum_strength, d_state };
        Ok(Self {
            config,
            vacuum,
            device: device.clone(),
            coords: Vec::new(),
            slots: HashMap::new(),
            matter: Vec::new(),
            tiles: None,
            step: 0,
        })
    }

    /// How the universe is cut and what counts as matter.
    pub fn config(&self) -> &SparseConfig {
        &self.config
    }

    /// The vacuum everywhere nothing is stored.
    pub fn vacuum(&self) -> &Vacuum {
        &self.vacuum
    }

    /// Complex channels per cell.
    pub fn d_state(&self) -> usize {
        self.vacuum.d_state
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Tiles stored (holding matter).
    pub fn stored_tiles(&self) -> usize {
        self.coords.len()
    }

    /// The stored tiles' coordinates, sorted.
    pub fn stored_coords(&self) -> Vec<TileCoord> {
        let mut coords = self.coords.clone();
        coords.sort_unstable();
        coords
    }

    /// The universe as a step report: steps taken, tiles stored, matter cells (no tile evolved).
    pub fn status(&self) -> SparseStepReport {
        self.report_step(0)
    }

    fn report_step(&self, evolved_tiles: usize) -> SparseStepReport {
        SparseStepReport {
            step: self.step,
            evolved_tiles,
            stored_tiles: self.stored_tiles(),
            matter_cells: self.matter_cells(),
        }
    }

    /// Cells holding matter.
    pub fn matter_cells(&self) -> usize {
        self.matter.iter().sum()
    }

    /// Bytes of tile data held on the device.
    pub fn stored_bytes(&self) -> usize {
        self.coords.len() * 2 * self.d_state() * self.config.tile * self.config.tile * 4
    }

    /// The smallest region holding every stored tile, if any is stored.
    pub fn bounds(&self) -> Option<Region> {
        let t = self.config.tile as i64;
        let (i0, i1) = (self.coords.iter().map(|c| c.0).min()?, self.coords.iter().map(|c| c.0).max()?);
        let (j0, j1) = (self.coords.iter().map(|c| c.1).min()?, self.coords.iter().map(|c| c.1).max()?);
        Some(Region::new(i0 * t, j0 * t, ((i1 - i0 + 1) * t) as usize, ((j1 - j0 + 1) * t) as usize))
    }

    /// The sources of the tiles at `coords`: the store, or vacuum of the current step
    /// generated in one block for all that are not stored.
    fn pool(&self, coords: &[TileCoord]) -> Pool<B> {
        let mut sources: HashMap<TileCoord, Source> = HashMap::with_capacity(coords.len());
        let mut missing = Vec::new();
        for &coord in coords {
            if sources.contains_key(&coord) {
                continue;
            }
            let source = match self.slots.get(&coord) {
                Some(&row) => Source::Stored(row),
                None => {
                    missing.push(coord);
                    Source::Vacuum(missing.len() - 1)
                }
            };
            sources.insert(coord, source);
        }
        let vacuum = (!missing.is_empty())
            .then(|| self.vacuum.tiles::<B>(&missing, self.config.tile, self.step, &self.device));
        Pool { stored: self.tiles.clone(), vacuum, sources }
    }

    /// The universe over `region` as a dense grid [1, 2d, height, width] (stored tiles, the
    /// vacuum elsewhere), pasted from the visible parts of the covering tiles.
    pub fn to_dense(&self, region: Region) -> Result<Tensor<B, 4>> {
        region.check()?;
        let ((i0, j0), nx, ny) = region.tiles(self.config.tile);
        let t = self.config.tile as i64;
        let coords: Vec<TileCoord> =
            (0..ny as i64).flat_map(|j| (0..nx as i64).map(move |i| (i0 + i, j0 + j))).collect();
        let pool = self.pool(&coords);
        let pieces: Vec<_> =
            coords.iter().map(|&(i, j)| (0, (i, j), j * t - region.y, i * t - region.x)).collect();
        Ok(pool.paste(&pieces, 1, region.height, region.width))
    }

    /// Writes a dense grid [1, 2d, H, W] into the universe with its top-left cell at `(x, y)`.
    /// Tiles it leaves without matter are dropped; the rest of each partly covered tile keeps
    /// its content.
    pub fn from_dense(&mut self, grid: Tensor<B, 4>, x: i64, y: i64) -> Result<()> {
        let [batch, channels, height, width] = grid.dims();
        if batch != 1 || channels != 2 * self.d_state() {
            return Err(Error::InvalidSparse(format!(
                "a dense grid for this universe is [1, {}, H, W], got {:?}",
                2 * self.d_state(),
                grid.dims()
            )));
        }
        let region = Region::new(x, y, width, height);
        region.check()?;
        let ((i0, j0), nx, ny) = region.tiles(self.config.tile);
        let t = self.config.tile;
        let coords: Vec<TileCoord> =
            (0..ny as i64).flat_map(|j| (0..nx as i64).map(move |i| (i0 + i, j0 + j))).collect();
        // Each tile's top-left cell in the grid; the tiles the grid covers only in part keep
        // the rest of their content, from the store or the vacuum.
        let frames: Vec<(TileCoord, i64, i64)> =
            coords.iter().map(|&(i, j)| ((i, j), j * t as i64 - y, i * t as i64 - x)).collect();
        let (h, w, side) = (height as i64, width as i64, t as i64);
        let partial: Vec<TileCoord> = frames
            .iter()
            .filter(|&&(_, top, left)| top < 0 || left < 0 || top + side > h || left + side > w)
            .map(|&(coord, _, _)| coord)
            .collect();
        let pool = self.pool(&partial);
        let (tiles, counts) = match pool.cut_on_host(&grid, &frames, t, self.config.threshold) {
            Some(cut_and_counted) => cut_and_counted,
            None => pool.cut_with_slices(grid, &frames, t, self.config.threshold)?,
        };
        self.replace(&coords, tiles, counts);
        Ok(())
    }

    /// Replaces the tiles at `coords` (distinct) by `tiles` [N, 2d, T, T], storing those with
    /// matter.
    fn replace(&mut self, coords: &[TileCoord], tiles: Tensor<B, 4>, counts: Vec<usize>) {
        let replaced: HashSet<TileCoord> = coords.iter().copied().collect();
        let kept_old: Vec<usize> =
            (0..self.coords.len()).filter(|&slot| !replaced.contains(&self.coords[slot])).collect();
        let kept_new: Vec<usize> = (0..coords.len()).filter(|&index| counts[index] > 0).collect();

        let mut parts = Vec::with_capacity(2);
        if let (Some(old), false) = (&self.tiles, kept_old.is_empty()) {
            parts.push(if kept_old.len() == self.coords.len() {
                old.clone()
            } else {
                old.clone()
                    .select(0, indices::<B>(kept_old.iter().map(|&s| s as i64).collect(), &self.device))
            });
        }
        if !kept_new.is_empty() {
            parts.push(if kept_new.len() == coords.len() {
                tiles
            } else {
                tiles.select(0, indices::<B>(kept_new.iter().map(|&i| i as i64).collect(), &self.device))
            });
        }
        let new_coords: Vec<TileCoord> = kept_old
            .iter()
            .map(|&slot| self.coords[slot])
            .chain(kept_new.iter().map(|&index| coords[index]))
            .collect();
        let new_matter: Vec<usize> = kept_old
            .iter()
            .map(|&slot| self.matter[slot])
            .chain(kept_new.iter().map(|&index| counts[index]))
            .collect();
        self.tiles = match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Tensor::cat(parts, 0)),
        };
        self.slots = new_coords.iter().enumerate().map(|(slot, coord)| (*coord, slot)).collect();
        self.coords = new_coords;
        self.matter = new_matter;
    }

    /// Places blobs of matter: inside each disc, cells of independent complex normals
    /// normalised per cell (the dense engine's `random` state), drawn from `seed` and the
    /// blob's index; outside the discs, nothing changes.
    pub fn seed_matter(&mut self, seeds: &[MatterSeed], seed: u64) -> Result<()> {
        let d = self.d_state();
        for (index, blob) in seeds.iter().enumerate() {
            let region = blob.bounds();
            region.check()?;
            let mut data = read_floats(self.to_dense(region)?)?;
            let cells = region.cells();
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(index as u64 + 1)));
            for row in 0..region.height {
                for col in 0..region.width {
                    let (dx, dy) = (col as f64 - blob.radius.floor(), row as f64 - blob.radius.floor());
                    if dx * dx + dy * dy > blob.radius * blob.radius {
                        continue;
                    }
                    let values: Vec<f64> = (0..2 * d).map(|_| StandardNormal.sample(&mut rng)).collect();
                    let squared_norm = values.iter().map(|v| v * v).sum::<f64>();
                    let scale = complex::normalizer(squared_norm, Renormalization::default());
                    for (channel, value) in values.iter().enumerate() {
                        data[channel * cells + row * region.width + col] = (value * scale) as f32;
                    }
                }
            }
            let grid = Tensor::from_data(
                TensorData::new(data, [1, 2 * d, region.height, region.width]),
                &self.device,
            );
            self.from_dense(grid, region.x, region.y)?;
        }
        Ok(())
    }
}

impl<B: EngineBackend> SparseUniverse<B> {
    /// One step of `model` with decay `gamma` (see the module's description).
    pub fn step(&mut self, model: &Model<B>, gamma: f64) -> Result<SparseStepReport> {
        let config = &model.config;
        check_gamma(gamma)?;
        check_law(config)?;
        if config.d_state != self.d_state() {
            return Err(Error::InvalidSparse(format!(
                "the universe has d_state {} but the model expects {}",
                self.d_state(),
                config.d_state
            )));
        }
        let t = self.config.tile;
        let halo = halo(config.arch);
        // Tiles of context on each side of a window, and tiles within reach of matter.
        let rings = halo.div_ceil(t) as i64;
        let reach = config.arch.receptive_radius().div_ceil(t).max(1) as i64;

        let active: Vec<TileCoord> = self
            .coords
            .iter()
            .flat_map(|&(i, j)| {
                (-reach..=reach).flat_map(move |dj| (-reach..=reach).map(move |di| (i + di, j + dj)))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if active.is_empty() {
            self.step += 1;
            return Ok(self.report_step(0));
        }
        let neighbourhood = |&(i, j): &TileCoord| {
            (-rings..=rings).flat_map(move |dj| (-rings..=rings).map(move |di| (i + di, j + dj)))
        };
        let needed: Vec<TileCoord> = active.iter().flat_map(neighbourhood).collect();
        let pool = self.pool(&needed);

        let window = t + 2 * halo;
        let per_batch = (self.config.max_batch_cells / (window * window)).max(1);
        let mut interiors = Vec::with_capacity(active.len().div_ceil(per_batch));
        for batch in active.chunks(per_batch) {
            // Window g holds tile batch[g] with `halo` cells of its neighbours around it.
            let pieces: Vec<_> = batch
                .iter()
                .enumerate()
                .flat_map(|(group, &(i, j))| {
                    neighbourhood(&(i, j)).map(move |(ni, nj)| {
                        let top = (nj - j) * t as i64 + halo as i64;
                        let left = (ni - i) * t as i64 + halo as i64;
                        (group, (ni, nj), top, left)
                    })
                })
                .collect();
            let windows = pool.paste(&pieces, batch.len(), window, window);
            let next = step(model, gamma, windows, None).psi;
            interiors.push(next.narrow(2, halo, t).narrow(3, halo, t));
        }
        let evolved = Tensor::cat(interiors, 0);
        let counts = matter_counts(evolved.clone(), self.config.threshold)?;
        // Every stored tile is active, so the evolved tiles replace the whole store.
        self.replace(&active, evolved, counts);
        self.step += 1;
        Ok(self.report_step(active.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_regions_and_seeds() {
        assert_eq!("-3,4,16x8".parse::<Region>().unwrap(), Region::new(-3, 4, 16, 8));
        assert!("1,2,0x8".parse::<Region>().is_err());
        assert!("1,2".parse::<Region>().is_err());
        let seeds = MatterSeed::parse_list("0,0,8;1000000,-5,4.5").unwrap();
        assert_eq!(seeds[1], MatterSeed { x: 1_000_000, y: -5, radius: 4.5 });
        assert!(MatterSeed::parse_list("0,0").is_err());
        assert!(MatterSeed::parse_list("0,0,-1").is_err());
    }

    #[test]
    fn regions_are_covered_by_the_right_tiles() {
        assert_eq!(Region::new(-1, 0, 2, 8).tiles(8), ((-1, 0), 2, 1));
        assert_eq!(Region::new(-8, -9, 8, 1).tiles(8), ((-1, -2), 1, 1));
        assert_eq!(Region::new(5, 3, 12, 13).tiles(4), ((1, 0), 4, 4));
    }

    #[test]
    fn the_vacuum_has_unit_cells_with_the_lab_phase_spread() {
        let vacuum = Vacuum { seed: 3, strength: 0.1, d_state: 4 };
        let region = Region::new(-20, 7, 40, 30);
        let data = vacuum.host(region, 5);
        let cells = region.cells();
        let mut phases = Vec::new();
        for cell in 0..cells {
            let mut norm = 0.0f64;
            for c in 0..4 {
                let (re, im) = (data[c * cells + cell] as f64, data[(4 + c) * cells + cell] as f64);
                norm += re * re + im * im;
                assert!((re * re + im * im - 0.25).abs() < 1e-6);
                phases.push(im.atan2(re));
            }
            assert!((norm - 1.0).abs() < 1e-6);
        }
        let mean = phases.iter().sum::<f64>() / phases.len() as f64;
        let std = (phases.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / phases.len() as f64).sqrt();
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((std - 0.1).abs() < 0.005, "{std}");
    }
}
