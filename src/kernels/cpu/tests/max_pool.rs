//! 2x2 max pooling and its gradient against the definition and against burn's own pooling
//! (maxima are exact, so the results must be equal, not close).

use burn::tensor::{Tensor, TensorData};

use super::*;

type Host = NdArray;

/// `[N, C, H, W]` values whose windows hold ties and, at (0, 0, 0, 1), a NaN.
fn input(dims: [usize; 4]) -> Vec<f32> {
    let mut x = random(dims.iter().product(), 21);
    // Quantised, so that many windows hold equal maxima.
    x.iter_mut().for_each(|v| *v = (*v * 3.0).round());
    x[1] = f32::NAN;
    // And one as the last value of a window whose maximum comes first.
    let last = x.len() - 1;
    x[last] = f32::NAN;
    x
}

#[test]
fn max_pool_takes_each_windows_maximum_and_leaves_an_odd_edge_out() {
    // Rows of 40 windows cover the vector loop and its remainder.
    on_every_path(|path| {
        for dims @ [n, c, h, w] in [[2, 3, 6, 8], [1, 2, 7, 5], [1, 1, 1, 4], [1, 2, 4, 81]] {
            let x = input(dims);
            let pooled = max_pool2x2(&x, dims);
            let (oh, ow) = (h / 2, w / 2);
            assert_eq!(pooled.len(), n * c * oh * ow);
            for plane in 0..n * c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = |y: usize, xx: usize| x[(plane * h + 2 * oy + y) * w + 2 * ox + xx];
                        let window = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                        let got = pooled[(plane * oh + oy) * ow + ox];
                        if window.iter().any(|v| v.is_nan()) {
                            assert!(got.is_nan(), "{path} {dims:?}: a NaN in window ({oy}, {ox}) gave {got}");
                        } else {
                            let max = window.iter().copied().fold(f32::MIN, f32::max);
                            assert_eq!(got, max, "{path} {dims:?}: window ({oy}, {ox})");
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn max_pool_gradient_goes_to_the_first_maximum_of_each_window() {
    for dims @ [n, c, h, w] in [[2, 3, 6, 8], [1, 2, 7, 5]] {
        let x = input(dims);
        let (oh, ow) = (h / 2, w / 2);
        let grad = random(n * c * oh * ow, 22);
        let grad_x = max_pool2x2_backward(&x, dims, &grad);
        for plane in 0..n * c {
            for y in 0..h {
                for xx in 0..w {
                    let got = grad_x[(plane * h + y) * w + xx];
                    let (oy, ox) = (y / 2, xx / 2);
                    if oy >= oh || ox >= ow {
                        assert_eq!(got, 0.0, "{dims:?}: the left-out edge ({y}, {xx}) has a gradient");
                        continue;
                    }
                    let at = |p: usize| x[(plane * h + 2 * oy + p / 2) * w + 2 * ox + p % 2];
                    let window = [at(0), at(1), at(2), at(3)];
                    let first = match window.iter().position(|v| v.is_nan()) {
                        Some(nan) => nan,
                        None => {
                            let max = window.iter().copied().fold(f32::MIN, f32::max);
                            window.iter().position(|&v| v == max).unwrap()
                        }
                    };
                    let position = (y % 2) * 2 + xx % 2;
                    let expected = if position == first { grad[(plane * oh + oy) * ow + ox] } else { 0.0 };
                    assert_eq!(got, expected, "{dims:?}: ({y}, {xx}) of plane {plane}");
                }
            }
        }
    }
}

/// The hooks against burn's general pooling on finite input without ties (where burn's choice
/// among equal maxima and its NaN handling, which differ from PyTorch's, do not matter).
#[test]
fn max_pool_hooks_agree_with_burns_pooling() {
    let dims @ [n, c, h, w] = [2, 3, 9, 6];
    let device = Default::default();
    let x = Tensor::<Host, 4>::from_data(TensorData::new(random(n * c * h * w, 23), dims), &device);
    let grad = Tensor::<Host, 4>::from_data(
        TensorData::new(random(n * c * (h / 2) * (w / 2), 24), [n, c, h / 2, w / 2]),
        &device,
    );
    let ours = max_pool(x.clone().into_primitive().tensor());
    let burns = burn::tensor::module::max_pool2d(x.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false);
    assert_eq!(
        Tensor::<Host, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(ours)).into_data(),
        burns.into_data()
    );
    let ours = max_pool_backward(x.clone().into_primitive().tensor(), grad.clone().into_primitive().tensor());
    let burns =
        max_pool2x2_backward_composed::<Host>(x.into_primitive().tensor(), grad.into_primitive().tensor());
    let data = |t| Tensor::<Host, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(t)).into_data();
    assert_eq!(data(ours), data(burns));
}
