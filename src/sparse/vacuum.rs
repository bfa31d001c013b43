//! The vacuum: `exp(i * strength * n_c) / sqrt(d)` per channel, with `n_c` drawn from a
//! counter-based hash of `(seed, x, y, step)`, the same wherever and whenever it is asked for.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::{Region, TileCoord};
use crate::complex::{normalizer, Renormalization};
use crate::kernels::cpu::host::from_host;
use crate::kernels::sin_cos_f64;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Box-Muller's polar form of 64 random bits, from their two 32-bit halves: the radius
/// `sqrt(-2 ln u1)` and the angle `2 pi u2` of two independent standard normals
/// `(radius cos angle, radius sin angle)`.
fn polar(bits: u64) -> (f64, f64) {
    let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0; // (0, 1]
    let u2 = (bits & 0xffff_ffff) as f64 / 4_294_967_296.0; // [0, 1)
    ((-2.0 * u1.ln()).sqrt(), std::f64::consts::TAU * u2)
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
    /// `c` of a cell is `exp(i strength n_c) / sqrt(d)`, the normals drawn two at a time. The
    /// sines and cosines are taken a row of cells at a time, vectorised.
    fn fill(&self, region: Region, step: u64, out: &mut [f32]) {
        let (d, cells) = (self.d_state, region.cells());
        let pairs = d.div_ceil(2);
        // Every channel has modulus 1 before the per-cell normalisation, as the dense
        // engine's `complex-noise` state.
        let scale = normalizer(d as f64, Renormalization::default());
        let n = region.width * pairs;
        let (mut radius, mut angle, mut sin, mut cos) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let (mut phase, mut phase_sin, mut phase_cos) =
            (vec![0.0; 2 * n], vec![0.0; 2 * n], vec![0.0; 2 * n]);
        for row in 0..region.height {
            let y = region.y + row as i64;
            for col in 0..region.width {
                let cell = self.cell(region.x + col as i64, y, step);
                for pair in 0..pairs {
                    (radius[col * pairs + pair], angle[col * pairs + pair]) = polar(Self::bits(cell, pair));
                }
            }
            sin_cos_f64(&angle, &mut sin, &mut cos);
            // Normal k of the row is channel k mod 2 pairs of cell k / 2 pairs.
            for k in 0..n {
                phase[2 * k] = self.strength * (radius[k] * cos[k]);
                phase[2 * k + 1] = self.strength * (radius[k] * sin[k]);
            }
            sin_cos_f64(&phase, &mut phase_sin, &mut phase_cos);
            for col in 0..region.width {
                let index = row * region.width + col;
                for c in 0..d {
                    let k = col * 2 * pairs + c;
                    out[c * cells + index] = (phase_cos[k] * scale) as f32;
                    out[(d + c) * cells + index] = (phase_sin[k] * scale) as f32;
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

    /// The vectorised vacuum against the formula computed cell by cell with the platform's
    /// libm: both are within an ulp of f64 before the rounding to f32, so the f32 values agree
    /// but for the rare one within two f64 ulps of an f32 rounding boundary.
    #[test]
    fn the_vacuum_is_the_formula_computed_with_libm() {
        let vacuum = Vacuum { seed: 5, strength: 0.9, d_state: 5 };
        let region = Region::new(-40, 17, 96, 64);
        let values = vacuum.host(region, 7);
        let (d, cells) = (vacuum.d_state, region.cells());
        let scale = normalizer(d as f64, Renormalization::default());
        let mut differing = 0;
        for row in 0..region.height {
            for col in 0..region.width {
                let cell = vacuum.cell(region.x + col as i64, region.y + row as i64, 7);
                for c in 0..d {
                    let (radius, angle) = polar(Vacuum::bits(cell, c / 2));
                    let normal = if c % 2 == 0 { radius * angle.cos() } else { radius * angle.sin() };
                    let (sin, cos) = (vacuum.strength * normal).sin_cos();
                    let index = row * region.width + col;
                    for (got, exact) in
                        [(values[c * cells + index], cos), (values[(d + c) * cells + index], sin)]
                    {
                        let expected = (exact * scale) as f32;
                        if got != expected {
                            differing += 1;
                            assert!(
                                (got - expected).abs() <= f32::EPSILON * expected.abs(),
                                "{got} vs {expected}"
                            );
                        }
                    }
                }
            }
        }
        assert!(differing <= 3, "{differing} of {} values differ", values.len());
    }
}
