//! The CPU kernels against references computed here in f64, on every kernel path this
//! processor supports ([`isa::SimdPath`]).
//!
//! Every bound is a first-order rounding-error bound of the computation in f32: the number of
//! roundings a result goes through (the length of its sums, the depth of its element-wise chain)
//! times `f32::EPSILON` times the magnitude that rounding scales with, which is the computation
//! evaluated with absolute values (so cancellation is accounted for, not hidden). Nothing is
//! tuned to one machine's rounding. Each test also shows that a kernel with a real mistake
//! (the mistake's exact result, rounded to f32) fails its bound.

use super::winograd::winograd_blocked;
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

// ---------------------------------------------------------------------------------------------
// 3x3 convolution

/// The 3x3 convolution (stride 1, zero padding 1) by its definition, in f64:
/// `out[n][k][y][x] = sum_{c,i,j} w[k][c][i][j] x[n][c][y+i-1][x+j-1]`.
fn direct_conv3x3(x: &[f32], [n, c, h, w]: [usize; 4], weight: &[f32], k: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * k * h * w];
    for ni in 0..n {
        for ki in 0..k {
            for y in 0..h {
                for xx in 0..w {
                    let mut sum = 0.0f64;
                    for ci in 0..c {
                        for i in 0..3 {
                            for j in 0..3 {
                                let (sy, sx) = (y as isize + i as isize - 1, xx as isize + j as isize - 1);
                                if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                                    sum += weight[((ki * c + ci) * 3 + i) * 3 + j] as f64
                                        * x[((ni * c + ci) * h + sy as usize) * w + sx as usize] as f64;
                                }
                            }
                        }
                    }
                    out[((ni * k + ki) * h + y) * w + xx] = sum;
                }
            }
        }
    }
    out
}

/// What Winograd F(2x2, 3x3)'s rounding scales with: the algorithm evaluated with the absolute
/// values of its transforms and data, `|A^T| [sum_c (|G| |g| |G^T|) . (|B^T| |d| |B|)] |A|`.
fn winograd_magnitude(x: &[f32], [n, c, h, w]: [usize; 4], weight: &[f32], k: usize) -> Vec<f64> {
    const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0]];
    const BT: [[f64; 4]; 4] =
        [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]];
    const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]];
    let kernel = |ki: usize, ci: usize| {
        let g = |i: usize, j: usize| weight[((ki * c + ci) * 3 + i) * 3 + j].abs() as f64;
        let mut u = [[0.0f64; 4]; 4];
        for (a, u_row) in u.iter_mut().enumerate() {
            for (b, value) in u_row.iter_mut().enumerate() {
                *value = (0..3)
                    .flat_map(|i| (0..3).map(move |j| (i, j)))
                    .map(|(i, j)| G[a][i] * g(i, j) * G[b][j])
                    .sum();
            }
        }
        u
    };
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![0.0f64; n * k * h * w];
    for ni in 0..n {
        for ty in 0..tiles_y {
            for tx in 0..tiles_x {
                let input = |ci: usize| {
                    let d = |r: usize, s: usize| {
                        let (y, xx) = ((2 * ty + r) as isize - 1, (2 * tx + s) as isize - 1);
                        if y < 0 || y >= h as isize || xx < 0 || xx >= w as isize {
                            0.0
                        } else {
                            x[((ni * c + ci) * h + y as usize) * w + xx as usize].abs() as f64
                        }
                    };
                    let mut v = [[0.0f64; 4]; 4];
                    for (a, v_row) in v.iter_mut().enumerate() {
                        for (b, value) in v_row.iter_mut().enumerate() {
                            *value = (0..4)
                                .flat_map(|r| (0..4).map(move |s| (r, s)))
                                .map(|(r, s)| BT[a][r] * d(r, s) * BT[b][s])
                                .sum();
                        }
                    }
                    v
                };
                let inputs: Vec<_> = (0..c).map(input).collect();
                for ki in 0..k {
                    let mut m = [[0.0f64; 4]; 4];
                    for (ci, v) in inputs.iter().enumerate() {
                        let u = kernel(ki, ci);
                        for a in 0..4 {
                            for b in 0..4 {
                                m[a][b] += u[a][b] * v[a][b];
                            }
                        }
                    }
                    for (i, at_row) in AT.iter().enumerate() {
                        for (j, at_col) in AT.iter().enumerate() {
                            let (y, xx) = (2 * ty + i, 2 * tx + j);
                            if y < h && xx < w {
                                let value: f64 = (0..4)
                                    .flat_map(|a| (0..4).map(move |b| (a, b)))
                                    .map(|(a, b)| at_row[a] * m[a][b] * at_col[b])
                                    .sum();
                                out[((ni * k + ki) * h + y) * w + xx] = value;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Winograd's bound: the GEMM's sum over `c` channels plus the transforms' depth.
fn winograd_bound(x: &[f32], dims: [usize; 4], weight: &[f32], k: usize) -> Vec<f64> {
    let roundings = dims[1] as f64 + DEPTH;
    winograd_magnitude(x, dims, weight, k).iter().map(|m| roundings * EPS * m).collect()
}

/// The kernel with each 3x3 tap grid transposed (rows read as columns): an orientation mistake.
fn transposed_taps(weight: &[f32]) -> Vec<f32> {
    let mut out = weight.to_vec();
    for (source, target) in weight.chunks(9).zip(out.chunks_mut(9)) {
        for i in 0..3 {
            for j in 0..3 {
                target[j * 3 + i] = source[i * 3 + j];
            }
        }
    }
    out
}

#[test]
fn winograd_matches_the_definition_including_odd_sizes() {
    let cases =
        [([2, 3, 8, 12], 5), ([1, 4, 7, 5], 3), ([1, 1, 1, 1], 2), ([3, 2, 4, 4], 1), ([2, 5, 40, 44], 7)];
    let prepared: Vec<_> = cases
        .iter()
        .map(|&(dims, k)| {
            let x = random(dims.iter().product(), 1);
            let weight = random(k * dims[1] * 9, 2);
            let exact = direct_conv3x3(&x, dims, &weight, k);
            let bound = winograd_bound(&x, dims, &weight, k);
            (dims, k, x, weight, exact, bound)
        })
        .collect();
    on_every_path(|path| {
        for (dims, k, x, weight, exact, bound) in &prepared {
            let (dims, k) = (*dims, *k);
            within(&winograd_conv3x3(x, dims, weight, k), exact, bound)
                .unwrap_or_else(|e| panic!("{path}, {dims:?} k {k}: {e}"));
            // The blocked path, with blocks of one tile row, of several, and of everything.
            for tiles in [1, 8, 4096] {
                within(&winograd_blocked(x, dims, weight, k, tiles), exact, bound)
                    .unwrap_or_else(|e| panic!("{path}, {dims:?} k {k} blocks of {tiles}: {e}"));
            }
        }
    });
    // Real mistakes fail: taps read transposed, and the last input channel left out.
    let (dims, k, x, weight, exact, bound) = &prepared[0];
    let wrong = rounded(&direct_conv3x3(x, *dims, &transposed_taps(weight), *k));
    assert!(within(&wrong, exact, bound).is_err());
    let mut dropped = weight.clone();
    dropped.chunks_mut(9 * dims[1]).for_each(|kernel| kernel[9 * (dims[1] - 1)..].fill(0.0));
    let wrong = rounded(&direct_conv3x3(x, *dims, &dropped, *k));
    assert!(within(&wrong, exact, bound).is_err());
}

#[test]
fn changed_kernels_are_never_served_from_the_transform_cache() {
    // Same shape, then changed values (as a training step does), then the first again.
    let dims = [1, 3, 6, 5];
    let x = random(dims.iter().product(), 21);
    let first = random(2 * 3 * 9, 22);
    let mut second = first.clone();
    second[7] += 0.5;
    on_every_path(|path| {
        for weight in [&first, &second, &first] {
            let exact = direct_conv3x3(&x, dims, weight, 2);
            within(&winograd_conv3x3(&x, dims, weight, 2), &exact, &winograd_bound(&x, dims, weight, 2))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    });
    // A stale kernel (the first served for the second) would fail the same check.
    let stale = rounded(&direct_conv3x3(&x, dims, &first, 2));
    assert!(
        within(&stale, &direct_conv3x3(&x, dims, &second, 2), &winograd_bound(&x, dims, &second, 2)).is_err()
    );
}

#[test]
fn convolution_gradients_match_the_exact_derivatives() {
    let dims @ [n, c, h, w] = [2, 3, 6, 4];
    let k = 2;
    let x = random(dims.iter().product(), 3);
    let weight = random(k * c * 9, 4);
    let grad = random(n * k * h * w, 5);
    // loss = sum(grad * conv(x, w)) is linear in x and in w, so a unit bump's change is the
    // exact derivative.
    let loss = |x: &[f32], w: &[f32]| -> f64 {
        direct_conv3x3(x, dims, w, k).iter().zip(&grad).map(|(o, g)| o * *g as f64).sum()
    };
    let base = loss(&x, &weight);
    let exact_x: Vec<f64> = (0..x.len())
        .map(|index| {
            let mut bumped = x.clone();
            bumped[index] += 1.0;
            loss(&bumped, &weight) - base
        })
        .collect();
    let exact_w: Vec<f64> = (0..weight.len())
        .map(|index| {
            let mut bumped = weight.clone();
            bumped[index] += 1.0;
            loss(&x, &bumped) - base
        })
        .collect();
    // The input gradient is a Winograd convolution of the output gradient; the weight
    // gradient sums |x| |grad| over every pixel of every image.
    let flipped = flip_transpose(&weight, k, c);
    let bound_x = winograd_bound(&grad, [n, k, h, w], &flipped, c);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let terms = (n * h * w) as f64 + DEPTH;
    let magnitude_w: Vec<f64> = (0..weight.len())
        .map(|index| {
            let mut bumped = vec![0.0; weight.len()];
            bumped[index] = 1.0;
            direct_conv3x3(&abs(&x), dims, &bumped, k)
                .iter()
                .zip(&grad)
                .map(|(o, g)| o * g.abs() as f64)
                .sum()
        })
        .collect();
    let bound_w: Vec<f64> = magnitude_w.iter().map(|m| terms * EPS * m).collect();
    on_every_path(|path| {
        let grad_x = winograd_conv3x3(&grad, [n, k, h, w], &flipped, c);
        within(&grad_x, &exact_x, &bound_x).unwrap_or_else(|e| panic!("{path}, input gradient: {e}"));
        let grad_w = conv3x3_weight_grad(&x, dims, &grad, k);
        within(&grad_w, &exact_w, &bound_w).unwrap_or_else(|e| panic!("{path}, weight gradient: {e}"));
    });
    // The kernel flipped without swapping the channels would be wrong.
    let unswapped = winograd_conv3x3(&grad, [n, k, h, w], &transposed_taps(&flipped), c);
    assert!(within(&unswapped, &exact_x, &bound_x).is_err());
}

#[test]
fn transpose_swaps_rows_and_columns() {
    let (rows, cols) = (70, 45);
    let a = random(rows * cols, 12);
    let mut out = vec![0.0; rows * cols];
    transpose(&a, rows, cols, &mut out);
    for i in 0..rows {
        for j in 0..cols {
            assert_eq!(out[j * rows + i], a[i * cols + j]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2x2 stride-2 transposed convolution

/// `out[n][o][y][x] = sum_c x[n][c][y/2][x/2] w[c][o][y%2][x%2]` in f64, with the absolute
/// values of `x` and `w` when `absolute`.
fn up_definition(x: &[f32], [n, c, h, w]: [usize; 4], weight: &[f32], o: usize, absolute: bool) -> Vec<f64> {
    let value = |v: f32| if absolute { v.abs() as f64 } else { v as f64 };
    let mut out = vec![0.0f64; n * o * 4 * h * w];
    for ni in 0..n {
        for oi in 0..o {
            for y in 0..2 * h {
                for xx in 0..2 * w {
                    out[((ni * o + oi) * 2 * h + y) * 2 * w + xx] = (0..c)
                        .map(|ci| {
                            value(x[((ni * c + ci) * h + y / 2) * w + xx / 2])
                                * value(weight[((ci * o + oi) * 2 + y % 2) * 2 + xx % 2])
                        })
                        .sum();
                }
            }
        }
    }
    out
}

#[test]
fn up_convolution_matches_the_definition_and_its_gradients() {
    let dims @ [n, c, h, w] = [2, 3, 3, 4];
    let o = 5;
    let x = random(n * c * h * w, 6);
    let weight = random(c * o * 4, 7);
    let grad = random(n * o * 4 * h * w, 8);
    let exact = up_definition(&x, dims, &weight, o, false);
    let bound: Vec<f64> =
        up_definition(&x, dims, &weight, o, true).iter().map(|m| (c as f64 + DEPTH) * EPS * m).collect();

    let loss = |x: &[f32], w: &[f32], absolute: bool| -> f64 {
        let g = |v: f32| if absolute { v.abs() as f64 } else { v as f64 };
        up_definition(x, dims, w, o, absolute).iter().zip(&grad).map(|(a, v)| a * g(*v)).sum()
    };
    // Exact derivatives of the linear loss, and the magnitudes of their terms.
    let derivatives = |len: usize, bump: &dyn Fn(usize, bool) -> f64, terms: f64| -> (Vec<f64>, Vec<f64>) {
        let exact = (0..len).map(|i| bump(i, false)).collect();
        let bound = (0..len).map(|i| terms * EPS * bump(i, true)).collect();
        (exact, bound)
    };
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let bump_x = |index: usize, absolute: bool| {
        let base = if absolute { abs(&x) } else { x.clone() };
        let mut bumped = base.clone();
        bumped[index] += 1.0;
        loss(&bumped, &weight, absolute) - loss(&base, &weight, absolute)
    };
    let bump_w = |index: usize, absolute: bool| {
        let base = if absolute { abs(&weight) } else { weight.clone() };
        let mut bumped = base.clone();
        bumped[index] += 1.0;
        loss(&x, &bumped, absolute) - loss(&x, &base, absolute)
    };
    let (exact_x, bound_x) = derivatives(x.len(), &bump_x, 4.0 * o as f64 + DEPTH);
    let (exact_w, bound_w) = derivatives(weight.len(), &bump_w, (n * h * w) as f64 + DEPTH);

    on_every_path(|path| {
        within(&up_conv2x2(&x, dims, &weight, o), &exact, &bound).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (grad_x, grad_w) = conv_transpose2x2_backward(
            tensor(&dims, x.clone()),
            tensor(&[c, o, 2, 2], weight.clone()),
            tensor(&[n, o, 2 * h, 2 * w], grad.clone()),
        );
        let read = |t: &NdArrayTensor| contiguous(t).unwrap().1.to_vec();
        within(&read(&grad_x), &exact_x, &bound_x).unwrap_or_else(|e| panic!("{path}, input gradient: {e}"));
        within(&read(&grad_w), &exact_w, &bound_w).unwrap_or_else(|e| panic!("{path}, weight gradient: {e}"));
    });
    // Sub-pixels swapped (x % 2 and y % 2 exchanged in the kernel) would be wrong.
    let mut swapped = weight.clone();
    for kernel in swapped.chunks_mut(4) {
        kernel.swap(1, 2);
    }
    assert!(within(&rounded(&up_definition(&x, dims, &swapped, o, false)), &exact, &bound).is_err());
}

// ---------------------------------------------------------------------------------------------
// GroupNorm + ELU

/// A GroupNorm + ELU problem and its f64 reference with rounding bounds.
struct GroupNormCase {
    x: Vec<f32>,
    dims: [usize; 4],
    weight: Vec<f32>,
    bias: Vec<f32>,
    groups: usize,
}

/// How the reference normalises: the definition, or a deliberate mistake.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Correct,
    /// The unbiased variance (divided by m - 1), a classic GroupNorm mistake.
    UnbiasedVariance,
    /// An epsilon of 1e-3 instead of the lab's 1e-5.
    WrongEpsilon,
    /// The input gradient without its path through the variance.
    NoVarianceGradient,
}

/// How an implementation computes a group's variance, which decides how much of it rounding
/// can cost.
#[derive(Clone, Copy, PartialEq)]
enum Statistics {
    /// Sums of x and x^2 in one pass (the fused kernel: 16 f32 lanes per plane, f64 across),
    /// then `mean(x^2) - mean^2`, which cancels when the offset dominates the spread.
    OnePass,
    /// The mean, then the mean of squared deviations (the composed operations): no
    /// cancellation, but f32 sums over the whole group.
    TwoPass,
}

/// Per (image, group): mean, 1/std, mean |x|, the group size, the variance's cancellation
/// factor `mean(x^2) / (var + eps)`, and the relative error of 1/std in units of EPS.
struct Stats {
    mean: f64,
    inv: f64,
    mean_abs: f64,
    size: f64,
    kappa: f64,
    inv_roundings: f64,
}

/// Per element of the forward pass: the exact values and their bounds.
struct Forward {
    xhat: Vec<f64>,
    xhat_bound: Vec<f64>,
    /// |x - mean| / std evaluated without cancellation: (|x| + |mean|) / std.
    xhat_abs: Vec<f64>,
    z: Vec<f64>,
    z_bound: Vec<f64>,
    y: Vec<f64>,
    y_bound: Vec<f64>,
}

impl GroupNormCase {
    fn new(dims: [usize; 4], groups: usize, offset: f32, spread: f32, seed: u64) -> Self {
        let x = random(dims.iter().product(), seed).iter().map(|v| spread * v + offset).collect();
        Self { x, dims, weight: random(dims[1], seed + 1), bias: random(dims[1], seed + 2), groups }
    }

    /// The algorithms whose bounds are tight enough on this case to show the mistakes fail:
    /// both where the spread dominates the offset, none where the offset dominates. There the
    /// f32 mean of a group alone may err by `size EPS mean|x|`, which is about a 1e-3 change
    /// of the normalised values, as large as the mistakes' effect.
    fn resolving_mistakes(&self) -> Vec<Statistics> {
        if self.stats(Variant::Correct, Statistics::TwoPass).iter().all(|s| s.kappa < 2.0) {
            vec![Statistics::OnePass, Statistics::TwoPass]
        } else {
            Vec::new()
        }
    }

    fn group(&self, index: usize) -> usize {
        let [_, c, h, w] = self.dims;
        let plane = index / (h * w);
        (plane / c) * self.groups + (plane % c) / (c / self.groups)
    }

    fn channel(&self, index: usize) -> usize {
        let [_, c, h, w] = self.dims;
        (index / (h * w)) % c
    }

    fn stats(&self, variant: Variant, algorithm: Statistics) -> Vec<Stats> {
        let [n, _, h, w] = self.dims;
        let mut members: Vec<Vec<f64>> = vec![Vec::new(); n * self.groups];
        for (index, &v) in self.x.iter().enumerate() {
            members[self.group(index)].push(v as f64);
        }
        members
            .iter()
            .map(|values| {
                let size = values.len() as f64;
                let mean = values.iter().sum::<f64>() / size;
                let squares = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
                let variance = if variant == Variant::UnbiasedVariance {
                    squares / (size - 1.0)
                } else {
                    squares / size
                };
                let eps = if variant == Variant::WrongEpsilon { 1e-3 } else { GROUP_NORM_EPS };
                let mean_square = values.iter().map(|v| v * v).sum::<f64>() / size;
                let kappa = mean_square / (variance + eps);
                let inv_roundings = match algorithm {
                    Statistics::OnePass => ((h * w).min(4096).div_ceil(16) as f64 + 2.0) * kappa,
                    Statistics::TwoPass => size + DEPTH,
                };
                Stats {
                    mean,
                    inv: 1.0 / (variance + eps).sqrt(),
                    mean_abs: values.iter().map(|v| v.abs()).sum::<f64>() / size,
                    size,
                    kappa,
                    inv_roundings,
                }
            })
            .collect()
    }

    fn forward(&self, stats: &[Stats]) -> Forward {
        let len = self.x.len();
        let mut f = Forward {
            xhat: vec![0.0; len],
            xhat_bound: vec![0.0; len],
            xhat_abs: vec![0.0; len],
            z: vec![0.0; len],
            z_bound: vec![0.0; len],
            y: vec![0.0; len],
            y_bound: vec![0.0; len],
        };
        for (i, &xv) in self.x.iter().enumerate() {
            let s = &stats[self.group(i)];
            let (g, b) = (self.weight[self.channel(i)] as f64, self.bias[self.channel(i)] as f64);
            let xv = xv as f64;
            f.xhat[i] = (xv - s.mean) * s.inv;
            f.xhat_abs[i] = (xv.abs() + s.mean.abs()) * s.inv;
            // The element-wise chain, and the statistics' sums: the mean's error
            // (size EPS mean|x|) and 1/std's relative error.
            f.xhat_bound[i] =
                EPS * (DEPTH * f.xhat_abs[i] + s.inv_roundings * f.xhat_abs[i] + s.size * s.inv * s.mean_abs);
            f.z[i] = g * f.xhat[i] + b;
            f.z_bound[i] = g.abs() * f.xhat_bound[i] + DEPTH * EPS * b.abs();
            f.y[i] = if f.z[i] > 0.0 { f.z[i] } else { f.z[i].exp_m1() };
            // ELU's slope is at most 1; its polynomial adds a few roundings of the result.
            f.y_bound[i] = f.z_bound[i] + DEPTH * EPS * f.y[i].abs();
        }
        f
    }

    /// The exact output and its bound.
    fn reference(&self, variant: Variant, algorithm: Statistics) -> (Vec<f64>, Vec<f64>) {
        let forward = self.forward(&self.stats(variant, algorithm));
        (forward.y, forward.y_bound)
    }

    /// The exact gradients (x, weight, bias) for the output gradient `dy`, with bounds.
    #[allow(clippy::type_complexity)]
    fn reference_backward(
        &self,
        dy: &[f32],
        variant: Variant,
        algorithm: Statistics,
    ) -> [(Vec<f64>, Vec<f64>); 3] {
        let [n, c, h, w] = self.dims;
        let stats = self.stats(variant, algorithm);
        let f = self.forward(&stats);
        let len = self.x.len();
        let (mut dz, mut dz_bound) = (vec![0.0; len], vec![0.0; len]);
        for i in 0..len {
            let slope = if f.z[i] > 0.0 { 1.0 } else { f.z[i].exp() };
            let g = dy[i] as f64;
            dz[i] = g * slope;
            dz_bound[i] = g.abs() * f.z_bound[i] + DEPTH * EPS * dz[i].abs();
        }
        // Weight and bias gradients: sums over every image and pixel of a channel.
        let (mut dw, mut dw_bound, mut db, mut db_bound) =
            (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        let terms = (n * h * w) as f64 + DEPTH;
        for i in 0..len {
            let ci = self.channel(i);
            db[ci] += dz[i];
            db_bound[ci] += dz_bound[i] + terms * EPS * dz[i].abs();
            dw[ci] += dz[i] * f.xhat[i];
            dw_bound[ci] += dz_bound[i] * f.xhat_abs[i]
                + dz[i].abs() * f.xhat_bound[i]
                + terms * EPS * (dz[i] * f.xhat_abs[i]).abs();
        }
        // Input gradient: inv (g dz - mean(g dz) - xhat mean(g dz xhat)) per group.
        let groups = stats.len();
        let mut sums = vec![[0.0f64; 6]; groups];
        for i in 0..len {
            let (group, g) = (self.group(i), self.weight[self.channel(i)] as f64);
            let s = &mut sums[group];
            s[0] += g * dz[i];
            s[1] += (g * dz[i]).abs();
            s[2] += g.abs() * dz_bound[i];
            s[3] += g * dz[i] * f.xhat[i];
            s[4] += (g * dz[i]).abs() * f.xhat_abs[i];
            s[5] += g.abs() * (dz_bound[i] * f.xhat_abs[i] + dz[i].abs() * f.xhat_bound[i]);
        }
        let mut dx = vec![0.0; len];
        let mut dx_bound = vec![0.0; len];
        for i in 0..len {
            let group = self.group(i);
            let st = &stats[group];
            let s = sums[group].map(|v| v / st.size);
            let g = self.weight[self.channel(i)] as f64;
            let variance_path = if variant == Variant::NoVarianceGradient { 0.0 } else { f.xhat[i] * s[3] };
            dx[i] = st.inv * (g * dz[i] - s[0] - variance_path);
            let sum_terms = st.size + DEPTH;
            let m1_bound = s[2] + sum_terms * EPS * s[1];
            let m2_bound = s[5] + sum_terms * EPS * s[4];
            let magnitude = (g * dz[i]).abs() + s[1] + f.xhat_abs[i] * s[4];
            dx_bound[i] = st.inv
                * (g.abs() * dz_bound[i]
                    + m1_bound
                    + f.xhat_abs[i] * m2_bound
                    + f.xhat_bound[i] * s[4].abs())
                + st.inv * magnitude * EPS * (DEPTH + st.inv_roundings);
        }
        [(dx, dx_bound), (dw, dw_bound), (db, db_bound)]
    }
}

/// Groups of a whole image, of half, and of one channel; a spread-out input and one whose
/// offset dominates its spread (the variance then cancels).
fn group_norm_cases() -> Vec<GroupNormCase> {
    let dims = [2, 16, 5, 6];
    let mut cases = Vec::new();
    for (seed, (offset, spread)) in [(0.3f32, 2.0f32), (4.0, 0.5)].into_iter().enumerate() {
        for groups in [1, 2, 16] {
            cases.push(GroupNormCase::new(dims, groups, offset, spread, 9 + 10 * seed as u64));
        }
    }
    cases
}

/// The composed operations' GroupNorm + ELU (`x` [N, C, H, W]) and its gradients, read back.
fn composed(case: &GroupNormCase, grad: &[f32]) -> [Vec<f32>; 4] {
    let c = case.dims[1];
    let input = || {
        (
            tensor(&case.dims, case.x.clone()),
            tensor(&[c], case.weight.clone()),
            tensor(&[c], case.bias.clone()),
        )
    };
    let read = |t: &NdArrayTensor| contiguous(t).unwrap().1.to_vec();
    let (x, weight, bias) = input();
    let y = super::super::group_norm_elu_composed::<Cpu>(x, weight, bias, case.groups);
    let (x, weight, bias) = input();
    let (dx, dw, db) = super::super::group_norm_elu_backward_composed::<Cpu>(
        x,
        weight,
        bias,
        case.groups,
        tensor(&case.dims, grad.to_vec()),
    );
    [read(&y), read(&dx), read(&dw), read(&db)]
}

#[test]
fn fused_and_composed_group_norm_elu_match_the_reference() {
    let cases = group_norm_cases();
    on_every_path(|path| {
        for case in &cases {
            let (exact, bound) = case.reference(Variant::Correct, Statistics::OnePass);
            let fused = fused_group_norm_elu(&case.x, case.dims, &case.weight, &case.bias, case.groups);
            within(&fused, &exact, &bound)
                .unwrap_or_else(|e| panic!("{path}, fused, groups {}: {e}", case.groups));
        }
    });
    for case in &cases {
        let (exact, bound) = case.reference(Variant::Correct, Statistics::TwoPass);
        let [y, ..] = composed(case, &case.x);
        within(&y, &exact, &bound).unwrap_or_else(|e| panic!("composed, groups {}: {e}", case.groups));
        for algorithm in case.resolving_mistakes() {
            let (exact, bound) = case.reference(Variant::Correct, algorithm);
            for mistake in [Variant::UnbiasedVariance, Variant::WrongEpsilon] {
                let wrong = rounded(&case.reference(mistake, algorithm).0);
                assert!(within(&wrong, &exact, &bound).is_err(), "groups {}: a mistake passed", case.groups);
            }
        }
    }
}

#[test]
fn fused_and_composed_group_norm_elu_gradients_match_the_reference() {
    let cases = group_norm_cases();
    let grad = random(cases[0].x.len(), 16);
    let names = ["x", "weight", "bias"];
    on_every_path(|path| {
        for case in &cases {
            let reference = case.reference_backward(&grad, Variant::Correct, Statistics::OnePass);
            let (dx, dw, db) = fused_group_norm_elu_backward(
                &case.x,
                case.dims,
                &case.weight,
                &case.bias,
                case.groups,
                &grad,
            );
            for ((name, actual), (exact, bound)) in names.iter().zip([dx, dw, db]).zip(&reference) {
                within(&actual, exact, bound)
                    .unwrap_or_else(|e| panic!("{path}, fused, groups {}, {name}: {e}", case.groups));
            }
        }
    });
    for case in &cases {
        let reference = case.reference_backward(&grad, Variant::Correct, Statistics::TwoPass);
        let [_, dx, dw, db] = composed(case, &grad);
        for ((name, actual), (exact, bound)) in names.iter().zip([dx, dw, db]).zip(&reference) {
            within(&actual, exact, bound)
                .unwrap_or_else(|e| panic!("composed, groups {}, {name}: {e}", case.groups));
        }
        for algorithm in case.resolving_mistakes() {
            let reference = case.reference_backward(&grad, Variant::Correct, algorithm);
            let (exact, bound) = &reference[0];
            for mistake in [Variant::UnbiasedVariance, Variant::NoVarianceGradient] {
                let wrong = rounded(&case.reference_backward(&grad, mistake, algorithm)[0].0);
                assert!(within(&wrong, exact, bound).is_err(), "groups {}: a mistake passed", case.groups);
            }
        }
    }
}

#[test]
fn fused_group_norm_elu_gradient_matches_finite_differences() {
    // Independent of the analytic reference: central differences of the forward kernel.
    let case = GroupNormCase::new([1, 4, 3, 3], 2, 0.0, 1.0, 17);
    let grad = random(36, 20);
    let loss = |x: &[f32], weight: &[f32]| -> f64 {
        let y = fused_group_norm_elu(x, case.dims, weight, &case.bias, 2);
        y.iter().zip(&grad).map(|(a, g)| (*a as f64) * (*g as f64)).sum()
    };
    let (dx, dw, _) = fused_group_norm_elu_backward(&case.x, case.dims, &case.weight, &case.bias, 2, &grad);
    let step = 1e-2f32;
    // Central differences err by O(step^2) from the curvature, and by the f32 rounding of the
    // loss (36 terms near 1) divided by the step.
    let tolerance = |magnitude: f64| 1e-3 * magnitude.max(1.0) + 64.0 * EPS / step as f64;
    for index in [0, 5, 17, 35] {
        let (mut up, mut down) = (case.x.clone(), case.x.clone());
        up[index] += step;
        down[index] -= step;
        let numeric = (loss(&up, &case.weight) - loss(&down, &case.weight)) / (2.0 * step as f64);
        assert!(
            (dx[index] as f64 - numeric).abs() < tolerance(numeric.abs()),
            "x[{index}]: {} vs {numeric}",
            dx[index]
        );
    }
    for index in 0..4 {
        let (mut up, mut down) = (case.weight.clone(), case.weight.clone());
        up[index] += step;
        down[index] -= step;
        let numeric = (loss(&case.x, &up) - loss(&case.x, &down)) / (2.0 * step as f64);
        assert!(
            (dw[index] as f64 - numeric).abs() < tolerance(numeric.abs()),
            "weight[{index}]: {} vs {numeric}",
            dw[index]
        );
    }
}
