//! The pointwise layer (1x1 convolution, bias, activation) and its gradients against f64
//! references, for the CPU kernel and for the composed form the GPU backends run.

use super::*;
use crate::kernels::{pointwise_backward_composed, pointwise_composed};

/// One layer's inputs: `x` [N][C][HW] over more cells than one kernel block, so that the
/// blocks' seams are covered.
struct Case {
    dims: [usize; 4],
    k: usize,
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    grad: Vec<f32>,
}

impl Case {
    fn new() -> Self {
        let dims @ [n, c, h, w] = [2, 5, 42, 50];
        let k = 7;
        Self {
            dims,
            k,
            x: random(n * c * h * w, 21),
            weight: random(k * c, 22),
            bias: random(k, 23),
            grad: random(n * k * h * w, 24),
        }
    }

    fn cells(&self) -> usize {
        self.dims[2] * self.dims[3]
    }

    /// `W x + b` in f64, and the same with absolute values (what rounding scales with).
    fn pre_activation(&self) -> (Vec<f64>, Vec<f64>) {
        let ([n, c, ..], k, hw) = (self.dims, self.k, self.cells());
        let mut z = vec![0.0; n * k * hw];
        let mut magnitude = vec![0.0; n * k * hw];
        for ni in 0..n {
            for ki in 0..k {
                for p in 0..hw {
                    let index = (ni * k + ki) * hw + p;
                    z[index] = self.bias[ki] as f64;
                    magnitude[index] = self.bias[ki].abs() as f64;
                    for ci in 0..c {
                        let term = self.weight[ki * c + ci] as f64 * self.x[(ni * c + ci) * hw + p] as f64;
                        z[index] += term;
                        magnitude[index] += term.abs();
                    }
                }
            }
        }
        (z, magnitude)
    }
}

fn exact_elu(z: f64) -> f64 {
    if z > 0.0 {
        z
    } else {
        z.exp_m1()
    }
}

/// The exact forward and its bound: the GEMM's sum of C + 1 terms, then the ELU's chain.
fn forward_reference(case: &Case, activation: Activation) -> (Vec<f64>, Vec<f64>) {
    let (z, magnitude) = case.pre_activation();
    let c = case.dims[1] as f64;
    let bound = magnitude.iter().map(|m| (c + 1.0 + DEPTH) * EPS * m).collect();
    let exact = match activation {
        Activation::Identity => z,
        Activation::Elu => z.into_iter().map(exact_elu).collect(),
    };
    (exact, bound)
}

/// Exact gradients for `x`, `weight` and `bias` and their bounds. The kernel takes the ELU's
/// slope from its own output, so each `dz` may be off by the output's bound (the slope is
/// 1-Lipschitz in z) plus a few roundings.
fn backward_reference(case: &Case, activation: Activation) -> [(Vec<f64>, Vec<f64>); 3] {
    let ([n, c, ..], k, hw) = (case.dims, case.k, case.cells());
    let (z, _) = case.pre_activation();
    let (_, forward_bound) = forward_reference(case, activation);
    let mut dz = vec![0.0; z.len()];
    let mut dz_error = vec![0.0; z.len()];
    for i in 0..z.len() {
        let g = case.grad[i] as f64;
        let slope = match activation {
            Activation::Elu if z[i] <= 0.0 => z[i].exp(),
            _ => 1.0,
        };
        dz[i] = g * slope;
        dz_error[i] = match activation {
            Activation::Identity => 0.0,
            Activation::Elu => g.abs() * (forward_bound[i] + DEPTH * EPS),
        };
    }
    let mut grad_x = (vec![0.0; n * c * hw], vec![0.0; n * c * hw]);
    let mut grad_w = (vec![0.0; k * c], vec![0.0; k * c]);
    let mut grad_b = (vec![0.0; k], vec![0.0; k]);
    let (sum_x, sum_w) = ((k as f64 + DEPTH) * EPS, ((n * hw) as f64 + DEPTH) * EPS);
    for ni in 0..n {
        for ki in 0..k {
            for p in 0..hw {
                let index = (ni * k + ki) * hw + p;
                let (d, error) = (dz[index], dz_error[index]);
                grad_b.0[ki] += d;
                grad_b.1[ki] += error + sum_w * d.abs();
                for ci in 0..c {
                    let (w, x) = (case.weight[ki * c + ci] as f64, case.x[(ni * c + ci) * hw + p] as f64);
                    grad_x.0[(ni * c + ci) * hw + p] += w * d;
                    grad_x.1[(ni * c + ci) * hw + p] += w.abs() * (error + sum_x * d.abs());
                    grad_w.0[ki * c + ci] += d * x;
                    grad_w.1[ki * c + ci] += x.abs() * (error + sum_w * d.abs());
                }
            }
        }
    }
    [grad_x, grad_w, grad_b]
}

fn tensors(case: &Case) -> [NdArrayTensor; 3] {
    let [n, c, h, w] = case.dims;
    [
        tensor(&[n, c, h, w], case.x.clone()),
        tensor(&[case.k, c, 1, 1], case.weight.clone()),
        tensor(&[case.k], case.bias.clone()),
    ]
}

fn read(t: &NdArrayTensor) -> Vec<f32> {
    contiguous(t).unwrap().1.to_vec()
}

/// Runs the forward and backward of one implementation and checks them.
fn check(
    case: &Case,
    activation: Activation,
    label: &str,
    forward: impl Fn(NdArrayTensor, NdArrayTensor, NdArrayTensor) -> NdArrayTensor,
    backward: impl Fn(NdArrayTensor, NdArrayTensor, NdArrayTensor, NdArrayTensor) -> [NdArrayTensor; 3],
) {
    let [n, _, h, w] = case.dims;
    let [x, weight, bias] = tensors(case);
    let output = forward(x.clone(), weight.clone(), bias);
    let (exact, bound) = forward_reference(case, activation);
    within(&read(&output), &exact, &bound).unwrap_or_else(|e| panic!("{label} {activation:?} forward: {e}"));
    let grad = tensor(&[n, case.k, h, w], case.grad.clone());
    let grads = backward(x, weight, output, grad);
    for ((name, actual), (exact, bound)) in
        ["input", "weight", "bias"].iter().zip(&grads).zip(backward_reference(case, activation))
    {
        within(&read(actual), &exact, &bound)
            .unwrap_or_else(|e| panic!("{label} {activation:?} {name} gradient: {e}"));
    }
}

#[test]
fn pointwise_kernel_and_composed_form_match_the_definition_and_its_gradients() {
    let case = Case::new();
    for activation in [Activation::Identity, Activation::Elu] {
        on_every_path(|path| {
            check(
                &case,
                activation,
                &format!("kernel on {path}"),
                |x, w, b| pointwise(x, w, b, activation),
                |x, w, y, g| {
                    let (dx, dw, db) = pointwise_backward(x, w, y, activation, g);
                    [dx, dw, db]
                },
            )
        });
        check(
            &case,
            activation,
            "composed",
            |x, w, b| pointwise_composed::<Cpu>(x, w, b, activation),
            |x, w, y, g| {
                let (dx, dw, db) = pointwise_backward_composed::<Cpu>(x, w, y, activation, g);
                [dx, dw, db]
            },
        );
    }
}

#[test]
fn pointwise_bounds_reject_real_mistakes() {
    let case = Case::new();
    let (exact, bound) = forward_reference(&case, Activation::Elu);
    // The bias added after the ELU instead of before it.
    let (z, _) = case.pre_activation();
    let hw = case.cells();
    let late_bias: Vec<f64> = z
        .iter()
        .enumerate()
        .map(|(i, &z)| {
            let b = case.bias[(i / hw) % case.k] as f64;
            exact_elu(z - b) + b
        })
        .collect();
    assert!(within(&rounded(&late_bias), &exact, &bound).is_err());
    // The ELU's slope forgotten in the backward step.
    let [_, (exact_w, bound_w), _] = backward_reference(&case, Activation::Elu);
    let [_, (without_slope, _), _] = backward_reference(&case, Activation::Identity);
    assert!(within(&rounded(&without_slope), &exact_w, &bound_w).is_err());
}
