//! Fused GroupNorm + ELU and its gradients against f64 references.

use super::*;

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
    let y = crate::kernels::group_norm_elu_composed::<Cpu>(x, weight, bias, case.groups);
    let (x, weight, bias) = input();
    let (dx, dw, db) = crate::kernels::group_norm_elu_backward_composed::<Cpu>(
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
