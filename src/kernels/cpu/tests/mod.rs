//! The CPU kernels against references computed here in f64, on every kernel path this
//! processor supports ([`isa::SimdPath`]).
//!
//! Every bound is a first-order rounding-error bound of the computation in f32: the number of
//! roundings a result goes through (the length of its sums, the depth of its element-wise chain)
//! times `f32::EPSILON` times the magnitude that rounding scales with, which is the computation
//! evaluated with absolute values (so cancellation is accounted for, not hidden). Nothing is
//! tuned to one machine's rounding. Each test also shows that a kernel with a real mistake
//! (the mistake's exact result, rounded to f32) fails its bound.

use super::winograd::{same_bits, winograd_blocked, WinogradKernels};
use super::winograd_grad::weight_grad_in_blocks;
use super::*;
use crate::kernels::isa::{self, SimdPath};
use crate::kernels::reference::GROUP_NORM_EPS;
use rand::{Rng, SeedableRng};

/// f32's machine epsilon: twice the largest relative change one rounding makes.
const EPS: f64 = f32::EPSILON as f64;

/// The depth of the element-wise chains (transforms, affine steps, the ELU's polynomial),
/// counted generously: no chain here rounds more than this many times in sequence.
const DEPTH: f64 = 16.0;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Runs `test` once on every kernel path this processor can execute.
fn on_every_path(test: impl Fn(SimdPath)) {
    for path in SimdPath::supported() {
        isa::with_path(path, || test(path)).expect("a supported path can be forced");
    }
}

/// `Ok` when `|actual - exact| <= bound` everywhere; otherwise the worst element.
fn within(actual: &[f32], exact: &[f64], bound: &[f64]) -> Result<(), String> {
    assert_eq!((actual.len(), exact.len()), (bound.len(), bound.len()), "lengths differ");
    let mut worst: Option<(f64, usize)> = None;
    for (index, ((a, e), b)) in actual.iter().zip(exact).zip(bound).enumerate() {
        let error = (*a as f64 - e).abs();
        let ratio = if error == 0.0 { 0.0 } else { error / b };
        // Written so that a NaN error counts as a failure.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let outside = !(ratio <= 1.0);
        if outside && worst.is_none_or(|(r, _)| ratio > r) {
            worst = Some((ratio, index));
        }
    }
    match worst {
        None => Ok(()),
        Some((ratio, i)) => Err(format!(
            "element {i}: {} vs exact {}, error {:.3e} is {ratio:.1} times its bound {:.3e}",
            actual[i],
            exact[i],
            (actual[i] as f64 - exact[i]).abs(),
            bound[i]
        )),
    }
}

fn rounded(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

mod conv_transpose;
mod group_norm;
mod max_pool;
mod pointwise;
mod transpose;
mod winograd;

/// Strided views (a permuted NHWC array read as NCHW, a sliced one, a rank-3 one) are read in
/// row-major order, as ndarray's element iterator reads them.
#[test]
fn strided_views_are_copied_in_row_major_order() {
    let values = random(2 * 5 * 7 * 3, 11);
    let nhwc = ndarray::ArrayD::from_shape_vec(IxDyn(&[2, 5, 7, 3]), values).unwrap();
    let permuted = nhwc.view().permuted_axes(IxDyn(&[0, 3, 1, 2]));
    let sliced = nhwc.slice(ndarray::s![.., 1..4, ..;2, ..]).into_dyn();
    let sliced_last = nhwc.slice(ndarray::s![.., .., .., 1..]).into_dyn();
    let rank3 = nhwc.index_axis(ndarray::Axis(0), 1).permuted_axes(IxDyn(&[2, 0, 1]));
    // Two tiles per plane, the second one partial.
    let wide = ndarray::ArrayD::from_shape_vec(IxDyn(&[2, 40, 30, 5]), random(2 * 40 * 30 * 5, 12)).unwrap();
    let wide_permuted = wide.view().permuted_axes(IxDyn(&[0, 3, 1, 2]));
    let transposes =
        [&permuted, &rank3, &wide_permuted].map(|view| transposed_memory(view).map(|(_, dims)| dims));
    assert_eq!(transposes, [Some([2, 35, 3]), Some([1, 35, 3]), Some([2, 1200, 5])]);
    assert!(transposed_memory(&sliced).is_none() && transposed_memory(&sliced_last).is_none());
    for view in [permuted, sliced, sliced_last, rank3, wide_permuted] {
        assert!(view.as_slice().is_none(), "the case is strided");
        assert_eq!(standard_layout(view.view()), view.iter().copied().collect::<Vec<_>>());
    }
}
