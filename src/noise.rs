//! Noise injectors: random phase flips and bit flips of whole cells.
//!
//! ```text
//! phase_flip(psi, rate, rng) -> Result<psi'>   each chosen cell: psi_c *= exp(i theta_c), theta_c ~ U[0, 2 pi)
//! bit_flip(psi, rate, rng)   -> Result<psi'>   each chosen cell: psi' = -psi
//! ```
//!
//! `psi` is the engine's [B, 2d, H, W] layout; a cell is chosen with probability `rate` (a
//! Bernoulli draw per cell of every universe), and `rate` must lie in [0, 1].
//!
//! The randomness comes from the caller's host RNG (the engine uses `rand_chacha::ChaCha8Rng`),
//! drawn in bulk in a fixed order (first one uniform per cell, in [B, H, W] row-major order,
//! then for phase flips one phase per channel of every cell, in [B, d, H, W] order) and applied
//! to psi with tensor operations. Hence:
//!
//! - the same seed gives the same noise on every backend;
//! - psi is never read back to the host;
//! - the result is differentiable with respect to psi (the noise is a constant factor), so the
//!   trainer can inject noise under burn's autodiff backend;
//! - every magnitude `|psi_c|` is preserved, so normalised cells stay normalised.
//!
//! A rate of 0 returns psi unchanged without drawing anything.
//!
//! ```
//! use atheria::noise;
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use rand::SeedableRng;
//!
//! let psi = Tensor::<NdArray, 4>::ones([1, 4, 8, 8], &Default::default());
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let flipped = noise::bit_flip(psi.clone(), 0.1, &mut rng).unwrap();
//! let rotated = noise::phase_flip(flipped, 0.1, &mut rng).unwrap();
//! assert_eq!(rotated.dims(), psi.dims());
//! ```

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;

use crate::complex;
use crate::error::{Error, Result};

/// Multiplies every channel of each chosen cell by its own random phase `exp(i theta)`,
/// `theta ~ U[0, 2 pi)`.
pub fn phase_flip<B: Backend>(psi: Tensor<B, 4>, rate: f64, rng: &mut impl Rng) -> Result<Tensor<B, 4>> {
    check_rate(rate)?;
    if rate == 0.0 {
        return Ok(psi);
    }
    let [batch, channels, height, width] = psi.dims();
    let d = channels / 2;
    let chosen = choose_cells(batch * height * width, rate, rng);
    let plane = height * width;
    // The factor in the same layout as psi: cos theta in channels 0..d, sin theta in d..2d;
    // (1, 0), the identity, for cells that were not chosen.
    let mut factor = vec![0.0f32; batch * channels * plane];
    for b in 0..batch {
        for c in 0..d {
            for cell in 0..plane {
                let theta = rng.gen::<f64>() * std::f64::consts::TAU;
                let (sin, cos) = if chosen[b * plane + cell] { theta.sin_cos() } else { (0.0, 1.0) };
                factor[(b * channels + c) * plane + cell] = cos as f32;
                factor[(b * channels + d + c) * plane + cell] = sin as f32;
            }
        }
    }
    let factor = Tensor::from_data(TensorData::new(factor, [batch, channels, height, width]), &psi.device());
    Ok(complex::mul(psi, factor))
}

/// Negates each chosen cell (`psi -> -psi`, every channel).
pub fn bit_flip<B: Backend>(psi: Tensor<B, 4>, rate: f64, rng: &mut impl Rng) -> Result<Tensor<B, 4>> {
    check_rate(rate)?;
    if rate == 0.0 {
        return Ok(psi);
    }
    let [batch, _, height, width] = psi.dims();
    let signs: Vec<f32> = choose_cells(batch * height * width, rate, rng)
        .into_iter()
        .map(|chosen| if chosen { -1.0 } else { 1.0 })
        .collect();
    let signs = Tensor::<B, 4>::from_data(TensorData::new(signs, [batch, 1, height, width]), &psi.device());
    Ok(psi * signs)
}

/// One Bernoulli(rate) draw per cell.
pub(crate) fn choose_cells(cells: usize, rate: f64, rng: &mut impl Rng) -> Vec<bool> {
    (0..cells).map(|_| rng.gen::<f64>() < rate).collect()
}

/// A probability: finite and in [0, 1].
pub(crate) fn check_rate(rate: f64) -> Result<()> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(Error::InvalidTool(format!("noise rate must be in [0, 1], got {rate}")))
    }
}
