//! The 2x2 stride-2 transposed convolution and its gradients against f64 references.

use super::*;

/// `out[n][o][y][x] = b[o] + sum_c x[n][c][y/2][x/2] w[c][o][y%2][x%2]` in f64, with the
/// absolute values of `x`, `w` and `b` when `absolute`.
fn up_definition(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    absolute: bool,
) -> Vec<f64> {
    let value = |v: f32| if absolute { v.abs() as f64 } else { v as f64 };
    let o = bias.len();
    let mut out = vec![0.0f64; n * o * 4 * h * w];
    for ni in 0..n {
        for oi in 0..o {
            for y in 0..2 * h {
                for xx in 0..2 * w {
                    out[((ni * o + oi) * 2 * h + y) * 2 * w + xx] = value(bias[oi])
                        + (0..c)
                            .map(|ci| {
                                value(x[((ni * c + ci) * h + y / 2) * w + xx / 2])
                                    * value(weight[((ci * o + oi) * 2 + y % 2) * 2 + xx % 2])
                            })
                            .sum::<f64>();
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
    let bias = random(o, 9);
    let grad = random(n * o * 4 * h * w, 8);
    let exact = up_definition(&x, dims, &weight, &bias, false);
    let bound: Vec<f64> =
        up_definition(&x, dims, &weight, &bias, true).iter().map(|m| (c as f64 + DEPTH) * EPS * m).collect();

    let loss = |x: &[f32], w: &[f32], absolute: bool| -> f64 {
        let g = |v: f32| if absolute { v.abs() as f64 } else { v as f64 };
        up_definition(x, dims, w, &bias, absolute).iter().zip(&grad).map(|(a, v)| a * g(*v)).sum()
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
    // The bias's gradient: the sum of its channel's output gradients.
    let channel = |oi: usize, absolute: bool| -> f64 {
        let planes = grad.chunks_exact(4 * h * w).skip(oi).step_by(o);
        planes.flatten().map(|&v| if absolute { v.abs() as f64 } else { v as f64 }).sum()
    };
    let exact_b: Vec<f64> = (0..o).map(|oi| channel(oi, false)).collect();
    let bound_b: Vec<f64> =
        (0..o).map(|oi| ((n * 4 * h * w) as f64 + DEPTH) * EPS * channel(oi, true)).collect();

    on_every_path(|path| {
        within(&up_conv2x2(&x, dims, &weight, &bias), &exact, &bound)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let (grad_x, grad_w, grad_b) = conv_transpose2x2_backward(
            tensor(&dims, x.clone()),
            tensor(&[c, o, 2, 2], weight.clone()),
            tensor(&[o], bias.clone()),
            tensor(&[n, o, 2 * h, 2 * w], grad.clone()),
        );
        let read = |t: &NdArrayTensor| contiguous(t).unwrap().1.to_vec();
        within(&read(&grad_x), &exact_x, &bound_x).unwrap_or_else(|e| panic!("{path}, input gradient: {e}"));
        within(&read(&grad_w), &exact_w, &bound_w).unwrap_or_else(|e| panic!("{path}, weight gradient: {e}"));
        within(&read(&grad_b), &exact_b, &bound_b).unwrap_or_else(|e| panic!("{path}, bias gradient: {e}"));
    });
    // Sub-pixels swapped (x % 2 and y % 2 exchanged in the kernel) would be wrong.
    let mut swapped = weight.clone();
    for kernel in swapped.chunks_mut(4) {
        kernel.swap(1, 2);
    }
    assert!(within(&rounded(&up_definition(&x, dims, &swapped, &bias, false)), &exact, &bound).is_err());
    // A bias added to the wrong channels would be wrong too.
    let shifted: Vec<f32> = bias.iter().cycle().skip(1).take(o).copied().collect();
    assert!(within(&rounded(&up_definition(&x, dims, &weight, &shifted, false)), &exact, &bound).is_err());
}
