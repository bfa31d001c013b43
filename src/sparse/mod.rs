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

mod region;
mod store;
mod universe;
mod vacuum;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::{Architecture, ModelConfig};
use crate::state::DEFAULT_NOISE_STRENGTH;

pub use region::{MatterSeed, Region};
pub use universe::SparseUniverse;
pub use vacuum::Vacuum;

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
    /// Checks every value a flag could get wrong.
    pub fn validate(&self) -> Result<()> {
        if self.tile < 4 || self.tile > 1024 || !self.tile.is_multiple_of(4) {
            return Err(Error::InvalidSparse(format!(
                "the tile side must be a multiple of 4 between 4 and 1024, got {}",
                self.tile
            )));
        }
        if !self.threshold.is_finite() || self.threshold <= 0.0 {
            return Err(Error::InvalidSparse(format!(
                "the matter threshold must be a positive number, got {}",
                self.threshold
            )));
        }
        if !self.vacuum_strength.is_finite() || self.vacuum_strength < 0.0 {
            return Err(Error::InvalidSparse(format!(
                "the vacuum strength must be a non-negative number, got {}",
                self.vacuum_strength
            )));
        }
        if self.max_batch_cells == 0 {
            return Err(Error::InvalidSparse("max_batch_cells must be at least 1".into()));
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
        return Err(Error::InvalidSparse(format!(
            "the sparse engine does not carry the {} model's ConvLSTM memory; use a dense run",
            config.arch
        )));
    }
    Ok(())
}

/// A rectangle of cells: columns `x .. x + width`, rows `y .. y + height`.

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
    /// The header of the sparse run's metrics CSV.
    pub const CSV_HEADER: &'static str = "step,evolved_tiles,stored_tiles,matter_cells";

    /// The CSV row of this report.
    pub fn csv_row(&self) -> String {
        format!("{},{},{},{}", self.step, self.evolved_tiles, self.stored_tiles, self.matter_cells)
    }
}
