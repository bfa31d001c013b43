//! Measures of a living universe: do its structures still change, is it structured (neither a
//! uniform field nor white noise), does it merely repeat, and do its structures last. What
//! `atheria eval` reports beside the loss, to tell a universe worth watching from one that froze
//! into stripes or dissolved into noise.
//!
//! Every measure reads the channel densities `p_c = |psi_c|^2 / sum_c |psi_c|^2` of consecutive
//! states of one universe (gauge-invariant: a global phase changes none of them). With
//! `TV(a, b) = 1/2 sum_c |a_c - b_c|` the total variation between two cells' distributions (0
//! to 1) and the *dominant map* the index of each cell's largest channel:
//!
//! | measure | definition | frozen | white noise |
//! |---|---|---|---|
//! | `activity` | mean over consecutive states and cells of `TV(p(t), p(t+1))` | 0 | large (1/3 for two uniform channels) |
//! | `structure` | mean over states of `H x R`: `H` the entropy of the dominant map's histogram over `log2 d`, `R = 1 - deflate(map) / deflate(map shuffled)` its spatial redundancy (clamped to 0..1) | 0 for a uniform field | about 0 |
//! | `period` | the smallest `k` in 1..=[`MAX_PERIOD`] with mean `TV(p(t), p(t+k)) <= ` [`PERIOD_TOLERANCE`] | 1 | none |
//! | `persistence` | mean over consecutive states of the fraction of regions (4-connected cells of one dominant channel, at least [`MIN_REGION`] cells) that have a region of the same channel overlapping them with IoU >= 1/2 in the next state | 1 | about 0 |
//!
//! The score is `activity / (activity + ACTIVITY_SCALE) x structure x persistence`, and 0 for
//! a universe with a short period: 0 for a frozen, a blinking or a noisy universe, highest for
//! lasting structures that move.

use std::collections::HashMap;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::Result;

/// States measured at the end of a rollout (`atheria eval`).
pub const WINDOW: usize = 32;

/// The longest period counted as trivially periodic, in steps.
pub const MAX_PERIOD: usize = 8;
/// Mean total variation below which two states count as the same (f32 rounding is far below).
pub const PERIOD_TOLERANCE: f64 = 1e-4;
/// The activity at which the score's activity factor is one half.
pub const ACTIVITY_SCALE: f64 = 0.01;
/// The fewest cells a region must have to be tracked.
pub const MIN_REGION: usize = 4;

/// The channel densities of one universe at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct DensityFrame {
    /// Grid rows.
    pub height: usize,
    /// Grid columns.
    pub width: usize,
    /// Channels `d`.
    pub channels: usize,
    /// `p_c` per cell, [d, H, W] row-major; each cell's channels sum to 1.
    pub densities: Vec<f32>,
}

impl DensityFrame {
    fn cells(&self) -> usize {
        self.height * self.width
    }

    /// `TV` between this frame's cell and `other`'s, averaged over cells.
    fn mean_variation(&self, other: &DensityFrame) -> f64 {
        let cells = self.cells();
        let total: f64 = self.densities.iter().zip(&other.densities).map(|(a, b)| (a - b).abs() as f64).sum();
        0.5 * total / cells.max(1) as f64
    }

    /// The index of each cell's largest channel, [H, W].
    fn dominant(&self) -> Vec<u8> {
        let cells = self.cells();
        (0..cells)
            .map(|cell| {
                let mut best = 0;
                for channel in 1..self.channels {
                    if self.densities[channel * cells + cell] > self.densities[best * cells + cell] {
                        best = channel;
                    }
                }
                best as u8
            })
            .collect()
    }
}

/// The channel densities of every universe of `psi` (one read-back).
///
/// # Shapes
/// - `psi`: [B, 2d, H, W]; one frame per universe.
pub fn density_frames<B: Backend>(psi: Tensor<B, 4>) -> Result<Vec<DensityFrame>> {
    let [batch, two_d, height, width] = psi.dims();
    let channels = two_d / 2;
    let values = crate::readback::floats(crate::observables::probabilities(psi))?;
    let per = channels * height * width;
    Ok((0..batch)
        .map(|universe| DensityFrame {
            height,
            width,
            channels,
            densities: values[universe * per..(universe + 1) * per].to_vec(),
        })
        .collect())
}

/// The measures of one universe over consecutive states.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LifeMeasures {
    /// Mean change of the channel densities per step (0 when frozen).
    pub activity: f64,
    /// Between 0 (uniform or white noise) and 1 (rich, spatially coherent patterns).
    pub structure: f64,
    /// The shortest period up to [`MAX_PERIOD`] steps, when the universe repeats.
    pub period: Option<usize>,
    /// The fraction of regions that survive from one step to the next.
    pub persistence: f64,
    /// The combined score (see the module's documentation).
    pub score: f64,
}

/// Measures `frames`, consecutive states of one universe (at least two, all of one shape).
pub fn measure(frames: &[DensityFrame]) -> LifeMeasures {
    let pairs = frames.len().saturating_sub(1).max(1) as f64;
    let activity = frames.windows(2).map(|pair| pair[0].mean_variation(&pair[1])).sum::<f64>() / pairs;
    let maps: Vec<Vec<u8>> = frames.iter().map(DensityFrame::dominant).collect();
    let structure = maps.iter().map(|map| structure_of(map, frames[0].channels)).sum::<f64>()
        / frames.len().max(1) as f64;
    let period = (1..=MAX_PERIOD).filter(|&k| frames.len() > k).find(|&k| {
        let repeats = frames.len() - k;
        let variation: f64 = (0..repeats).map(|t| frames[t].mean_variation(&frames[t + k])).sum();
        variation / repeats as f64 <= PERIOD_TOLERANCE
    });
    let regions: Vec<Regions> =
        frames.iter().zip(&maps).map(|(frame, map)| Regions::of(map, frame.height, frame.width)).collect();
    let persistence = regions.windows(2).map(|pair| pair[0].surviving_in(&pair[1])).sum::<f64>() / pairs;
    let score = match period {
        Some(_) => 0.0,
        None => activity / (activity + ACTIVITY_SCALE) * structure * persistence,
    };
    LifeMeasures { activity, structure, period, persistence, score }
}

/// `H x R` of a frame's dominant map, [H, W] of channel indices below `channels`.
fn structure_of(map: &[u8], channels: usize) -> f64 {
    if channels < 2 {
        return 0.0;
    }
    let mut counts = vec![0usize; channels];
    for &channel in map {
        counts[channel as usize] += 1;
    }
    let cells = map.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / cells;
            p * (1.0 / p).log2()
        })
        .sum::<f64>()
        / (channels as f64).log2();
    let mut shuffled = map.to_vec();
    shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(0));
    let size = |bytes: &[u8]| miniz_oxide::deflate::compress_to_vec(bytes, 9).len() as f64;
    let redundancy = (1.0 - size(map) / size(&shuffled)).clamp(0.0, 1.0);
    entropy * redundancy
}

/// The tracked regions of one frame: a label per cell (`usize::MAX` outside them), each
/// label's channel and size.
struct Regions {
    labels: Vec<usize>,
    channels: Vec<u8>,
    sizes: Vec<usize>,
}

impl Regions {
    /// 4-connected components of equal dominant channel in `map` [height, width] (without
    /// wrapping), those of at least [`MIN_REGION`] cells labelled.
    fn of(map: &[u8], height: usize, width: usize) -> Self {
        let mut component = vec![usize::MAX; map.len()];
        let mut members: Vec<Vec<usize>> = Vec::new();
        for start in 0..map.len() {
            if component[start] != usize::MAX {
                continue;
            }
            let id = members.len();
            let mut cells = vec![start];
            component[start] = id;
            let mut next = 0;
            while next < cells.len() {
                let cell = cells[next];
                next += 1;
                let (row, column) = (cell / width, cell % width);
                let neighbours = [
                    (row > 0).then(|| cell - width),
                    (row + 1 < height).then(|| cell + width),
                    (column > 0).then(|| cell - 1),
                    (column + 1 < width).then(|| cell + 1),
                ];
                for neighbour in neighbours.into_iter().flatten() {
                    if component[neighbour] == usize::MAX && map[neighbour] == map[start] {
                        component[neighbour] = id;
                        cells.push(neighbour);
                    }
                }
            }
            members.push(cells);
        }
        let mut regions = Regions { labels: vec![usize::MAX; map.len()], channels: vec![], sizes: vec![] };
        for cells in members.into_iter().filter(|cells| cells.len() >= MIN_REGION) {
            let label = regions.sizes.len();
            regions.channels.push(map[cells[0]]);
            regions.sizes.push(cells.len());
            for cell in cells {
                regions.labels[cell] = label;
            }
        }
        regions
    }

    /// The fraction of these regions overlapped by a region of the same channel in `next`
    /// with IoU >= 1/2 (1 when there is none to track).
    fn surviving_in(&self, next: &Regions) -> f64 {
        if self.sizes.is_empty() {
            return 1.0;
        }
        let mut overlaps: HashMap<(usize, usize), usize> = HashMap::new();
        for (&here, &there) in self.labels.iter().zip(&next.labels) {
            if here != usize::MAX && there != usize::MAX && self.channels[here] == next.channels[there] {
                *overlaps.entry((here, there)).or_default() += 1;
            }
        }
        let mut survived = vec![false; self.sizes.len()];
        for ((here, there), overlap) in overlaps {
            let union = self.sizes[here] + next.sizes[there] - overlap;
            if 2 * overlap >= union {
                survived[here] = true;
            }
        }
        survived.iter().filter(|&&kept| kept).count() as f64 / self.sizes.len() as f64
    }
}

#[cfg(test)]
mod tests;
