//! The vacuum: `exp(i * strength * n_c) / sqrt(d)` per channel, with `n_c` drawn from a
//! counter-based hash of `(seed, x, y, step)`, the same wherever and whenever it is asked for.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::{Region, TileCoord};
use crate::complex::{normalizer, Renormalization};
use crate::kernels::cpu::host::from_host;

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
    let (sin, cos) = sin_cos(std::f64::consts::TAU * u2);
    (radius * cos, radius * sin)
}

/// `(sin x, cos x)`. With glibc, one `sincos` call: the same code as its `sin` and `cos`, so the
/// same values, for about the cost of one (Rust's `f64::sin_cos` is the two calls, which the
/// compiler merges only sometimes); elsewhere `f64::sin_cos`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sin_cos(x: f64) -> (f64, f64) {
    extern "C" {
        fn sincos(x: f64, sin: *mut f64, cos: *mut f64);
    }
    let (mut sin, mut cos) = (0.0, 0.0);
    // SAFETY: glibc's libm (linked by std on this target) defines `sincos`, which writes one
    // f64 through each pointer; both point to live locals.
    unsafe { sincos(x, &mut sin, &mut cos) };
    (sin, cos)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn sin_cos(x: f64) -> (f64, f64) {
    x.sin_cos()
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
                            let (sin, cos) = sin_cos(self.strength * normal);
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
        out.par_chunks_mut(cells).enumerate().for_each(|(plane, out)| {
            for (part, data) in &bands {
                let offset = (part.y - region.y) as usize * region.width;
                out[offset..offset + part.cells()]
                    .copy_from_slice(&data[plane * part.cells()..][..part.cells()]);
            }
        });
        out
    }

    /// The vacuum of `region` as a tensor [1, 2d, height, width].
    pub fn tensor<B: Backend>(&self, region: Region, step: u64, device: &B::Device) -> Tensor<B, 4> {
        let data = self.host(region, step);
        from_host([1, 2 * self.d_state, region.height, region.width], data, device)
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
        from_host([coords.len(), 2 * self.d_state, tile, tile], data, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vacuum's values must not depend on which sine routine computed them.
    #[test]
    fn sin_cos_gives_the_values_of_sin_and_cos() {
        for k in 0..200_000u64 {
            let bits = mix(k);
            // Box-Muller's angles in [0, 2 pi) and phases of normals up to a few units.
            let x = (bits >> 11) as f64 / (1u64 << 53) as f64 * 40.0 - 20.0;
            assert_eq!(sin_cos(x), (x.sin(), x.cos()), "x = {x:e}");
        }
    }
}
