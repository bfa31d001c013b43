//! The state of a universe: psi, complex [H, W, d_state] per universe, stored for the network as
//! real channels [B, 2d, H, W] (real parts in channels 0..d, imaginary parts in d..2d).

use std::path::PathBuf;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::io::state_file::HostState;
use crate::io::HostTensor;
use crate::models::Memory;

/// The lab's default phase-noise strength for `complex-noise`.
pub const DEFAULT_NOISE_STRENGTH: f64 = 0.1;

/// The largest `complex-noise` strength: beyond a few radians the phases are uniform, and a
/// strength near f64's limit would overflow the phases to infinity (and the state to NaN).
pub const MAX_NOISE_STRENGTH: f64 = 1000.0;

/// A batch of universes on a device.
#[derive(Debug, Clone)]
pub struct Universe<B: Backend> {
    /// [B, 2d, H, W].
    pub psi: Tensor<B, 4>,
    /// The ConvLSTM memory, when the model has one (absent until the first step).
    pub memory: Option<Memory<B>>,
    /// Steps taken since the initial state.
    pub step: u64,
}

impl<B: Backend> Universe<B> {
    /// A universe at step 0 without memory.
    pub fn new(psi: Tensor<B, 4>) -> Self {
        Self { psi, memory: None, step: 0 }
    }

    /// [batch, height, width, d_state].
    pub fn dims(&self) -> [usize; 4] {
        let [batch, channels, height, width] = self.psi.dims();
        [batch, height, width, channels / 2]
    }

    /// Uploads a host state.
    pub fn from_host(state: &HostState, device: &B::Device) -> Self {
        let [batch, height, width, d] = state.dims();
        let upload = |tensor: &HostTensor| {
            Tensor::<B, 4>::from_data(TensorData::new(tensor.data.clone(), [batch, height, width, d]), device)
        };
        let psi = Tensor::cat(vec![upload(&state.re), upload(&state.im)], 3).permute([0, 3, 1, 2]);
        let memory = state.memory.as_ref().map(|(hidden, cell)| {
            let make = |t: &HostTensor| {
                let shape: [usize; 4] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
                Tensor::<B, 4>::from_data(TensorData::new(t.data.clone(), shape), device)
            };
            Memory { hidden: make(hidden), cell: make(cell) }
        });
        Self { psi, memory, step: state.step }
    }

    /// Downloads to the host layout of state files.
    pub fn to_host(&self) -> Result<HostState> {
        let [batch, height, width, d] = self.dims();
        let channels_last = self.psi.clone().permute([0, 2, 3, 1]);
        let download = crate::readback::host_tensor::<B, 4>;
        let re = download(channels_last.clone().narrow(3, 0, d))?;
        let im = download(channels_last.narrow(3, d, d))?;
        debug_assert_eq!(re.shape, vec![batch, height, width, d]);
        let memory = match &self.memory {
            Some(memory) => Some((download(memory.hidden.clone())?, download(memory.cell.clone())?)),
            None => None,
        };
        Ok(HostState { re, im, memory, step: self.step })
    }
}

/// How to make the initial state.
#[derive(Debug, Clone, PartialEq)]
pub enum InitialState {
    /// Complex normal per channel, normalised per cell.
    Random,
    /// `exp(i * strength * N(0, 1))` per channel, normalised per cell (a near-uniform vacuum).
    ComplexNoise {
        /// The standard deviation of the phases.
        strength: f64,
    },
    /// All zeros.
    Zeros,
    /// A state file; tiled when the requested grid is a multiple of the file's.
    File(PathBuf),
}

impl InitialState {
    /// The start a model's configuration asks for (`run_defaults.init`), else `Random`.
    pub fn default_for(config: &crate::models::ModelConfig) -> Result<Self> {
        Ok(config.run_defaults.init.as_deref().map(str::parse).transpose()?.unwrap_or(InitialState::Random))
    }
}

impl FromStr for InitialState {
    type Err = Error;

    /// `random`, `complex-noise`, `complex-noise:STRENGTH`, `zeros`, or a file path.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "random" => Ok(InitialState::Random),
            "zeros" => Ok(InitialState::Zeros),
            "complex-noise" => Ok(InitialState::ComplexNoise { strength: DEFAULT_NOISE_STRENGTH }),
            _ => match text.strip_prefix("complex-noise:") {
                Some(value) => match value.parse::<f64>() {
                    Ok(strength) if (0.0..=MAX_NOISE_STRENGTH).contains(&strength) => {
                        Ok(InitialState::ComplexNoise { strength })
                    }
                    _ => Err(Error::InvalidState(format!(
                        "complex-noise strength must be a number from 0 to {MAX_NOISE_STRENGTH} (phases \
                         spread by a few radians are uniform already), got '{value}'"
                    ))),
                },
                None => Ok(InitialState::File(PathBuf::from(text))),
            },
        }
    }
}

impl std::fmt::Display for InitialState {
    /// The `--init` text that parses back to this value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitialState::Random => f.write_str("random"),
            InitialState::Zeros => f.write_str("zeros"),
            InitialState::ComplexNoise { strength } => write!(f, "complex-noise:{strength}"),
            InitialState::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Generates a seeded initial state on the host, [batch, height, width, d].
/// The same seed gives the same state on every backend and machine.
pub fn generate(
    kind: &InitialState,
    batch: usize,
    height: usize,
    width: usize,
    d_state: usize,
    seed: u64,
) -> Result<HostState> {
    let shape = vec![batch, height, width, d_state];
    let count = batch * height * width * d_state;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (re, im) = match kind {
        InitialState::Random => {
            let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
            let re: Vec<f32> = (0..count).map(|_| normal()).collect();
            let im: Vec<f32> = (0..count).map(|_| normal()).collect();
            (re, im)
        }
        InitialState::ComplexNoise { strength } => {
            let phases: Vec<f64> = (0..count)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    strength * z
                })
                .collect();
            (
                phases.iter().map(|phase| phase.cos() as f32).collect(),
                phases.iter().map(|phase| phase.sin() as f32).collect(),
            )
        }
        InitialState::Zeros => (vec![0.0; count], vec![0.0; count]),
        InitialState::File(path) => {
            return Err(Error::InvalidState(format!(
                "{} is a state file, which is loaded rather than generated: give it as --init (run, \
                 serve) or init= (Python)",
                path.display()
            )))
        }
    };
    let mut state = HostState {
        re: HostTensor { shape: shape.clone(), data: re },
        im: HostTensor { shape, data: im },
        memory: None,
        step: 0,
    };
    normalize_cells(&mut state);
    Ok(state)
}

/// The initial state of a universe described by `init`, `batch`, `grid` and `seed` for a model
/// of configuration `config` on backend `B`, as every program starts one (`run`, the Python
/// `Simulation`, the live lab), after checking that it fits in memory:
/// - a state file (ours, or the lab's `.pt` snapshot) is loaded, and tiled when `grid` is a
///   multiple of its grid; its d_state must be the model's, and its batch `batch` (or `batch`
///   is 1);
/// - otherwise a seeded state is generated on `grid`, by default the model's own grid (64x64
///   unless an imported experiment says); for a model trained on a smaller grid that divides it,
///   it is made at that size and tiled, as the lab's engine starts such runs.
///
/// Returns [batch, H, W, d] on the host.
pub fn resolve_initial<B: crate::EngineBackend>(
    config: &crate::models::ModelConfig,
    init: &InitialState,
    batch: usize,
    grid: Option<(usize, usize)>,
    seed: u64,
) -> Result<HostState> {
    let d_state = config.d_state;
    let fits = |batch: usize, (height, width): (usize, usize)| {
        let estimate = crate::footprint::dense_run(config, batch, height, width, B::tensors_on_host());
        crate::footprint::check_host(&estimate, B::engine_name())
    };
    if batch == 0 {
        return Err(Error::InvalidRun("the batch must hold at least one universe".into()));
    }
    match init {
        InitialState::File(path) => {
            let state = crate::io::state_file::load_state(path)?;
            let [file_batch, height, width, d] = state.dims();
            if d != d_state {
                return Err(Error::format(
                    path,
                    format!("the state has d_state {d} but the model expects {d_state}"),
                ));
            }
            if batch != 1 && batch != file_batch {
                return Err(Error::format(
                    path,
                    format!("the file holds {file_batch} universe(s), the run asks for {batch}"),
                ));
            }
            match grid {
                Some(grid) if grid != (height, width) => {
                    fits(file_batch, grid)?;
                    tile(&state, grid.0, grid.1)
                }
                _ => {
                    fits(file_batch, (height, width))?;
                    Ok(state)
                }
            }
        }
        kind => {
            let default_grid = config.run_defaults.grid.map_or((64, 64), |side| (side, side));
            let (height, width) = grid.unwrap_or(default_grid);
            config.check_grid(height, width)?;
            fits(batch, (height, width))?;
            match config.run_defaults.training_grid {
                Some(side) if side < height.max(width) && height % side == 0 && width % side == 0 => {
                    tracing::info!(
                        "the model was trained on {side}x{side}: the start is a {side}x{side} state tiled"
                    );
                    tile(&generate(kind, batch, side, side, d_state, seed)?, height, width)
                }
                _ => generate(kind, batch, height, width, d_state, seed),
            }
        }
    }
}

/// Divides every cell by its L2 norm over channels (plus epsilon), on the host.
pub fn normalize_cells(state: &mut HostState) {
    let d = state.re.shape[3];
    crate::complex::normalize_host_cells(&mut state.re.data, &mut state.im.data, d);
}

/// Repeats a smaller state over a larger grid (`height`, `width` multiples of the base's).
/// Memory is not tiled: a tiled state starts without one.
pub fn tile(base: &HostState, height: usize, width: usize) -> Result<HostState> {
    let [batch, base_height, base_width, d] = base.dims();
    if !height.is_multiple_of(base_height) || !width.is_multiple_of(base_width) {
        return Err(Error::InvalidState(format!(
            "cannot tile a {base_height}x{base_width} state over a {height}x{width} grid: \
             the grid must be a multiple of the state in both dimensions"
        )));
    }
    let repeat = |source: &HostTensor| {
        let mut data = Vec::with_capacity(batch * height * width * d);
        for b in 0..batch {
            for y in 0..height {
                let row = (b * base_height + y % base_height) * base_width;
                for x in 0..width {
                    let start = (row + x % base_width) * d;
                    data.extend_from_slice(&source.data[start..start + d]);
                }
            }
        }
        HostTensor { shape: vec![batch, height, width, d], data }
    };
    Ok(HostState { re: repeat(&base.re), im: repeat(&base.im), memory: None, step: base.step })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_state_is_normalised_and_seeded() {
        let a = generate(&InitialState::Random, 2, 4, 8, 3, 7).unwrap();
        let b = generate(&InitialState::Random, 2, 4, 8, 3, 7).unwrap();
        let c = generate(&InitialState::Random, 2, 4, 8, 3, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.re.data, c.re.data);
        for (re, im) in a.re.data.chunks(3).zip(a.im.data.chunks(3)) {
            let norm: f32 = re.iter().chain(im).map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
    }

    #[test]
    fn complex_noise_has_equal_magnitudes_and_small_phases() {
        let state = generate(&InitialState::ComplexNoise { strength: 0.1 }, 1, 4, 4, 4, 1).unwrap();
        for (re, im) in state.re.data.iter().zip(&state.im.data) {
            let magnitude = (re * re + im * im).sqrt();
            assert!((magnitude - 0.5).abs() < 1e-5, "{magnitude}");
            assert!(im.atan2(*re).abs() < 0.6);
        }
    }

    #[test]
    fn tiling_repeats_the_base() {
        let base = generate(&InitialState::Random, 1, 4, 4, 2, 3).unwrap();
        let tiled = tile(&base, 8, 12).unwrap();
        let at = |s: &HostState, y: usize, x: usize| {
            let w = s.re.shape[2];
            s.re.data[(y * w + x) * 2]
        };
        assert_eq!(at(&tiled, 5, 9), at(&base, 1, 1));
        assert_eq!(at(&tiled, 7, 11), at(&base, 3, 3));
        assert!(tile(&base, 6, 8).is_err());
    }

    #[test]
    fn parses_initial_states() {
        assert_eq!("random".parse::<InitialState>().unwrap(), InitialState::Random);
        assert_eq!(
            "complex-noise:0.3".parse::<InitialState>().unwrap(),
            InitialState::ComplexNoise { strength: 0.3 }
        );
        assert!("complex-noise:-1".parse::<InitialState>().is_err());
        assert_eq!(
            "seed.safetensors".parse::<InitialState>().unwrap(),
            InitialState::File("seed.safetensors".into())
        );
    }
}
