//! The complex channel layout, written once.
//!
//! A state holds `d` complex numbers per cell. The networks see them as `2d` real channels,
//! `[B, 2d, H, W]`: the real parts in channels `0..d`, the imaginary parts in `d..2d`. Every
//! piece of code that reads such a tensor as complex numbers (the step, the tools, the noise,
//! the observables, the losses, the sparse engine) goes through this module, on the device
//! or, for the host-side generators, through [`normalizer`].

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// How a cell is brought back to unit norm after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Renormalization {
    /// `psi / (sqrt(sum_c |psi_c|^2) + 1e-9)`: the lab's engine today, and atheria's default.
    #[default]
    EpsilonAddedToNorm,
    /// `psi / sqrt(sum_c |psi_c|^2 + 1e-8)`: the lab's first engine (`QCA_Operator_Deep`).
    EpsilonUnderRoot,
}

impl Renormalization {
    /// The epsilon added to the norm by [`Renormalization::EpsilonAddedToNorm`].
    pub const NORM_EPSILON: f64 = 1e-9;
    /// The epsilon added under the root by [`Renormalization::EpsilonUnderRoot`].
    pub const SQUARED_NORM_EPSILON: f64 = 1e-8;
}

/// Real and imaginary parts.
///
/// # Shapes
/// - `psi`: \[B, 2d, H, W\] -> (\[B, d, H, W\], \[B, d, H, W\])
pub fn parts<B: Backend>(psi: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let d = psi.dims()[1] / 2;
    (psi.clone().narrow(1, 0, d), psi.narrow(1, d, d))
}

/// The inverse of [`parts`].
///
/// # Shapes
/// - `re`, `im`: \[B, d, H, W\] -> \[B, 2d, H, W\]
pub fn from_parts<B: Backend>(re: Tensor<B, 4>, im: Tensor<B, 4>) -> Tensor<B, 4> {
    Tensor::cat(vec![re, im], 1)
}

/// The complex product, channel by channel.
///
/// # Shapes
/// - `a`, `b`: \[B, 2d, H, W\] (`b` may broadcast over B) -> \[B, 2d, H, W\]
pub fn mul<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    let (a_re, a_im) = parts(a);
    let (b_re, b_im) = parts(b);
    let re = a_re.clone() * b_re.clone() - a_im.clone() * b_im.clone();
    let im = a_re * b_im + a_im * b_re;
    from_parts(re, im)
}

/// Multiplies every channel of each cell by the cell's factor `cos + i sin` (a phase when
/// `cos^2 + sin^2 = 1`).
///
/// # Shapes
/// - `psi`: \[B, 2d, H, W\], `cos`, `sin`: \[B or 1, 1, H, W\] -> \[B, 2d, H, W\]
pub fn rotate<B: Backend>(psi: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let (re, im) = parts(psi);
    let new_re = re.clone() * cos.clone() - im.clone() * sin.clone();
    let new_im = re * sin + im * cos;
    from_parts(new_re, new_im)
}

/// `|psi_c|^2` per channel.
///
/// # Shapes
/// - `psi`: \[B, 2d, H, W\] -> \[B, d, H, W\]
pub fn channel_densities<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 4> {
    let (re, im) = parts(psi.square());
    re + im
}

/// `sqrt(|psi_c|^2 + epsilon)` per channel: `epsilon` 0 for the exact magnitude, a small
/// positive one where a gradient must stay finite at zero.
///
/// # Shapes
/// - `psi`: \[B, 2d, H, W\] -> \[B, d, H, W\]
pub fn magnitudes<B: Backend>(psi: Tensor<B, 4>, epsilon: f64) -> Tensor<B, 4> {
    let densities = channel_densities(psi);
    if epsilon == 0.0 {
        densities.sqrt()
    } else {
        (densities + epsilon).sqrt()
    }
}

/// The squared norm of every cell, `sum_c |psi_c|^2`. Real and imaginary parts are all
/// channels, so this is a plain sum of squares over the channel axis.
///
/// # Shapes
/// - `psi`: \[B, 2d, H, W\] -> \[B, 1, H, W\]
pub fn cell_squared_norm<B: Backend>(psi: Tensor<B, 4>) -> Tensor<B, 4> {
    psi.square().sum_dim(1)
}

/// Every cell divided by its norm, with the epsilon where `rule` puts it.
///
/// # Shapes
/// - `psi`: \[B, 2d, H, W\] -> \[B, 2d, H, W\]
pub fn normalize<B: Backend>(psi: Tensor<B, 4>, rule: Renormalization) -> Tensor<B, 4> {
    let squared = cell_squared_norm(psi.clone());
    let norm = match rule {
        Renormalization::EpsilonAddedToNorm => squared.sqrt() + Renormalization::NORM_EPSILON,
        Renormalization::EpsilonUnderRoot => (squared + Renormalization::SQUARED_NORM_EPSILON).sqrt(),
    };
    psi / norm
}

/// The factor that renormalises a cell of squared norm `squared_norm` under `rule`: what
/// [`normalize`] multiplies by, for host-side generators (computed in f64).
pub fn normalizer(squared_norm: f64, rule: Renormalization) -> f64 {
    match rule {
        Renormalization::EpsilonAddedToNorm => 1.0 / (squared_norm.sqrt() + Renormalization::NORM_EPSILON),
        Renormalization::EpsilonUnderRoot => {
            1.0 / (squared_norm + Renormalization::SQUARED_NORM_EPSILON).sqrt()
        }
    }
}

/// Renormalises every cell of a channels-last host state (`re`, `im`: `[.., d]` row-major,
/// `d` values per cell) in f64, under the default rule.
pub fn normalize_host_cells(re: &mut [f32], im: &mut [f32], d: usize) {
    for (re, im) in re.chunks_mut(d).zip(im.chunks_mut(d)) {
        let squared: f64 =
            re.iter().zip(im.iter()).map(|(r, i)| (*r as f64).powi(2) + (*i as f64).powi(2)).sum();
        let scale = normalizer(squared, Renormalization::default());
        for value in re.iter_mut().chain(im.iter_mut()) {
            *value = (*value as f64 * scale) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Tensor;

    use super::*;

    fn values(tensor: Tensor<NdArray, 4>) -> Vec<f32> {
        crate::readback::floats(tensor).unwrap()
    }

    /// One cell with two channels: (1 + 2i, 3 - i).
    fn cell() -> Tensor<NdArray, 4> {
        Tensor::from_floats([[[[1.0]], [[3.0]], [[2.0]], [[-1.0]]]], &Default::default())
    }

    #[test]
    fn products_and_rotations_follow_complex_arithmetic() {
        // (1 + 2i)(2 - i) = 4 + 3i; (3 - i)(1 + i) = 4 + 2i.
        let b = Tensor::from_floats([[[[2.0]], [[1.0]], [[-1.0]], [[1.0]]]], &Default::default());
        assert_eq!(values(mul(cell(), b)), [4.0, 4.0, 3.0, 2.0]);
        // A quarter turn: multiply by i.
        let one = Tensor::<NdArray, 4>::ones([1, 1, 1, 1], &Default::default());
        assert_eq!(values(rotate(cell(), one.zeros_like(), one)), [-2.0, 1.0, 1.0, 3.0]);
    }

    #[test]
    fn densities_magnitudes_and_norms() {
        assert_eq!(values(channel_densities(cell())), [5.0, 10.0]);
        let magnitudes = values(magnitudes(cell(), 0.0));
        assert!((magnitudes[0] - 5f32.sqrt()).abs() < 1e-6 && (magnitudes[1] - 10f32.sqrt()).abs() < 1e-6);
        assert_eq!(values(cell_squared_norm(cell())), [15.0]);
        for rule in [Renormalization::EpsilonAddedToNorm, Renormalization::EpsilonUnderRoot] {
            let unit = values(cell_squared_norm(normalize(cell(), rule)));
            assert!((unit[0] - 1.0).abs() < 1e-6, "{rule:?}: {unit:?}");
        }
    }

    #[test]
    fn the_epsilon_sits_where_the_rule_says() {
        // A zero cell stays zero either way; a tiny cell shows where the epsilon is.
        let tiny = 1e-10f64;
        let added = normalizer(tiny * tiny, Renormalization::EpsilonAddedToNorm);
        let under = normalizer(tiny * tiny, Renormalization::EpsilonUnderRoot);
        assert!((added - 1.0 / (tiny + 1e-9)).abs() < 1e-3 * added);
        assert!((under - 1.0 / (tiny * tiny + 1e-8f64).sqrt()).abs() < 1e-9 * under);
        assert!(added > 10.0 * under);
    }

    #[test]
    fn host_cells_are_normalised() {
        let (mut re, mut im) = (vec![3.0f32, 0.0, 0.0, 0.0], vec![0.0f32, 4.0, 0.0, 0.0]);
        normalize_host_cells(&mut re, &mut im, 2);
        assert!((re[0] - 0.6).abs() < 1e-6 && (im[1] - 0.8).abs() < 1e-6);
        assert_eq!((re[2], im[3]), (0.0, 0.0));
    }
}
