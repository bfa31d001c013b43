//! The vacuum: `exp(i * strength * n_c) / sqrt(d)` per channel, with `n_c` drawn from a
//! counter-based hash of `(seed, x, y, step)`, the same wherever and whenever it is asked for.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::{Region, TileCoord};
use crate::complex::{normalizer, Renormalization};

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Two independent standard normals from 64 random bits (Box-Muller on the two 32-bit halves).
pub(super) fn standard_normals(bits: u64) -> (f64, f64) {
    let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0; // (0, 1]
    let u2 = (bits & 0xffff_ffff) as f64 / 4_294_967_296.0; // [0, 1)
    let radius = (-2.0 * u1.ln()).sqrt();
    let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
    (radius * cos, radius * sin)
}

/// The deterministic vacuum of a sparse universe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vacuum {
    /// Which vacuum.
    pub seed: u64,
    /// The phase noise's strength.
    pub strength: f64,
    /// Complex channels per cell.
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
        let scale = normalizer(d as f64, Renormalization::default());
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
    pub(super) fn tiles<B: Backend>(
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
