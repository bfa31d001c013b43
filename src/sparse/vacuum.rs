//! The vacuum: `exp(i * strength * n_c) / sqrt(d)` per channel, with `n_c` drawn from a
//! counter-based hash of `(seed, x, y, step)`, the same wherever and whenever it is asked for.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::{Region, TileCoord};
use crate::complex::{normalizer, Renormalization};
use crate::kernels::cpu::host::from_host;
use crate::kernels::{ln_f64, multiversion, sin_cos_f64};

/// SplitMix64's finaliser: a bijective mix of 64 bits.
#[inline(always)]
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The first stage of every cell's hash in a vacuum of this seed.
#[inline(always)]
fn seeded(seed: u64) -> u64 {
    mix(seed ^ 0x9e37_79b9_7f4a_7c15)
}

/// The hash of cell `(x, y)` after `step` steps from [`seeded`]: its channels' bits derive
/// from it.
#[inline(always)]
fn cell_hash(seeded: u64, x: i64, y: i64, step: u64) -> u64 {
    mix(mix(mix(seeded ^ x as u64) ^ y as u64) ^ step)
}

/// Where a row of cells starts: its first cell's coordinates and the step.
#[derive(Clone, Copy)]
pub(super) struct RowStart {
    x: i64,
    y: i64,
    step: u64,
}

multiversion! {
    /// For the row of cells from `first`, one per entry of `hashes` (the cells' hashes, written):
    /// Box-Muller's `u1` and angle `2 pi u2` of pair `p` of every cell, pair-major
    /// ([pairs][width] in `u1` and `angle`).
    pub fn row_uniforms(seed: u64, first: RowStart, hashes: &mut [u64], u1: &mut [f64], angle: &mut [f64]) => row_uniforms_generic
}

#[inline(always)]
fn row_uniforms_generic(seed: u64, first: RowStart, hashes: &mut [u64], u1: &mut [f64], angle: &mut [f64]) {
    let seeded = seeded(seed);
    for (col, hash) in hashes.iter_mut().enumerate() {
        *hash = cell_hash(seeded, first.x.wrapping_add(col as i64), first.y, first.step);
    }
    let width = hashes.len();
    for (pair, (u1, angle)) in u1.chunks_exact_mut(width).zip(angle.chunks_exact_mut(width)).enumerate() {
        for ((u1, angle), &cell) in u1.iter_mut().zip(angle.iter_mut()).zip(hashes.iter()) {
            let u2;
            (*u1, u2) = uniforms(Vacuum::bits(cell, pair));
            *angle = std::f64::consts::TAU * u2;
        }
    }
}

multiversion! {
    /// The phases `strength n` of a row of cells, channel-major ([2 pairs][width]): pair `p`'s
    /// normals `radius cos angle` and `radius sin angle`, with `radius = sqrt(-2 ln u1)`, are
    /// channels `2p` and `2p + 1` (inputs pair-major, [pairs][width]).
    pub fn row_phases(ln_u1: &[f64], sin: &[f64], cos: &[f64], strength: f64, width: usize, phase: &mut [f64]) => row_phases_generic
}

#[inline(always)]
fn row_phases_generic(
    ln_u1: &[f64],
    sin: &[f64],
    cos: &[f64],
    strength: f64,
    width: usize,
    phase: &mut [f64],
) {
    for (pair, channels) in phase.chunks_exact_mut(2 * width).enumerate() {
        let (even, odd) = channels.split_at_mut(width);
        let inputs = pair * width..(pair + 1) * width;
        let (ln_u1, sin, cos) = (&ln_u1[inputs.clone()], &sin[inputs.clone()], &cos[inputs]);
        for (((even, odd), &ln_u1), (&sin, &cos)) in
            even.iter_mut().zip(odd).zip(ln_u1).zip(sin.iter().zip(cos))
        {
            let radius = (-2.0 * ln_u1).sqrt();
            *even = strength * (radius * cos);
            *odd = strength * (radius * sin);
        }
    }
}

multiversion! {
    /// `out[i] = values[i] * scale`, rounded to f32.
    pub fn scale_to_f32(values: &[f64], scale: f64, out: &mut [f32]) => scale_to_f32_generic
}

#[inline(always)]
fn scale_to_f32_generic(values: &[f64], scale: f64, out: &mut [f32]) {
    for (out, &value) in out.iter_mut().zip(values) {
        *out = (value * scale) as f32;
    }
}

/// The uniforms of Box-Muller's polar form from 64 random bits, their two 32-bit halves:
/// `u1` in (0, 1] and `u2` in [0, 1), for the radius `sqrt(-2 ln u1)` and the angle `2 pi u2`
/// of two independent standard normals `(radius cos angle, radius sin angle)`.
fn uniforms(bits: u64) -> (f64, f64) {
    let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0;
    let u2 = (bits & 0xffff_ffff) as f64 / 4_294_967_296.0;
    (u1, u2)
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
    #[inline(always)]
    fn bits(cell: u64, pair: usize) -> u64 {
        mix(cell ^ (pair as u64).wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    /// The hash of cell `(x, y)` after `step` steps, from which its channels' bits derive.
    #[cfg(test)]
    fn cell(&self, x: i64, y: i64, step: u64) -> u64 {
        cell_hash(seeded(self.seed), x, y, step)
    }

    /// Writes the vacuum of `region` into `planes`, one row-major [height, width] plane per
    /// channel of [2d] (real parts, then imaginary): channel `c` of a cell is
    /// `exp(i strength n_c) / sqrt(d)`, the normals drawn two at a time. A row of cells at a
    /// time, every pass a vectorised loop over the row: the hashes, the logarithms, sines and
    /// cosines, then each plane's row.
    fn fill(&self, region: Region, step: u64, planes: &mut [&mut [f32]]) {
        let (d, width) = (self.d_state, region.width);
        let pairs = d.div_ceil(2);
        // Every channel has modulus 1 before the per-cell normalisation, as the dense
        // engine's `complex-noise` state.
        let scale = normalizer(d as f64, Renormalization::default());
        // Pair-major rows: pair p of the row's cells at [p * width..(p + 1) * width], and
        // channel c (normal c of a cell) at [c * width..(c + 1) * width].
        let n = pairs * width;
        let mut hashes = vec![0u64; width];
        let (mut u1, mut ln_u1, mut angle) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let (mut sin, mut cos) = (vec![0.0; n], vec![0.0; n]);
        let (mut phase, mut phase_sin, mut phase_cos) =
            (vec![0.0; 2 * n], vec![0.0; 2 * n], vec![0.0; 2 * n]);
        for row in 0..region.height {
            let first = RowStart { x: region.x, y: region.y + row as i64, step };
            row_uniforms(self.seed, first, &mut hashes, &mut u1, &mut angle);
            ln_f64(&u1, &mut ln_u1);
            sin_cos_f64(&angle, &mut sin, &mut cos);
            row_phases(&ln_u1, &sin, &cos, self.strength, width, &mut phase);
            sin_cos_f64(&phase, &mut phase_sin, &mut phase_cos);
            let row_cells = row * width..(row + 1) * width;
            let (real, imaginary) = planes.split_at_mut(d);
            for (c, (real, imaginary)) in real.iter_mut().zip(imaginary.iter_mut()).enumerate() {
                let channel = c * width..(c + 1) * width;
                scale_to_f32(&phase_cos[channel.clone()], scale, &mut real[row_cells.clone()]);
                scale_to_f32(&phase_sin[channel], scale, &mut imaginary[row_cells.clone()]);
            }
        }
    }

    /// The vacuum of `region` after `step` steps, channel-major [2d, height, width], generated
    /// in bands of rows in parallel, each written in place.
    pub fn host(&self, region: Region, step: u64) -> Vec<f32> {
        const BAND: usize = 16;
        let band_cells = BAND * region.width;
        let mut out = vec![0.0f32; 2 * self.d_state * region.cells()];
        if out.is_empty() {
            return out;
        }
        // Band b's part of every plane, gathered per band.
        let mut bands: Vec<Vec<&mut [f32]>> = (0..region.height.div_ceil(BAND)).map(|_| Vec::new()).collect();
        for plane in out.chunks_mut(region.cells()) {
            for (band, part) in bands.iter_mut().zip(plane.chunks_mut(band_cells)) {
                band.push(part);
            }
        }
        bands.into_par_iter().enumerate().for_each(|(band, mut planes)| {
            let rows = BAND.min(region.height - band * BAND);
            let part = Region::new(region.x, region.y + (band * BAND) as i64, region.width, rows);
            self.fill(part, step, &mut planes);
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
            self.fill(region, step, &mut out.chunks_mut(tile * tile).collect::<Vec<_>>());
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
                    let (u1, u2) = uniforms(Vacuum::bits(cell, c / 2));
                    let (radius, angle) = ((-2.0 * u1.ln()).sqrt(), std::f64::consts::TAU * u2);
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
