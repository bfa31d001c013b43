//! Maps and numbers computed from a state, for pictures and logs.
//!
//! Every map is [B, H, W]: one per universe (the pictures of `atheria run` draw universe 0).
//! With `psi_c = re_c + i im_c` the d complex channels of a cell:
//!
//! | view | map |
//! |---|---|
//! | `density` | `sum_c |psi_c|^2` |
//! | `phase` | circular mean of the channel phases, `atan2(mean_c sin theta_c, mean_c cos theta_c)`, `theta_c = atan2(im_c, re_c)`; a zero channel counts as phase 0 |
//! | `energy` | `sum_c |delta_c|^2` of the last step |
//! | `gradient` | `|grad density|`: central differences inside the grid, one-sided at the edges (`numpy.gradient`), unit spacing |
//! | `real`, `imag` | `mean_c re_c`, `mean_c im_c` |
//! | `entropy` | `-sum_c p_c ln p_c / ln d`, `p_c = |psi_c|^2 / sum_c |psi_c|^2` (0 ln 0 = 0; 0 for a zero cell or d = 1): 0 for a basis state, 1 for a uniform spread |
//! | `coherence` | `|<psi, psi_right>| / (|psi| |psi_right|)`, `<a, b> = sum_c conj(a_c) b_c`, the right neighbour wrapping from the last column to the first; 0 where a norm is 0 |
//! | `activity` | the participation ratio `1 / sum_c p_c^2`: how many channels a cell effectively occupies, from 1 (a basis state) to d (uniform); 0 for a zero cell |
//! | `spectral` | `log1p |fftshift(fft2(density))|`, the DC pixel (row H/2, column W/2) replaced by the largest of its 8 neighbours (wrapping), so the mean does not swamp the scale |
//! | `physics` | `mean_c r_c`, `r_c = |delta_c| / (|psi_c| + 1e-10)` where `|psi_c| > 1e-10`, else 0, with psi the state the update was computed from |
//!
//! Before the first step there is no update: `energy` and `physics` are zero maps.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::complex::{self, parts};
use crate::error::{Error, Result};
use crate::render::{Colormap, Range};

/// Density `sum_c |psi_c|^2` per cell, [B, H, W]. 1 everywhere for a normalised state; the
/// decay and the law move it only between renormalisations, so the interesting structure is
/// in the pre-normalisation update and the phases.
pub fn density<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    complex::cell_squared_norm(psi).squeeze_dim(1)
}

/// Energy of an update: `sum_c |delta_c|^2` per cell, [B, H, W].
pub fn update_energy<B: Backend>(delta: Tensor<B, 4>) -> Tensor<B, 3> {
    complex::cell_squared_norm(delta).squeeze_dim(1)
}

/// Channel probabilities `p_c = |psi_c|^2 / sum_c |psi_c|^2`, [B, d, H, W] (0 for a zero cell).
pub fn probabilities<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 4> {
    let weights = complex::channel_densities(psi);
    let total = weights.clone().sum_dim(1).clamp_min(f32::MIN_POSITIVE);
    weights / total
}

/// Circular mean of the channel phases, in (-pi, pi].
pub fn phase<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    let (re, im) = parts(psi.clone());
    let magnitude = complex::magnitudes(psi, 0.0);
    let zero = magnitude.clone().equal_elem(0.0);
    let safe = magnitude.mask_fill(zero.clone(), 1.0);
    let cos = (re / safe.clone()).mask_fill(zero.clone(), 1.0);
    let sin = (im / safe).mask_fill(zero, 0.0);
    let mean_sin = sin.mean_dim(1).squeeze_dim(1);
    let mean_cos = cos.mean_dim(1).squeeze_dim(1);
    mean_sin.atan2(mean_cos)
}

/// Mean real part over channels.
pub fn real_mean<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    parts(psi).0.mean_dim(1).squeeze_dim(1)
}

/// Mean imaginary part over channels.
pub fn imag_mean<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    parts(psi).1.mean_dim(1).squeeze_dim(1)
}

/// How far each cell is from the vacuum: the L1 distance of its channel densities `|psi_c|^2`
/// from the vacuum's `1/d` each, in [0, 2 (1 - 1/d)]. The sparse engine's measure of matter.
pub fn matter_distance<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    let d = psi.dims()[1] / 2;
    (complex::channel_densities(psi) - 1.0 / d as f64).abs().sum_dim(1).squeeze_dim(1)
}

/// Shannon entropy of the channel probabilities over `ln d`, in [0, 1].
pub fn entropy<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, channels, height, width] = psi.dims();
    let d = channels / 2;
    if d <= 1 {
        return Tensor::zeros([batch, height, width], &psi.device());
    }
    let p = probabilities(psi);
    // p ln p with 0 ln 0 = 0: the clamp keeps the log finite, the factor p makes it vanish.
    let p_log_p = p.clone() * p.clamp_min(f32::MIN_POSITIVE).log();
    p_log_p.sum_dim(1).squeeze_dim(1) * (-1.0 / (d as f64).ln())
}

/// Participation ratio `1 / sum_c p_c^2`: the effective number of occupied channels.
pub fn channel_activity<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    let concentration = probabilities(psi).square().sum_dim(1).squeeze_dim(1);
    let empty = concentration.clone().equal_elem(0.0);
    // A true division: burn's `recip` may use an approximate reciprocal on the CPU.
    (concentration.ones_like() / concentration.mask_fill(empty.clone(), 1.0)).mask_fill(empty, 0.0)
}

/// Coherence with the right neighbour (wrapping), in [0, 1].
pub fn coherence<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    // right[.., x] = psi[.., x + 1 mod W]: burn's roll by +1 moves elements toward lower
    // indices (the opposite of numpy's and torch's).
    let right = psi.clone().roll_dim(1, 3);
    let (a_re, a_im) = parts(psi.clone());
    let (b_re, b_im) = parts(right.clone());
    let inner_re = (a_re.clone() * b_re.clone() + a_im.clone() * b_im.clone()).sum_dim(1);
    let inner_im = (a_re * b_im - a_im * b_re).sum_dim(1);
    let inner = (inner_re.square() + inner_im.square()).sqrt();
    let norms = (psi.square().sum_dim(1) * right.square().sum_dim(1)).sqrt();
    // |<a, b>| <= |a| |b|, so a zero norm gives 0 / tiny = 0.
    (inner / norms.clamp_min(f32::MIN_POSITIVE)).squeeze_dim(1)
}

/// `numpy.gradient` of a [B, H, W] map along `dim` (1: rows, 2: columns), unit spacing.
fn gradient_along<B: Backend>(map: Tensor<B, 3>, dim: usize) -> Tensor<B, 3> {
    let n = map.dims()[dim];
    if n < 2 {
        return map.zeros_like();
    }
    let first = map.clone().narrow(dim, 1, 1) - map.clone().narrow(dim, 0, 1);
    let last = map.clone().narrow(dim, n - 1, 1) - map.clone().narrow(dim, n - 2, 1);
    if n == 2 {
        return Tensor::cat(vec![first, last], dim);
    }
    let interior = (map.clone().narrow(dim, 2, n - 2) - map.narrow(dim, 0, n - 2)) * 0.5;
    Tensor::cat(vec![first, interior, last], dim)
}

/// Gradient magnitude of the density.
pub fn density_gradient<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 3> {
    let rho = density(psi);
    let along_rows = gradient_along(rho.clone(), 1);
    let along_columns = gradient_along(rho, 2);
    (along_rows.square() + along_columns.square()).sqrt()
}

/// The density's spectrum (see the module docs), computed on the host with rustfft.
pub fn spectral<B: Backend>(psi: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
    let device = psi.device();
    let rho = density(psi);
    let [batch, height, width] = rho.dims();
    let values = read_floats(rho)?;
    let mut out = Vec::with_capacity(values.len());
    for universe in values.chunks(height * width) {
        out.extend(spectrum(universe, height, width).into_iter().map(|value| value as f32));
    }
    Ok(Tensor::from_data(TensorData::new(out, [batch, height, width]), &device))
}

/// `log1p |fftshift(fft2(map))|` of one row-major [H, W] map, DC replaced by its neighbours' max.
fn spectrum(map: &[f32], height: usize, width: usize) -> Vec<f64> {
    let mut grid: Vec<Complex<f64>> = map.iter().map(|&value| Complex::new(value as f64, 0.0)).collect();
    let mut planner = FftPlanner::<f64>::new();
    let along_rows = planner.plan_fft_forward(width);
    for row in grid.chunks_mut(width) {
        along_rows.process(row);
    }
    let along_columns = planner.plan_fft_forward(height);
    let mut column = vec![Complex::new(0.0, 0.0); height];
    for x in 0..width {
        for y in 0..height {
            column[y] = grid[y * width + x];
        }
        along_columns.process(&mut column);
        for y in 0..height {
            grid[y * width + x] = column[y];
        }
    }
    // fftshift: frequency index i moves to (i + n / 2) mod n, so DC lands on (H / 2, W / 2).
    let mut shifted = vec![0.0; height * width];
    for y in 0..height {
        for x in 0..width {
            let target = ((y + height / 2) % height) * width + (x + width / 2) % width;
            shifted[target] = grid[y * width + x].norm().ln_1p();
        }
    }
    let (cy, cx) = (height / 2, width / 2);
    let mut neighbours = f64::NEG_INFINITY;
    for dy in [height - 1, 0, 1] {
        for dx in [width - 1, 0, 1] {
            let (y, x) = ((cy + dy) % height, (cx + dx) % width);
            if (y, x) != (cy, cx) {
                neighbours = neighbours.max(shifted[y * width + x]);
            }
        }
    }
    shifted[cy * width + cx] = if neighbours.is_finite() { neighbours } else { 0.0 };
    shifted
}

/// Mean relative size of the update per channel, `|delta_c| / (|psi_c| + 1e-10)` (0 where
/// `|psi_c| <= 1e-10`); `psi` is the state the update was computed from.
pub fn physics<B: Backend>(psi: Tensor<B, 4>, delta: Tensor<B, 4>) -> Tensor<B, 3> {
    let magnitude = complex::magnitudes(psi, 0.0);
    let change = complex::magnitudes(delta, 0.0);
    let negligible = magnitude.clone().lower_equal_elem(1e-10);
    let ratio = (change / (magnitude + 1e-10)).mask_fill(negligible, 0.0);
    ratio.mean_dim(1).squeeze_dim(1)
}

/// Reads a tensor back as f32 values (row-major).
pub fn read_floats<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<Vec<f32>> {
    crate::readback::floats(tensor)
}

/// A map that can be drawn: the `--view` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// `sum_c |psi_c|^2`.
    Density,
    /// The circular mean of the channel phases.
    Phase,
    /// `sum_c |delta_c|^2` of the last step.
    Energy,
    /// `|grad density|`.
    Gradient,
    /// `mean_c re_c`.
    Real,
    /// `mean_c im_c`.
    Imag,
    /// The entropy of the channel probabilities, over `ln d`.
    Entropy,
    /// Coherence with the right neighbour.
    Coherence,
    /// The participation ratio: the effective number of occupied channels.
    Activity,
    /// The density's spectrum.
    Spectral,
    /// The mean relative size of the last update.
    Physics,
    /// The L1 distance of the channel densities from the vacuum's.
    Matter,
}

impl View {
    /// What frames show unless told otherwise: four maps that show a universe's structure.
    /// (The density alone is 1 in every cell of a normalised state.)
    pub const DEFAULT_PANEL: [View; 4] = [View::Phase, View::Entropy, View::Activity, View::Real];

    /// Every view.
    pub fn all() -> impl Iterator<Item = View> {
        <Self as clap::ValueEnum>::value_variants().iter().copied()
    }

    /// The `--view` name.
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }

    /// The map, [B, H, W]. `input` and `delta` are the last step's input state and update,
    /// `None` before the first step (then `energy` and `physics` are zeros).
    pub fn map<B: Backend>(
        self,
        psi: Tensor<B, 4>,
        input: Option<Tensor<B, 4>>,
        delta: Option<Tensor<B, 4>>,
    ) -> Result<Tensor<B, 3>> {
        let [batch, _, height, width] = psi.dims();
        let zeros = || Tensor::zeros([batch, height, width], &psi.device());
        Ok(match self {
            View::Density => density(psi),
            View::Phase => phase(psi),
            View::Energy => delta.map_or_else(zeros, update_energy),
            View::Gradient => density_gradient(psi),
            View::Real => real_mean(psi),
            View::Imag => imag_mean(psi),
            View::Entropy => entropy(psi),
            View::Coherence => coherence(psi),
            View::Activity => channel_activity(psi),
            View::Spectral => spectral(psi)?,
            View::Matter => matter_distance(psi),
            View::Physics => match (input, delta) {
                (Some(input), Some(delta)) => physics(input, delta),
                _ => zeros(),
            },
        })
    }

    /// How the map is coloured: cyclic for the phase, viridis for everything else.
    pub fn colormap(self) -> Colormap {
        match self {
            View::Phase => Colormap::Phase,
            _ => Colormap::Viridis,
        }
    }

    /// The value range drawn: fixed where the quantity has natural bounds, else the map's own.
    pub fn range(self, d_state: usize) -> Range {
        match self {
            View::Density | View::Entropy | View::Coherence => Range::Fixed(0.0, 1.0),
            View::Phase => Range::Fixed(-std::f32::consts::PI, std::f32::consts::PI),
            View::Activity => Range::Fixed(1.0, d_state.max(2) as f32),
            View::Matter => Range::Fixed(0.0, 2.0 * (1.0 - 1.0 / d_state.max(1) as f32)),
            _ => Range::Auto,
        }
    }
}

impl FromStr for View {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        crate::names::parse(text, "view").map_err(Error::InvalidView)
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Scalar metrics of one universe at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMetrics {
    /// Which universe of the batch.
    pub universe: usize,
    /// `sum` over cells of `sum_c |delta_c|^2` of the last step (0 before the first).
    pub total_energy: f64,
    /// Mean of the entropy map.
    pub mean_entropy: f64,
    /// Cells whose density exceeds the threshold.
    pub cells_above: usize,
}

impl StepMetrics {
    /// The header of the metrics CSV.
    pub const CSV_HEADER: &'static str = "step,universe,total_energy,mean_entropy,cells_above";

    /// The CSV row of these metrics at `step`.
    pub fn csv_row(&self, step: u64) -> String {
        format!(
            "{step},{},{:.9e},{:.9e},{}",
            self.universe, self.total_energy, self.mean_entropy, self.cells_above
        )
    }
}

/// The scalar metrics of every universe (three read-backs; a run gathers them in a
/// [`MetricsBuffer`] instead).
pub fn step_metrics<B: Backend>(
    psi: Tensor<B, 4>,
    delta: Option<Tensor<B, 4>>,
    density_threshold: f64,
) -> Result<Vec<StepMetrics>> {
    let rows = MetricsBuffer::new(1).push(0, psi, delta, density_threshold)?;
    Ok(rows.into_iter().map(|(_, metrics)| metrics).collect())
}

/// The step metrics of every universe of one step, still on the device.
struct DeviceMetrics<B: Backend> {
    /// [batch, 2]: total update energy, mean entropy.
    floats: Tensor<B, 2>,
    /// [batch]: cells above the density threshold (integers, exact at any grid size).
    counts: Tensor<B, 1, Int>,
}

impl<B: Backend> DeviceMetrics<B> {
    fn of(psi: Tensor<B, 4>, delta: Option<Tensor<B, 4>>, density_threshold: f64) -> Self {
        let batch = psi.dims()[0];
        let per_universe_sum = |map: Tensor<B, 3>| map.sum_dim(2).sum_dim(1).flatten::<1>(0, 2);
        let energy = match delta {
            Some(delta) => per_universe_sum(update_energy(delta)),
            None => Tensor::zeros([batch], &psi.device()),
        };
        let entropy = entropy(psi.clone()).mean_dim(2).mean_dim(1).flatten::<1>(0, 2);
        let above = density(psi).greater_elem(density_threshold).int();
        let counts = above.sum_dim(2).sum_dim(1).flatten::<1>(0, 2);
        Self { floats: Tensor::stack(vec![energy, entropy], 1), counts }
    }
}

/// Step metrics computed on the device as the steps go and read back together, `capacity`
/// steps at a time: two read-backs per batch of steps instead of three per step, so a run on
/// a GPU that logs every step still leaves the state on the device.
pub struct MetricsBuffer<B: Backend> {
    capacity: usize,
    steps: Vec<u64>,
    pending: Vec<DeviceMetrics<B>>,
}

impl<B: Backend> MetricsBuffer<B> {
    /// Steps gathered before a read-back when a run logs metrics.
    pub const RUN_CAPACITY: usize = 64;

    /// An empty buffer that reads back every `capacity` steps (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { capacity, steps: Vec::with_capacity(capacity), pending: Vec::with_capacity(capacity) }
    }

    /// Queues the metrics of `psi` (after `step` steps, `delta` its last update); when that
    /// fills the buffer, reads every queued step back and returns its rows in step order.
    ///
    /// # Shapes
    /// - `psi`, `delta`: [B, 2d, H, W]
    pub fn push(
        &mut self,
        step: u64,
        psi: Tensor<B, 4>,
        delta: Option<Tensor<B, 4>>,
        density_threshold: f64,
    ) -> Result<Vec<(u64, StepMetrics)>> {
        self.steps.push(step);
        self.pending.push(DeviceMetrics::of(psi, delta, density_threshold));
        if self.steps.len() >= self.capacity {
            self.drain()
        } else {
            Ok(vec![])
        }
    }

    /// Reads back every queued step: (step, metrics of each universe) in step order.
    pub fn drain(&mut self) -> Result<Vec<(u64, StepMetrics)>> {
        if self.steps.is_empty() {
            return Ok(vec![]);
        }
        let pending = std::mem::take(&mut self.pending);
        let (floats, counts): (Vec<_>, Vec<_>) =
            pending.into_iter().map(|metrics| (metrics.floats, metrics.counts)).unzip();
        let floats = read_floats(Tensor::cat(floats, 0))?;
        let counts = crate::readback::values::<i64, B, 1, Int>(Tensor::cat(counts, 0))?;
        let steps = std::mem::take(&mut self.steps);
        let batch = counts.len() / steps.len();
        Ok(steps
            .iter()
            .enumerate()
            .flat_map(|(index, &step)| {
                (0..batch).map(move |universe| (index * batch + universe, universe, step))
            })
            .map(|(row, universe, step)| {
                let metrics = StepMetrics {
                    universe,
                    total_energy: floats[2 * row] as f64,
                    mean_entropy: floats[2 * row + 1] as f64,
                    cells_above: counts[row] as usize,
                };
                (step, metrics)
            })
            .collect())
    }
}
