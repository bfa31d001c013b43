//! Sparse universes: an unbounded grid that stores only the tiles holding matter, with the rest
//! of space a deterministic vacuum generated when it is needed.
//!
//! - Cells have integer coordinates `(x, y)` (column, row), unbounded in both directions. Space
//!   is cut into square tiles of [`SparseConfig::tile`] cells; tile `(i, j)` holds the cells
//!   `x` in `i*T .. (i+1)*T`, `y` in `j*T .. (j+1)*T`.
//! - A tile is stored while it holds matter: a cell whose channel densities `|psi_c|^2` differ
//!   from the vacuum's (exactly `1/d` each) by more than [`SparseConfig::threshold`] in L1
//!   distance. (The total density `sum_c |psi_c|^2` would tell nothing: every step renormalises
//!   it to 1 in every cell.)
//! - The vacuum at `(x, y)` after `step` steps is `exp(i * strength * n_c) / sqrt(d)` per channel
//!   `c`, with `n_c` a standard normal drawn from a counter-based hash of `(seed, x, y, step)`
//!   and the channel pair: the same wherever and whenever it is asked for. It is generated a
//!   whole tile or region at a time, on the host.
//! - One step evolves every stored tile and every tile within reach of one (the law's
//!   receptive radius, at least the eight neighbours). Each is cut out with a halo of
//!   [`halo`] cells, pasted from stored tiles and the vacuum, all windows go through the one
//!   [`crate::dynamics::step`] as a batch, the interiors are kept and the tiles that hold no
//!   matter are dropped. The model and the maths are the dense engine's; a window is a small
//!   dense universe.
//!
//! The U-Net's GroupNorm and RMSNorm normalise over the grid they are given, which here is one
//! window: a tile evolves exactly as a dense grid of its window would, while a dense run of a
//! large grid normalises over the whole grid. The per-cell MLP has no such coupling, and a
//! sparse region evolves exactly as the same region of a dense grid.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dynamics::step;
use crate::error::{Error, Result};
use crate::kernels::EngineBackend;
use crate::models::{check_gamma, Architecture, Model, ModelConfig};
use crate::observables::{matter_distance, read_floats};
use crate::state::{DEFAULT_NOISE_STRENGTH, NORM_EPSILON};

/// Tile side by default. The U-Net's halo is 32 cells, so a window costs (T + 64)^2 / T^2
/// times the tile: 4x at 64, 9x at 32.
pub const DEFAULT_TILE: usize = 64;

/// Default matter threshold: L1 distance of a cell's channel densities from the vacuum's.
/// The vacuum sits at 0 up to rounding (1e-7); a random complex state at about 0.7 (d = 8);
/// 0.01 means that one percent of the cell's probability has moved between channels.
pub const DEFAULT_MATTER_THRESHOLD: f64 = 0.01;

/// Largest region [`SparseUniverse::to_dense`] builds, in cells.
pub const MAX_DENSE_CELLS: usize = 1 << 26;

/// Coordinates stay within this bound so that no cell or tile arithmetic can overflow.
pub const MAX_COORDINATE: i64 = 1 << 60;

/// A tile's coordinates `(i, j)`: column and row, in tiles.
pub type TileCoord = (i64, i64);

/// How a sparse universe is cut and what counts as matter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SparseConfig {
    /// Tile side in cells, a multiple of 4 (the U-Net pools twice).
    pub tile: usize,
    /// A cell holds matter when the L1 distance of its channel densities from the vacuum's
    /// exceeds this.
    pub threshold: f64,
    /// Seed of the vacuum.
    pub vacuum_seed: u64,
    /// Phase-noise strength of the vacuum (the lab's 0.1).
    pub vacuum_strength: f64,
    /// Cells per batch of windows in a step (bounds the memory of one forward pass).
    pub max_batch_cells: usize,
}

impl Default for SparseConfig {
    fn default() -> Self {
        Self {
            tile: DEFAULT_TILE,
            threshold: DEFAULT_MATTER_THRESHOLD,
            vacuum_seed: 0,
            vacuum_strength: DEFAULT_NOISE_STRENGTH,
            max_batch_cells: 1 << 20,
        }
    }
}

impl SparseConfig {
    pub fn validate(&self) -> Result<()> {
        if self.tile < 4 || self.tile > 1024 || !self.tile.is_multiple_of(4) {
            return Err(Error::InvalidArgument(format!(
                "the tile side must be a multiple of 4 between 4 and 1024, got {}",
                self.tile
            )));
        }
        if !self.threshold.is_finite() || self.threshold <= 0.0 {
            return Err(Error::InvalidArgument(format!(
                "the matter threshold must be a positive number, got {}",
                self.threshold
            )));
        }
        if !self.vacuum_strength.is_finite() || self.vacuum_strength < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "the vacuum strength must be a non-negative number, got {}",
                self.vacuum_strength
            )));
        }
        if self.max_batch_cells == 0 {
            return Err(Error::InvalidArgument("max_batch_cells must be at least 1".into()));
        }
        Ok(())
    }
}

/// The halo a window needs around its tile: the law's receptive radius rounded up to a
/// multiple of 4, so that every window's pooling grid lines up with the tiles'.
pub fn halo(arch: Architecture) -> usize {
    arch.receptive_radius().div_ceil(4) * 4
}

/// Refuses the laws the sparse engine cannot step: the ConvLSTM U-Net's memory would need a
/// sparse store of its own.
pub fn check_law(config: &ModelConfig) -> Result<()> {
    if config.arch.has_memory() {
        return Err(Error::InvalidArgument(format!(
            "the sparse engine does not carry the {} model's ConvLSTM memory; use a dense run",
            config.arch
        )));
    }
    Ok(())
}

/// A rectangle of cells: columns `x .. x + width`, rows `y .. y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: i64,
    pub y: i64,
    pub width: usize,
    pub height: usize,
}

impl Region {
    pub fn new(x: i64, y: i64, width: usize, height: usize) -> Self {
        Self { x, y, width, height }
    }

    pub fn cells(&self) -> usize {
        self.width * self.height
    }

    /// Checks that the region is non-empty, not too large to hold densely, and far from
    /// the coordinate limits.
    pub fn check(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::InvalidArgument(format!("the region {self} is empty")));
        }
        if self.width.saturating_mul(self.height) > MAX_DENSE_CELLS {
            return Err(Error::InvalidArgument(format!(
                "the region {self} has more than {MAX_DENSE_CELLS} cells"
            )));
        }
        let inside =
            |v: i64, extent: usize| v.abs() < MAX_COORDINATE && (v + extent as i64).abs() < MAX_COORDINATE;
        if !inside(self.x, self.width) || !inside(self.y, self.height) {
            return Err(Error::InvalidArgument(format!(
                "the region {self} reaches beyond the coordinate limit of +-2^60"
            )));
        }
        Ok(())
    }

    /// The tiles covering the region: the first tile and the count across and down.
    fn tiles(&self, tile: usize) -> (TileCoord, usize, usize) {
        let t = tile as i64;
        let (i0, j0) = (self.x.div_euclid(t), self.y.div_euclid(t));
        let i1 = (self.x + self.width as i64 - 1).div_euclid(t);
        let j1 = (self.y + self.height as i64 - 1).div_euclid(t);
        ((i0, j0), (i1 - i0 + 1) as usize, (j1 - j0 + 1) as usize)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}x{}", self.x, self.y, self.width, self.height)
    }
}

impl FromStr for Region {
    type Err = Error;

    /// `X,Y,WxH`: the top-left cell and the size.
    fn from_str(text: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "a region is X,Y,WxH (top-left cell and size, e.g. -32,-32,64x64), got '{text}'"
            ))
        };
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [x, y, size] = parts.as_slice() else { return Err(bad()) };
        let (width, height) = size.split_once(['x', 'X']).ok_or_else(bad)?;
        let region = Region {
            x: x.parse().map_err(|_| bad())?,
            y: y.parse().map_err(|_| bad())?,
            width: width.parse().map_err(|_| bad())?,
            height: height.parse().map_err(|_| bad())?,
        };
        region.check()?;
        Ok(region)
    }
}

/// A blob of matter to place on the vacuum: random complex cells (normalised) inside a disc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatterSeed {
    pub x: i64,
    pub y: i64,
    pub radius: f64,
}

impl MatterSeed {
    /// Parses `x,y,radius[;x,y,radius...]`.
    pub fn parse_list(text: &str) -> Result<Vec<MatterSeed>> {
        text.split(';').filter(|part| !part.trim().is_empty()).map(str::parse).collect()
    }

    /// The cells within the disc's bounding box.
    fn bounds(&self) -> Region {
        let reach = self.radius.floor() as i64;
        let side = (2 * reach + 1) as usize;
        Region::new(self.x - reach, self.y - reach, side, side)
    }
}

impl FromStr for MatterSeed {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad =
            |why: &str| Error::InvalidArgument(format!("a matter seed is x,y,radius ({why}), got '{text}'"));
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [x, y, radius] = parts.as_slice() else { return Err(bad("three numbers")) };
        let x: i64 = x.parse().map_err(|_| bad("x is an integer"))?;
        let y: i64 = y.parse().map_err(|_| bad("y is an integer"))?;
        let radius: f64 = radius.parse().map_err(|_| bad("the radius is a number"))?;
        if !radius.is_finite() || !(0.0..=4096.0).contains(&radius) {
            return Err(bad("the radius is between 0 and 4096"));
        }
        let seed = MatterSeed { x, y, radius };
        seed.bounds().check()?;
        Ok(seed)
    }
}

// ---------------------------------------------------------------------------------------------
// The vacuum

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Two independent standard normals from 64 random bits (Box-Muller on the two 32-bit halves).
fn standard_normals(bits: u64) -> (f64, f64) {
    let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0; // (0, 1]
    let u2 = (bits & 0xffff_ffff) as f64 / 4_294_967_296.0; // [0, 1)
    let radius = (-2.0 * u1.ln()).sqrt();
    let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
    (radius * cos, radius * sin)
}

/// The deterministic vacuum of a sparse universe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vacuum {
    pub seed: u64,
    pub strength: f64,
    pub d_state: usize,
}

impl Vacuum {
    /// The random bits of channels `2p` and `2p + 1` of cell `(x, y)` after `step` steps.
    fn bits(cell: u64, pair: usize) -> u64 {
        mix(cell ^ (pair as u64).wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    /// The hash of cell `(x, y)` after `step` steps, from which its channels' bits derive.
    fn cell(&self, x: i64, y: i64, step: u64) -> u64 {
        mix(mix(mix(mix(self.seed ^ 0x9e37_79b9_7f4a_7c15) ^ x as u64) ^ y as u64) ^ step)
    }

    /// Writes the vacuum of `region` into `out`, channel-major [2d, height, width]: channel
    /// `c` of a cell is `exp(i strength n_c) / sqrt(d)`, the normals drawn two at a time.
    fn fill(&self, region: Region, step: u64, out: &mut [f32]) {
        let (d, cells) = (self.d_state, region.cells());
        // Every channel has modulus 1 before the per-cell normalisation, as the dense
        // engine's `complex-noise` state.
        let scale = 1.0 / ((d as f64).sqrt() + NORM_EPSILON);
        for row in 0..region.height {
            let y = region.y + row as i64;
            for col in 0..region.width {
                let cell = self.cell(region.x + col as i64, y, step);
                let index = row * region.width + col;
                for pair in 0..d.div_ceil(2) {
                    let (first, second) = standard_normals(Self::bits(cell, pair));
                    for (c, normal) in [(2 * pair, first), (2 * pair + 1, second)] {
                        if c < d {
                            let (sin, cos) = (self.strength * normal).sin_cos();
                            out[c * cells + index] = (cos * scale) as f32;
                            out[(d + c) * cells + index] = (sin * scale) as f32;
                        }
                    }
                }
            }
        }
    }

    /// The vacuum of `region` after `step` steps, channel-major [2d, height, width], generated
    /// in bands of rows in parallel.
    pub fn host(&self, region: Region, step: u64) -> Vec<f32> {
        const BAND: usize = 16;
        let bands: Vec<(Region, Vec<f32>)> = (0..region.height.div_ceil(BAND))
            .into_par_iter()
            .map(|band| {
                let rows = BAND.min(region.height - band * BAND);
                let part = Region::new(region.x, region.y + (band * BAND) as i64, region.width, rows);
                let mut data = vec![0.0f32; 2 * self.d_state * part.cells()];
                self.fill(part, step, &mut data);
                (part, data)
            })
            .collect();
        let cells = region.cells();
        let mut out = vec![0.0f32; 2 * self.d_state * cells];
        for (part, data) in bands {
            let offset = (part.y - region.y) as usize * region.width;
            for (plane, values) in data.chunks(part.cells()).enumerate() {
                out[plane * cells + offset..plane * cells + offset + part.cells()].copy_from_slice(values);
            }
        }
        out
    }

    /// The vacuum of `region` as a tensor [1, 2d, height, width].
    pub fn tensor<B: Backend>(&self, region: Region, step: u64, device: &B::Device) -> Tensor<B, 4> {
        let data = self.host(region, step);
        Tensor::from_data(TensorData::new(data, [1, 2 * self.d_state, region.height, region.width]), device)
    }

    /// The vacuum of whole tiles as a tensor [N, 2d, T, T], one tile per task.
    fn tiles<B: Backend>(
        &self,
        coords: &[TileCoord],
        tile: usize,
        step: u64,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let block = 2 * self.d_state * tile * tile;
        let mut data = vec![0.0f32; coords.len() * block];
        data.par_chunks_mut(block).zip(coords.par_iter()).for_each(|(out, &(i, j))| {
            let region = Region::new(i * tile as i64, j * tile as i64, tile, tile);
            self.fill(region, step, out);
        });
        Tensor::from_data(TensorData::new(data, [coords.len(), 2 * self.d_state, tile, tile]), device)
    }
}

// ---------------------------------------------------------------------------------------------
// Tiles <-> grids

/// Where the tiles a gather needs come from: stored tiles by their row in the store, the rest
/// from a block of vacuum tiles generated for the gather.
struct Pool<B: Backend> {
    stored: Option<Tensor<B, 4>>,
    vacuum: Option<Tensor<B, 4>>,
    sources: HashMap<TileCoord, Source>,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Stored(usize),
    Vacuum(usize),
}

impl<B: Backend> Pool<B> {
    /// Tile `coord` as [1, C, T, T] (a view, not a copy).
    fn tile(&self, coord: TileCoord) -> Tensor<B, 4> {
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
    fn paste(
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
fn cut<B: Backend>(grid: Tensor<B, 4>, tile: usize) -> Tensor<B, 4> {
    let [_, _, height, width] = grid.dims();
    let blocks = (0..height / tile)
        .flat_map(|j| (0..width / tile).map(move |i| (j, i)))
        .map(|(j, i)| grid.clone().narrow(2, j * tile, tile).narrow(3, i * tile, tile))
        .collect();
    Tensor::cat(blocks, 0)
}

/// Matter cells per tile of [N, 2d, T, T].
fn matter_counts<B: Backend>(tiles: Tensor<B, 4>, threshold: f64) -> Result<Vec<usize>> {
    let [n, _, t, _] = tiles.dims();
    let distance = matter_distance(tiles);
    // Counts of at most T^2 <= 2^20 cells are exact in f32.
    let counts = distance.greater_elem(threshold).float().reshape([n, t * t]).sum_dim(1);
    Ok(read_floats(counts)?.into_iter().map(|count| count as usize).collect())
}

fn indices<B: Backend>(values: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// What one sparse step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SparseStepReport {
    /// Steps taken after this one.
    pub step: u64,
    /// Tiles evolved by the law (stored ones and those within reach).
    pub evolved_tiles: usize,
    /// Tiles stored after the step (holding matter).
    pub stored_tiles: usize,
    /// Cells holding matter after the step.
    pub matter_cells: usize,
}

impl SparseStepReport {
    pub const CSV_HEADER: &'static str = "step,evolved_tiles,stored_tiles,matter_cells";

    pub fn csv_row(&self) -> String {
        format!("{},{},{},{}", self.step, self.evolved_tiles, self.stored_tiles, self.matter_cells)
    }
}

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
            return Err(Error::InvalidArgument("d_state must be at least 1".into()));
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

    pub fn config(&self) -> &SparseConfig {
        &self.config
    }

    pub fn vacuum(&self) -> &Vacuum {
        &self.vacuum
    }

    pub fn d_state(&self) -> usize {
        self.vacuum.d_state
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

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
            return Err(Error::InvalidArgument(format!(
                "a dense grid for this universe is [1, {}, H, W], got {:?}",
                2 * self.d_state(),
                grid.dims()
            )));
        }
        let region = Region::new(x, y, width, height);
        region.check()?;
        let ((i0, j0), nx, ny) = region.tiles(self.config.tile);
        let t = self.config.tile;
        let covering = Region::new(i0 * t as i64, j0 * t as i64, nx * t, ny * t);
        let (top, left) = ((y - covering.y) as usize, (x - covering.x) as usize);
        let full = if covering == region {
            grid
        } else {
            self.to_dense(covering)?
                .slice_assign([0..1, 0..channels, top..top + height, left..left + width], grid)
        };
        let coords: Vec<TileCoord> =
            (0..ny as i64).flat_map(|j| (0..nx as i64).map(move |i| (i0 + i, j0 + j))).collect();
        let tiles = cut(full, t);
        let counts = matter_counts(tiles.clone(), self.config.threshold)?;
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
                    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt() + NORM_EPSILON;
                    for (channel, value) in values.iter().enumerate() {
                        data[channel * cells + row * region.width + col] = (value / norm) as f32;
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
            return Err(Error::InvalidArgument(format!(
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
        let unitary = config.arch.is_unitary();
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
            let next = step(&model.law, unitary, gamma, windows, None).psi;
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
