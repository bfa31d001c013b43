//! Tools: deliberate interventions on a running universe.
//!
//! | tool | keys (defaults) | effect |
//! |---|---|---|
//! | `vortex` | `x`, `y` (grid centre), `radius` (min(H, W) / 4), `m` (1), `strength` (1) | imprints a phase winding of `m` around (x, y) |
//! | `wave` | `kx` (0.25), `ky` (0), `amplitude` (1) | imprints a plane wave `exp(i (kx x + ky y))` |
//! | `collapse` | `x`, `y`, `radius` (as vortex), `intensity` (1), `seed` (0) | projective measurement of every cell in the disc |
//! | `click-out` | `enabled` (true), `chance` (0.1), `seed` (0) | after each step, maybe swaps random pairs of cells |
//! | `phase-flip` | `rate` (0.05), `seed` (0) | [`crate::noise::phase_flip`] |
//! | `bit-flip` | `rate` (0.05), `seed` (0) | [`crate::noise::bit_flip`] |
//!
//! Written `NAME` or `NAME:key=value,key=value` (see [`Tool::from_str`](std::str::FromStr)).
//!
//! ## Conventions
//!
//! - Coordinates: `x` is the column (0 at the left), `y` the row (0 at the top), cell centres at
//!   integers, so a centre must lie in `[0, W - 1] x [0, H - 1]`. Discs do not wrap around the
//!   edges (the laws pad with zeros: the grid is not a torus).
//! - Phase: `phase(z) = atan2(Im z, Re z)` in (-pi, pi]; angles around a centre are
//!   `theta = atan2(y - y0, x - x0)`, which with rows growing downwards turns clockwise on screen.
//! - A tool acts on every universe of the batch, on psi only (a ConvLSTM memory is untouched).
//! - Randomness: a ChaCha8 stream chosen by the tool's `seed` and the universe's step, so a run
//!   is reproducible and a tool applied at two steps draws different numbers.
//!
//! ## The maths, per tool
//!
//! - `vortex`: with `d` the distance to the centre, `w = strength * exp(-d^2 / (2 s^2))`,
//!   `s = radius / 2`, inside the disc `d <= radius` (0 outside), every channel of the cell is
//!   multiplied by the pure phase `z / |z|`, `z = (1 - w) + w exp(i m theta)`: the blend of the
//!   identity and the winding, renormalised. Where `w > 1/2` (near the centre for strength 1)
//!   the phase of `z` winds `m` times around the centre, so a loop there picks up `2 pi m`; at the
//!   rim of the disc the factor fades to the identity (which needs `m` compensating phase
//!   singularities on the ring `w = 1/2`: a localised vortex has no net winding far away).
//! - `wave`: the same blend with the plane wave: `z = (1 - amplitude) + amplitude exp(i (kx x +
//!   ky y))`, over the whole grid; `kx`, `ky` in radians per cell. Amplitude 1 is a pure momentum
//!   kick `psi * exp(i k.r)`.
//! - In both, a cell where `z = 0` exactly (a blend weight of 1/2 against a phase of pi) is left
//!   unchanged. A pure phase keeps every `|psi_c|`, so normalised cells stay normalised.
//! - `collapse`: for each cell in the disc, a channel `k` is drawn with probability
//!   `p_k = |psi_k|^2 / sum_c |psi_c|^2` (the Born rule); the measured state is the projection
//!   `e_k psi_k / |psi_k|`; the cell becomes `(1 - intensity) psi + intensity e_k psi_k / |psi_k|`,
//!   divided by its norm. Intensity 1 leaves basis states; cells outside the disc, and all cells
//!   at intensity 0, are unchanged. Zero cells have nothing to measure and stay as they are.
//! - `click-out`: after a step, with probability `chance`, `n = floor(0.5 * sqrt(H W))` disjoint
//!   random pairs of cells exchange their psi (the lab's `floor(0.5 * grid)` with `grid` its
//!   square side; `sqrt(H W)` is that side for square grids). Independently per universe.
//! - `phase-flip`, `bit-flip`: the noise injectors of [`crate::noise`] at `rate`.

mod spec;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::complex;
use crate::error::{Error, Result};
use crate::noise;
use crate::readback::floats as read_floats;

/// The kinds of tool, by the names written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ToolKind {
    /// A phase winding around a centre.
    Vortex,
    /// A plane wave over the grid.
    Wave,
    /// A projective measurement of the cells in a disc.
    Collapse,
    /// Random pairs of cells swapped after every step.
    ClickOut,
    /// Random phases on random cells.
    PhaseFlip,
    /// Random cells negated.
    BitFlip,
}

impl ToolKind {
    /// The name in a tool spec (`click-out`).
    pub fn name(self) -> String {
        crate::names::name_of(&self)
    }

    /// The keys a spec of this kind takes.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            ToolKind::Vortex => &["x", "y", "radius", "m", "strength"],
            ToolKind::Wave => &["kx", "ky", "amplitude"],
            ToolKind::Collapse => &["x", "y", "radius", "intensity", "seed"],
            ToolKind::ClickOut => &["enabled", "chance", "seed"],
            ToolKind::PhaseFlip | ToolKind::BitFlip => &["rate", "seed"],
        }
    }
}

/// A disc on the grid; `None` fields take grid-relative defaults (centre, min(H, W) / 4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disc {
    /// The centre's column; the grid's centre when absent.
    pub x: Option<f64>,
    /// The centre's row; the grid's centre when absent.
    pub y: Option<f64>,
    /// The radius in cells; a quarter of the shorter side when absent.
    pub radius: Option<f64>,
}

impl Disc {
    /// The centre (x, y) and radius on an H x W grid, checked to lie on it.
    pub fn resolve(&self, tool: &str, height: usize, width: usize) -> Result<(f64, f64, f64)> {
        let x = self.x.unwrap_or((width / 2) as f64);
        let y = self.y.unwrap_or((height / 2) as f64);
        let radius = self.radius.unwrap_or((height.min(width) as f64 / 4.0).max(1.0));
        let max_x = width.saturating_sub(1) as f64;
        let max_y = height.saturating_sub(1) as f64;
        if !(0.0..=max_x).contains(&x) || !(0.0..=max_y).contains(&y) {
            return Err(Error::InvalidTool(format!(
                "{tool}: centre x={x}, y={y} is outside the {height}x{width} grid \
                 (x is the column in [0, {max_x}], y the row in [0, {max_y}])"
            )));
        }
        Ok((x, y, radius))
    }
}

/// One tool with its parameters (validated when parsed; the grid-dependent checks are in
/// [`Tool::check`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Tool {
    /// A phase winding around the disc's centre.
    Vortex {
        /// Where, and how far.
        disc: Disc,
        /// The winding number.
        m: i64,
        /// The blend weight at the centre, in [0, 1].
        strength: f64,
    },
    /// A plane wave `exp(i (kx x + ky y))` over the grid.
    Wave {
        /// Radians per column.
        kx: f64,
        /// Radians per row.
        ky: f64,
        /// The blend weight, in [0, 1] (1: a pure momentum kick).
        amplitude: f64,
    },
    /// A projective measurement of every cell in the disc.
    Collapse {
        /// Where, and how far.
        disc: Disc,
        /// How far each cell moves toward its measured basis state, in [0, 1].
        intensity: f64,
        /// Seed of the draws.
        seed: u64,
    },
    /// Random pairs of cells swapped after every step.
    ClickOut {
        /// Whether it acts at all.
        enabled: bool,
        /// The probability of a swap after each step.
        chance: f64,
        /// Seed of the draws.
        seed: u64,
    },
    /// Random phases on random cells ([`crate::noise::phase_flip`]).
    PhaseFlip {
        /// The probability per cell.
        rate: f64,
        /// Seed of the draws.
        seed: u64,
    },
    /// Random cells negated ([`crate::noise::bit_flip`]).
    BitFlip {
        /// The probability per cell.
        rate: f64,
        /// Seed of the draws.
        seed: u64,
    },
}

/// A tool and when it acts: before step `at` runs (on the state after `at` steps; 0 is the
/// initial state). A per-step tool (click-out) acts after every step that starts at `at` or later.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledTool {
    /// The step count the tool acts at.
    pub at: u64,
    /// The tool.
    pub tool: Tool,
}

impl ScheduledTool {
    /// Pairs tools with steps in order: the i-th step belongs to the i-th tool; tools without
    /// one act from step 0.
    pub fn pair(tools: Vec<Tool>, at: &[u64]) -> Result<Vec<ScheduledTool>> {
        if at.len() > tools.len() {
            return Err(Error::InvalidTool(format!(
                "{} --tool-at for {} --tool: each --tool-at belongs to the --tool at the same position",
                at.len(),
                tools.len()
            )));
        }
        Ok(tools
            .into_iter()
            .enumerate()
            .map(|(index, tool)| ScheduledTool { at: at.get(index).copied().unwrap_or(0), tool })
            .collect())
    }
}

impl Tool {
    /// What kind of tool this is.
    pub fn kind(&self) -> ToolKind {
        match self {
            Tool::Vortex { .. } => ToolKind::Vortex,
            Tool::Wave { .. } => ToolKind::Wave,
            Tool::Collapse { .. } => ToolKind::Collapse,
            Tool::ClickOut { .. } => ToolKind::ClickOut,
            Tool::PhaseFlip { .. } => ToolKind::PhaseFlip,
            Tool::BitFlip { .. } => ToolKind::BitFlip,
        }
    }

    /// The name of its kind (`vortex`).
    pub fn name(&self) -> String {
        self.kind().name()
    }

    /// Whether the tool acts after every step (click-out) rather than once.
    pub fn is_per_step(&self) -> bool {
        matches!(self, Tool::ClickOut { .. })
    }

    /// Checks the parameters that depend on the grid (centres on the grid).
    pub fn check(&self, height: usize, width: usize) -> Result<()> {
        match self {
            Tool::Vortex { disc, .. } | Tool::Collapse { disc, .. } => {
                disc.resolve(&self.name(), height, width).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// Applies the tool once to psi [B, 2d, H, W]; `step` is the universe's step (it selects the
    /// random stream). For click-out this is one after-step event (a swap with probability
    /// `chance`).
    pub fn apply<B: Backend>(&self, psi: Tensor<B, 4>, step: u64) -> Result<Tensor<B, 4>> {
        let [_, _, height, width] = psi.dims();
        match *self {
            Tool::Vortex { disc, m, strength } => {
                let (x0, y0, radius) = disc.resolve(&self.name(), height, width)?;
                let sigma = radius / 2.0;
                let phases = cell_map(height, width, |x, y| {
                    let (dx, dy) = (x - x0, y - y0);
                    let distance2 = dx * dx + dy * dy;
                    if distance2 > radius * radius {
                        return 0.0;
                    }
                    let weight = strength * (-distance2 / (2.0 * sigma * sigma)).exp();
                    blended_phase(weight, m as f64 * dy.atan2(dx))
                });
                Ok(imprint_phase(psi, &phases))
            }
            Tool::Wave { kx, ky, amplitude } => {
                let phases = cell_map(height, width, |x, y| blended_phase(amplitude, kx * x + ky * y));
                Ok(imprint_phase(psi, &phases))
            }
            Tool::Collapse { disc, intensity, seed } => {
                let (x0, y0, radius) = disc.resolve(&self.name(), height, width)?;
                if intensity == 0.0 {
                    return Ok(psi);
                }
                collapse(psi, (x0, y0, radius), intensity, &mut random_stream(seed, step))
            }
            Tool::ClickOut { enabled, chance, seed } => {
                if !enabled || chance == 0.0 {
                    return Ok(psi);
                }
                Ok(click_out(psi, chance, &mut random_stream(seed, step)))
            }
            Tool::PhaseFlip { rate, seed } => noise::phase_flip(psi, rate, &mut random_stream(seed, step)),
            Tool::BitFlip { rate, seed } => noise::bit_flip(psi, rate, &mut random_stream(seed, step)),
        }
    }
}

/// The random numbers of one application: the seed picks the generator, the step its stream.
fn random_stream(seed: u64, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    rng
}

/// A value per cell, row-major [H, W], from (x = column, y = row).
fn cell_map(height: usize, width: usize, value: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    (0..height)
        .flat_map(|row| (0..width).map(move |column| (column as f64, row as f64)))
        .map(|(x, y)| value(x, y))
        .collect()
}

/// The phase of `(1 - weight) + weight exp(i angle)`; 0 (the identity) where that is 0.
fn blended_phase(weight: f64, angle: f64) -> f64 {
    if weight == 0.0 {
        return 0.0;
    }
    let (re, im) = ((1.0 - weight) + weight * angle.cos(), weight * angle.sin());
    if re.hypot(im) < 1e-12 {
        0.0
    } else {
        im.atan2(re)
    }
}

/// Multiplies every channel of each cell (every universe) by `exp(i phases[cell])`.
/// A phase of 0 gives the factor (1, 0) exactly, so those cells keep their bits.
fn imprint_phase<B: Backend>(psi: Tensor<B, 4>, phases: &[f64]) -> Tensor<B, 4> {
    let [_, _, height, width] = psi.dims();
    let device = psi.device();
    let plane =
        |values: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(values, [1, 1, height, width]), &device);
    let cos = plane(phases.iter().map(|phase| phase.cos() as f32).collect());
    let sin = plane(phases.iter().map(|phase| phase.sin() as f32).collect());
    complex::rotate(psi, cos, sin)
}

/// Projective measurement in a disc (see the module docs), on the host: it needs the
/// probabilities, and a tool acts once, so the read-back costs nothing that matters.
fn collapse<B: Backend>(
    psi: Tensor<B, 4>,
    (x0, y0, radius): (f64, f64, f64),
    intensity: f64,
    rng: &mut impl Rng,
) -> Result<Tensor<B, 4>> {
    let [batch, channels, height, width] = psi.dims();
    let d = channels / 2;
    let plane = height * width;
    let device = psi.device();
    let mut values = read_floats(psi)?;
    for b in 0..batch {
        for row in 0..height {
            for column in 0..width {
                let (dx, dy) = (column as f64 - x0, row as f64 - y0);
                if dx * dx + dy * dy > radius * radius {
                    continue;
                }
                let cell = row * width + column;
                let index = |c: usize| (b * channels + c) * plane + cell;
                let amplitude: Vec<(f64, f64)> =
                    (0..d).map(|c| (values[index(c)] as f64, values[index(d + c)] as f64)).collect();
                let weights: Vec<f64> = amplitude.iter().map(|(re, im)| re * re + im * im).collect();
                let total: f64 = weights.iter().sum();
                // One draw per cell in the disc, zero cells included, so the stream's use does
                // not depend on the state.
                let draw = rng.gen::<f64>() * total;
                if total == 0.0 {
                    continue;
                }
                let mut chosen = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
                let mut cumulative = 0.0;
                for (c, weight) in weights.iter().enumerate() {
                    cumulative += weight;
                    if draw < cumulative && *weight > 0.0 {
                        chosen = c;
                        break;
                    }
                }
                let magnitude = weights[chosen].sqrt();
                let mut blended: Vec<(f64, f64)> = amplitude
                    .iter()
                    .map(|(re, im)| ((1.0 - intensity) * re, (1.0 - intensity) * im))
                    .collect();
                blended[chosen].0 += intensity * amplitude[chosen].0 / magnitude;
                blended[chosen].1 += intensity * amplitude[chosen].1 / magnitude;
                let norm = blended.iter().map(|(re, im)| re * re + im * im).sum::<f64>().sqrt();
                for (c, (re, im)) in blended.into_iter().enumerate() {
                    values[index(c)] = (re / norm) as f32;
                    values[index(d + c)] = (im / norm) as f32;
                }
            }
        }
    }
    Ok(Tensor::from_data(TensorData::new(values, [batch, channels, height, width]), &device))
}

/// With probability `chance`, swaps `floor(0.5 * sqrt(H W))` disjoint random pairs of cells,
/// independently per universe (a gather with a host-drawn permutation; psi stays on the device).
fn click_out<B: Backend>(psi: Tensor<B, 4>, chance: f64, rng: &mut impl Rng) -> Tensor<B, 4> {
    let [batch, channels, height, width] = psi.dims();
    let plane = height * width;
    if rng.gen::<f64>() >= chance {
        return psi;
    }
    let pairs = click_out_pairs(height, width);
    let mut source: Vec<i64> = Vec::with_capacity(batch * channels * plane);
    for _ in 0..batch {
        let mut permutation: Vec<usize> = (0..plane).collect();
        // Partial Fisher-Yates: the first 2n entries become 2n distinct random cells.
        let mut cells: Vec<usize> = (0..plane).collect();
        for i in 0..2 * pairs {
            let j = rng.gen_range(i..plane);
            cells.swap(i, j);
        }
        for pair in cells[..2 * pairs].chunks_exact(2) {
            permutation.swap(pair[0], pair[1]);
        }
        for _ in 0..channels {
            source.extend(permutation.iter().map(|&cell| cell as i64));
        }
    }
    let device = psi.device();
    let indices = Tensor::<B, 3, Int>::from_data(TensorData::new(source, [batch, channels, plane]), &device);
    psi.reshape([batch, channels, plane]).gather(2, indices).reshape([batch, channels, height, width])
}

/// The number of pairs click-out swaps on an H x W grid: `floor(0.5 * sqrt(H W))`.
pub fn click_out_pairs(height: usize, width: usize) -> usize {
    (0.5 * ((height * width) as f64).sqrt()).floor() as usize
}
