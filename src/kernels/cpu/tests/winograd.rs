//! The 3x3 convolution (Winograd) and its gradients against f64 references.

use super::*;

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

const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0]];
const BT: [[f64; 4]; 4] =
    [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]];
const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]];

/// `L X L^T` for a transform `L` (R x P) and `X` (P x P) given by element: every transform of
/// Winograd's algorithm and of its gradient applies one matrix on both sides.
fn both_sides<const R: usize, const P: usize>(
    l: &[[f64; P]; R],
    x: impl Fn(usize, usize) -> f64,
) -> [[f64; R]; R] {
    let mut out = [[0.0f64; R]; R];
    for (a, row) in out.iter_mut().enumerate() {
        for (b, value) in row.iter_mut().enumerate() {
            *value = (0..P)
                .flat_map(|i| (0..P).map(move |j| (i, j)))
                .map(|(i, j)| l[a][i] * x(i, j) * l[b][j])
                .sum();
        }
    }
    out
}

/// The transpose of `m` (R x P).
fn transposed<const R: usize, const P: usize>(m: &[[f64; P]; R]) -> [[f64; R]; P] {
    std::array::from_fn(|i| std::array::from_fn(|a| m[a][i]))
}

/// `|B^T| |d| |B|` for input tile (ty, tx) of channel `ci` of image `ni` (zero padding 1).
fn abs_input_tile(
    x: &[f32],
    [_, c, h, w]: [usize; 4],
    ni: usize,
    ci: usize,
    ty: usize,
    tx: usize,
) -> [[f64; 4]; 4] {
    let d = |r: usize, s: usize| {
        let (y, xx) = ((2 * ty + r) as isize - 1, (2 * tx + s) as isize - 1);
        if y < 0 || y >= h as isize || xx < 0 || xx >= w as isize {
            0.0
        } else {
            x[((ni * c + ci) * h + y as usize) * w + xx as usize].abs() as f64
        }
    };
    both_sides(&BT, d)
}

/// What Winograd F(2x2, 3x3)'s rounding scales with: the algorithm evaluated with the absolute
/// values of its transforms and data, `|A^T| [sum_c (|G| |g| |G^T|) . (|B^T| |d| |B|)] |A|`.
fn winograd_magnitude(x: &[f32], [n, c, h, w]: [usize; 4], weight: &[f32], k: usize) -> Vec<f64> {
    let kernel =
        |ki: usize, ci: usize| both_sides(&G, |i, j| weight[((ki * c + ci) * 3 + i) * 3 + j].abs() as f64);
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![0.0f64; n * k * h * w];
    for ni in 0..n {
        for ty in 0..tiles_y {
            for tx in 0..tiles_x {
                let inputs: Vec<_> =
                    (0..c).map(|ci| abs_input_tile(x, [n, c, h, w], ni, ci, ty, tx)).collect();
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
                    let y_tile = both_sides(&AT, |a, b| m[a][b]);
                    for (i, row) in y_tile.iter().enumerate() {
                        for (j, value) in row.iter().enumerate() {
                            let (y, xx) = (2 * ty + i, 2 * tx + j);
                            if y < h && xx < w {
                                out[((ni * k + ki) * h + y) * w + xx] = *value;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// What the weight gradient in the Winograd domain rounds with, per [K, C, 3, 3] element:
/// `|G^T| [sum_tiles (|A| |dY| |A^T|) . (|B^T| |d| |B|)] |G|`, where the output gradient
/// `grad` [N, K, H, W] counts as zero past an odd edge.
fn winograd_weight_grad_magnitude(x: &[f32], [n, c, h, w]: [usize; 4], grad: &[f32], k: usize) -> Vec<f64> {
    let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
    let mut sums = vec![[[0.0f64; 4]; 4]; k * c];
    for ni in 0..n {
        for ty in 0..tiles_y {
            for tx in 0..tiles_x {
                let inputs: Vec<_> =
                    (0..c).map(|ci| abs_input_tile(x, [n, c, h, w], ni, ci, ty, tx)).collect();
                for ki in 0..k {
                    let dy = |a: usize, b: usize| {
                        let (y, xx) = (2 * ty + a, 2 * tx + b);
                        if y < h && xx < w {
                            grad[((ni * k + ki) * h + y) * w + xx].abs() as f64
                        } else {
                            0.0
                        }
                    };
                    let dm = both_sides(&transposed(&AT), dy);
                    for (ci, v) in inputs.iter().enumerate() {
                        let sum = &mut sums[ki * c + ci];
                        for i in 0..4 {
                            for j in 0..4 {
                                sum[i][j] += dm[i][j] * v[i][j];
                            }
                        }
                    }
                }
            }
        }
    }
    let mut out = vec![0.0f64; k * c * 9];
    for (sum, g) in sums.iter().zip(out.chunks_exact_mut(9)) {
        let grads = both_sides(&transposed(&G), |i, j| sum[i][j]);
        g.iter_mut().zip(grads.iter().flatten()).for_each(|(g, value)| *g = *value);
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
    // Odd sides, one cell, many tile rows, more kernels (299) than one chunk of the kernel
    // transform; then empty batches, sides and channel counts.
    let cases = [
        ([2, 3, 8, 12], 5),
        ([1, 23, 6, 6], 13),
        ([1, 4, 7, 5], 3),
        ([1, 1, 1, 1], 2),
        ([3, 2, 4, 4], 1),
        ([2, 5, 40, 44], 7),
        ([0, 3, 8, 12], 2),
        ([1, 3, 0, 5], 2),
        ([1, 3, 5, 0], 2),
        ([1, 0, 4, 6], 2),
        ([1, 3, 4, 6], 0),
    ];
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
                let kernels = WinogradKernels::forward(weight, k, dims[1]);
                within(&winograd_blocked(x, dims, &kernels, tiles), exact, bound)
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
fn the_transform_cache_matches_kernels_by_their_bits() {
    assert!(same_bits(&[1.5, -0.0, f32::NAN], &[1.5, -0.0, f32::NAN]));
    // Equal as floats, not as bits: a transform of one is not served for the other.
    assert!(!same_bits(&[0.0], &[-0.0]));
    assert!(!same_bits(&[1.0, 2.0], &[1.0, 2.0 + f32::EPSILON * 2.0]));
    assert!(!same_bits(&[1.0, 2.0], &[1.0]));
    assert!(same_bits(&[], &[]));
}

#[test]
fn convolution_gradients_match_the_exact_derivatives() {
    // Even sizes, and odd ones whose last tiles hang over the edge.
    for (dims @ [n, c, h, w], k) in [([2, 3, 6, 4], 2), ([1, 2, 5, 7], 3)] {
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
        // gradient a sum over every tile of every image in the Winograd domain.
        let flipped = flip_transpose(&weight, k, c);
        let bound_x = winograd_bound(&grad, [n, k, h, w], &flipped, c);
        let tiles = (n * h.div_ceil(2) * w.div_ceil(2)) as f64;
        let bound_w: Vec<f64> = winograd_weight_grad_magnitude(&x, dims, &grad, k)
            .iter()
            .map(|m| (tiles + DEPTH) * EPS * m)
            .collect();
        on_every_path(|path| {
            let grad_x = winograd_conv3x3_input_grad(&grad, [n, k, h, w], &weight, c);
            within(&grad_x, &exact_x, &bound_x)
                .unwrap_or_else(|e| panic!("{path} {dims:?}, input gradient: {e}"));
            let kernels = WinogradKernels::input_gradient(&weight, k, c);
            let blocked = winograd_blocked(&grad, [n, k, h, w], &kernels, 1);
            within(&blocked, &exact_x, &bound_x)
                .unwrap_or_else(|e| panic!("{path} {dims:?}, input gradient in blocks: {e}"));
            let grad_w = conv3x3_weight_grad(&x, dims, &grad, k, None);
            within(&grad_w, &exact_w, &bound_w)
                .unwrap_or_else(|e| panic!("{path} {dims:?}, weight gradient: {e}"));
            // A tile row per block, the blocks shared among the threads, summed.
            let in_blocks = weight_grad_in_blocks(&x, dims, &grad, k, None, 1, 1);
            within(&in_blocks, &exact_w, &bound_w)
                .unwrap_or_else(|e| panic!("{path} {dims:?}, blocked: {e}"));
            // The forward's transformed input read instead of each block's own transform: the
            // forward is unchanged, and both block sizes find the right tiles in it.
            let (forward, kept) = winograd_conv3x3_keeping_input(&x, dims, &weight, k);
            assert_eq!(forward, winograd_conv3x3(&x, dims, &weight, k), "{path} {dims:?}");
            let kept = kept.expect("a small layer keeps its transformed input");
            let from_kept = conv3x3_weight_grad(&x, dims, &grad, k, Some(&kept));
            within(&from_kept, &exact_w, &bound_w)
                .unwrap_or_else(|e| panic!("{path} {dims:?}, from the kept input: {e}"));
            let in_blocks = weight_grad_in_blocks(&x, dims, &grad, k, Some(kept.transformed()), 1, 1);
            within(&in_blocks, &exact_w, &bound_w)
                .unwrap_or_else(|e| panic!("{path} {dims:?}, blocked, from the kept input: {e}"));
            // Another input's transform is really read (and would be wrong).
            let (_, other) = winograd_conv3x3_keeping_input(&random(x.len(), 9), dims, &weight, k);
            let from_other = conv3x3_weight_grad(&x, dims, &grad, k, other.as_ref());
            assert!(within(&from_other, &exact_w, &bound_w).is_err());
            // Taps read in the wrong orientation would be wrong.
            assert!(within(&transposed_taps(&grad_w), &exact_w, &bound_w).is_err());
        });
        // The kernel flipped without swapping the channels would be wrong.
        let unswapped = winograd_conv3x3(&grad, [n, k, h, w], &transposed_taps(&flipped), c);
        assert!(within(&unswapped, &exact_x, &bound_x).is_err());
    }
}

/// The kernel of the input gradient, by its definition: flipped in space, input and output
/// channels swapped. [K, C, 3, 3] -> [C, K, 3, 3].
fn flip_transpose(weight: &[f32], k: usize, c: usize) -> Vec<f32> {
    let mut flipped = vec![0.0f32; c * k * 9];
    for ki in 0..k {
        for ci in 0..c {
            for tap in 0..9 {
                flipped[(ci * k + ki) * 9 + (8 - tap)] = weight[(ki * c + ci) * 9 + tap];
            }
        }
    }
    flipped
}

/// A kept scratch buffer is lent at the length asked for, and a shorter use in between does not
/// shorten it: the next longer use finds what was written, not a freshly zeroed tail.
#[test]
fn scratch_is_lent_at_its_length_and_never_shortened() {
    use crate::kernels::cpu::scratch::Scratch;
    thread_local! {
        static SLOT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut long = Scratch::take(&SLOT, 100);
    assert_eq!(long.len(), 100);
    long.fill(1.0);
    Scratch::give_back(&SLOT, long);
    let short = Scratch::take(&SLOT, 10);
    assert_eq!(short.len(), 10);
    Scratch::give_back(&SLOT, short);
    let again = Scratch::take(&SLOT, 100);
    assert!(again.iter().all(|&value| value == 1.0));
    Scratch::give_back(&SLOT, again);
    let longer = Scratch::take(&SLOT, 150);
    assert_eq!(longer.len(), 150);
    assert!(longer[100..].iter().all(|&value| value == 0.0));
}

/// Only a layer small enough to be transformed whole keeps its transformed input, and a kept
/// input of other dims is not read: the weight gradient transforms `x` itself.
#[test]
fn only_whole_layers_keep_their_transformed_input_and_only_their_own_is_read() {
    use crate::kernels::cpu::winograd::BLOCKED_FROM_TILES;
    let k = 2;
    // 46 x 46 tiles: at least BLOCKED_FROM_TILES, worked in blocks.
    let large = [1, 1, 92, 92];
    const { assert!(46 * 46 >= BLOCKED_FROM_TILES) };
    let x = random(large.iter().product(), 11);
    let weight = random(k * 9, 12);
    let (forward, kept) = winograd_conv3x3_keeping_input(&x, large, &weight, k);
    assert!(kept.is_none());
    assert_eq!(forward, winograd_conv3x3(&x, large, &weight, k));

    let dims @ [n, c, h, w] = [1, 2, 6, 8];
    let x = random(dims.iter().product(), 13);
    let weight = random(k * c * 9, 14);
    let grad = random(n * k * h * w, 15);
    // Same length of transform, other dims (two images of 6 x 4).
    let (_, foreign) = winograd_conv3x3_keeping_input(&random(x.len(), 16), [2, c, 6, 4], &weight, k);
    let foreign = foreign.expect("a small layer keeps its transformed input");
    assert_eq!(foreign.transformed().len(), c * 16 * 12);
    assert_eq!(
        conv3x3_weight_grad(&x, dims, &grad, k, Some(&foreign)),
        conv3x3_weight_grad(&x, dims, &grad, k, None)
    );
}
