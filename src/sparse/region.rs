//! Rectangular regions of the unbounded grid and the blobs of matter that seed it.

use std::fmt;
use std::str::FromStr;

use super::{TileCoord, MAX_COORDINATE, MAX_DENSE_CELLS};
use crate::error::{Error, Result};

/// A rectangle of cells: columns `x .. x + width`, rows `y .. y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The leftmost column.
    pub x: i64,
    /// The top row.
    pub y: i64,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Region {
    /// The region with top-left cell (x, y).
    pub fn new(x: i64, y: i64, width: usize, height: usize) -> Self {
        Self { x, y, width, height }
    }

    /// Cells in the region.
    pub fn cells(&self) -> usize {
        self.width * self.height
    }

    /// Checks that the region is non-empty, not too large to hold densely, and far from
    /// the coordinate limits.
    pub fn check(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::InvalidSparse(format!("the region {self} is empty")));
        }
        if self.width.saturating_mul(self.height) > MAX_DENSE_CELLS {
            return Err(Error::InvalidSparse(format!(
                "the region {self} has more than {MAX_DENSE_CELLS} cells"
            )));
        }
        // Checked arithmetic: a client may send any i64 (i64::MIN has no absolute value).
        let below = |v: i64| v.checked_abs().is_some_and(|magnitude| magnitude < MAX_COORDINATE);
        let inside = |v: i64, extent: usize| {
            below(v) && i64::try_from(extent).ok().and_then(|extent| v.checked_add(extent)).is_some_and(below)
        };
        if !inside(self.x, self.width) || !inside(self.y, self.height) {
            return Err(Error::InvalidSparse(format!(
                "the region {self} reaches beyond the coordinate limit of +-2^60"
            )));
        }
        Ok(())
    }

    /// The tiles covering the region: the first tile and the count across and down.
    pub(super) fn tiles(&self, tile: usize) -> (TileCoord, usize, usize) {
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
            Error::InvalidSparse(format!(
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
    /// The centre's column.
    pub x: i64,
    /// The centre's row.
    pub y: i64,
    /// The disc's radius in cells.
    pub radius: f64,
}

impl MatterSeed {
    /// Parses `x,y,radius[;x,y,radius...]`.
    pub fn parse_list(text: &str) -> Result<Vec<MatterSeed>> {
        text.split(';').filter(|part| !part.trim().is_empty()).map(str::parse).collect()
    }

    /// The cells within the disc's bounding box.
    pub(super) fn bounds(&self) -> Region {
        let reach = self.radius.floor() as i64;
        let side = (2 * reach + 1) as usize;
        Region::new(self.x.saturating_sub(reach), self.y.saturating_sub(reach), side, side)
    }
}

impl FromStr for MatterSeed {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad =
            |why: &str| Error::InvalidSparse(format!("a matter seed is x,y,radius ({why}), got '{text}'"));
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
