//! The element-wise parts of the CPU kernels, written as straight loops over contiguous rows
//! so that the compiler vectorises them (the release build targets baseline x86-64, whose
//! 4-wide SSE2 would leave most of the machine idle).
//!
//! - Winograd F(2x2, 3x3) input and output transforms, a row of tiles at a time: the 4x4 input
//!   tiles of one tile row overlap by two columns, so splitting the rows into even and odd
//!   columns turns every transform term into a contiguous vector operation over the tiles.
//! - ELU with a polynomial `exp(x) - 1` (the scalar libm call cost as much as all the GEMMs).
//! - Sums and sums of squares of a plane (GroupNorm's statistics) in 16 lanes.
//!
//! Each kernel is compiled for every path of [`super::isa`] (portable, AVX2+FMA, AVX-512) and runs the
//! one in force.

use std::mem::MaybeUninit;

/// Defines `pub fn $name(args)` that calls `$generic` through the copy compiled for the path in
/// force ([`super::isa::active`]): AVX-512, AVX2+FMA or portable.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                use $crate::kernels::isa::{self, SimdPath};
                match isa::active() {
                    // SAFETY: `isa` only puts a path in force that the processor supports.
                    SimdPath::Avx512 => return unsafe { avx512($($arg),*) },
                    SimdPath::Avx2 => return unsafe { avx2($($arg),*) },
                    SimdPath::Portable => {}
                }
            }
            $generic($($arg),*)
        }
    };
}

/// For the kernels kept beside the code that calls them.
pub(crate) use multiversion;

// ---------------------------------------------------------------------------------------------
// Winograd F(2x2, 3x3) transforms

/// Scratch rows of one tile row's input transform.
pub struct InputScratch {
    even: Vec<f32>,
    odd: Vec<f32>,
    /// The row transform `d B` of the 4 input rows: [4 rows][4 terms][tiles_x].
    rows: Vec<f32>,
}

impl InputScratch {
    pub fn new(tiles_x: usize) -> Self {
        Self { even: vec![0.0; tiles_x + 1], odd: vec![0.0; tiles_x + 1], rows: vec![0.0; 16 * tiles_x] }
    }
}

multiversion! {
    /// `V = B^T d B` for the tiles of tile row `ty` of one plane [h, w] (zero padding 1):
    /// term `e` of tile `tx` goes to `out[e * stride + tx]`.
    pub fn input_tile_row(plane: &[f32], h: usize, w: usize, ty: usize, scratch: &mut InputScratch, out: &mut [f32], stride: usize)
        => input_tile_row_generic
}

#[inline(always)]
fn input_tile_row_generic(
    plane: &[f32],
    h: usize,
    w: usize,
    ty: usize,
    scratch: &mut InputScratch,
    out: &mut [f32],
    stride: usize,
) {
    let tiles_x = w.div_ceil(2);
    let InputScratch { even, odd, rows } = scratch;
    for r in 0..4 {
        let y = (2 * ty + r) as isize - 1;
        let terms = &mut rows[r * 4 * tiles_x..(r + 1) * 4 * tiles_x];
        if y < 0 || y >= h as isize {
            terms.fill(0.0);
            continue;
        }
        let line = &plane[y as usize * w..(y as usize + 1) * w];
        // Column c of the padded row is line[c - 1]: even[k] = column 2k = line[2k - 1],
        // odd[k] = column 2k + 1 = line[2k]; zero past either end.
        even[0] = 0.0;
        let pairs = w / 2;
        for ((pair, o), e) in line.chunks_exact(2).zip(odd.iter_mut()).zip(even[1..].iter_mut()) {
            *o = pair[0];
            *e = pair[1];
        }
        for k in pairs..=tiles_x {
            odd[k] = if 2 * k < w { line[2 * k] } else { 0.0 };
        }
        for k in pairs + 1..=tiles_x {
            even[k] = if 2 * k - 1 < w { line[2 * k - 1] } else { 0.0 };
        }
        // Tile tx reads columns 2tx .. 2tx + 3: even[tx], odd[tx], even[tx + 1], odd[tx + 1].
        let (t0, rest) = terms.split_at_mut(tiles_x);
        let (t1, rest) = rest.split_at_mut(tiles_x);
        let (t2, t3) = rest.split_at_mut(tiles_x);
        // Zipped, not indexed: with indices the loop stayed scalar (a fifth of the transform).
        let columns = even.iter().zip(&even[1..]).zip(odd.iter().zip(&odd[1..]));
        let targets = t0.iter_mut().zip(t1.iter_mut()).zip(t2.iter_mut().zip(t3.iter_mut()));
        for (((t0, t1), (t2, t3)), ((e0, e1), (o0, o1))) in targets.zip(columns) {
            *t0 = e0 - e1;
            *t1 = o0 + e1;
            *t2 = e1 - o0;
            *t3 = o0 - o1;
        }
    }
    // Columns: B^T applied across the 4 rows, term by term.
    for j in 0..4 {
        let row = |r: usize| &rows[(r * 4 + j) * tiles_x..(r * 4 + j + 1) * tiles_x];
        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
        let start = |i: usize| (i * 4 + j) * stride;
        let target = &mut out[start(0)..start(0) + tiles_x];
        target.iter_mut().zip(r0.iter().zip(r2)).for_each(|(t, (a, b))| *t = a - b);
        let target = &mut out[start(1)..start(1) + tiles_x];
        target.iter_mut().zip(r1.iter().zip(r2)).for_each(|(t, (a, b))| *t = a + b);
        let target = &mut out[start(2)..start(2) + tiles_x];
        target.iter_mut().zip(r2.iter().zip(r1)).for_each(|(t, (a, b))| *t = a - b);
        let target = &mut out[start(3)..start(3) + tiles_x];
        target.iter_mut().zip(r1.iter().zip(r3)).for_each(|(t, (a, b))| *t = a - b);
    }
}

multiversion! {
    /// `Y = A^T M A` for tile row `ty` of one output plane [h, w]: term `e` of tile `tx` is
    /// `m[e * stride + tx]`; `scratch` holds 12 * tiles_x floats. Writes every cell of the
    /// plane's rows `2 ty` and `2 ty + 1` (those below `h`), so the tile rows `0..ceil(h / 2)`
    /// initialise the whole plane.
    pub fn output_tile_row(m: &[f32], stride: usize, h: usize, w: usize, ty: usize, scratch: &mut [f32], plane: &mut [MaybeUninit<f32>])
        => output_tile_row_generic
}

#[inline(always)]
fn sum3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (o, ((a, b), c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o = a + b + c;
    }
}

#[inline(always)]
fn difference3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (o, ((a, b), c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o = a - b - c;
    }
}

#[inline(always)]
fn output_tile_row_generic(
    m: &[f32],
    stride: usize,
    h: usize,
    w: usize,
    ty: usize,
    scratch: &mut [f32],
    plane: &mut [MaybeUninit<f32>],
) {
    let tiles_x = w.div_ceil(2);
    let term = |e: usize| &m[e * stride..e * stride + tiles_x];
    let (first, rest) = scratch.split_at_mut(4 * tiles_x);
    let (second, outputs) = rest.split_at_mut(4 * tiles_x);
    // A^T M: rows 0 and 1 of the 2x4 intermediate, column j at a time.
    for j in 0..4 {
        let range = j * tiles_x..(j + 1) * tiles_x;
        sum3(&mut first[range.clone()], term(j), term(4 + j), term(8 + j));
        difference3(&mut second[range], term(4 + j), term(8 + j), term(12 + j));
    }
    // (A^T M) A: the 2x2 outputs.
    for (i, rows) in [&*first, &*second].into_iter().enumerate() {
        let c = |j: usize| &rows[j * tiles_x..(j + 1) * tiles_x];
        let (left, right) = outputs[2 * i * tiles_x..(2 * i + 2) * tiles_x].split_at_mut(tiles_x);
        sum3(left, c(0), c(1), c(2));
        difference3(right, c(1), c(2), c(3));
        let y = 2 * ty + i;
        if y >= h {
            continue;
        }
        let line = &mut plane[y * w..(y + 1) * w];
        let pairs = w / 2;
        for ((out, a), b) in line.chunks_exact_mut(2).zip(left.iter()).zip(right.iter()).take(pairs) {
            out[0].write(*a);
            out[1].write(*b);
        }
        if w % 2 == 1 {
            line[w - 1].write(left[pairs]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GroupNorm statistics and ELU

multiversion! {
    /// Sum and sum of squares of `values`, accumulated in 16 f32 lanes per block of 4096
    /// values and in f64 across blocks.
    pub fn sum_and_squares(values: &[f32]) -> (f64, f64) => sum_and_squares_generic
}

#[inline(always)]
fn sum_and_squares_generic(values: &[f32]) -> (f64, f64) {
    let (mut total, mut squares) = (0.0f64, 0.0f64);
    for block in values.chunks(4096) {
        let mut lanes = [0.0f32; 16];
        let mut square_lanes = [0.0f32; 16];
        let mut chunks = block.chunks_exact(16);
        for chunk in &mut chunks {
            for k in 0..16 {
                lanes[k] += chunk[k];
                square_lanes[k] += chunk[k] * chunk[k];
            }
        }
        for &v in chunks.remainder() {
            lanes[0] += v;
            square_lanes[0] += v * v;
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>();
        squares += square_lanes.iter().map(|&v| v as f64).sum::<f64>();
    }
    (total, squares)
}

/// `exp(x) - 1` for x <= 0, to a few ulp of the result, in a form that vectorises:
/// x = n ln2 + r with |r| <= ln2 / 2 (n <= 0 an integer), `exp(r) - 1` by its Taylor polynomial (degree 7),
/// then `2^n (exp(r) - 1) + (2^n - 1)`, which keeps small |x| exact to rounding.
#[inline(always)]
fn exp_m1_negative(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits, which gives both
    // n and 2^n without a float-to-int conversion (Rust's saturating `as` does not vectorise).
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    // ln 2 split so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = r
        * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let exponent = shifted.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(exponent << 23);
    scale * p + (scale - 1.0)
}

multiversion! {
    /// `out = ELU(x * scale + shift)` element by element.
    pub fn affine_elu(x: &[f32], scale: f32, shift: f32, out: &mut [MaybeUninit<f32>]) => affine_elu_generic
}

#[inline(always)]
fn affine_elu_generic(x: &[f32], scale: f32, shift: f32, out: &mut [MaybeUninit<f32>]) {
    for (y, &v) in out.iter_mut().zip(x) {
        let z = v * scale + shift;
        let negative = exp_m1_negative(z.min(0.0));
        y.write(if z > 0.0 { z } else { negative });
    }
}

multiversion! {
    /// The backward step of `ELU(x * scale + shift)`: writes `dz = dy * ELU'(z)` and returns
    /// the sums of `dz` and of `dz * x` (in f64 across blocks of 4096).
    pub fn affine_elu_backward(x: &[f32], dy: &[f32], scale: f32, shift: f32, dz: &mut [f32]) -> (f64, f64)
        => affine_elu_backward_generic
}

#[inline(always)]
fn affine_elu_backward_generic(x: &[f32], dy: &[f32], scale: f32, shift: f32, dz: &mut [f32]) -> (f64, f64) {
    // ELU'(z) is 1 above zero and exp(z) below: exp(min(z, 0)) covers both.
    let slope = |v: f32| exp_m1_negative((v * scale + shift).min(0.0)) + 1.0;
    let (mut total, mut weighted) = (0.0f64, 0.0f64);
    for ((x, dy), dz) in x.chunks(4096).zip(dy.chunks(4096)).zip(dz.chunks_mut(4096)) {
        let (mut lane_total, mut lane_weighted) = ([0.0f32; 16], [0.0f32; 16]);
        let mut xs = x.chunks_exact(16);
        let mut gs = dy.chunks_exact(16);
        let mut outs = dz.chunks_exact_mut(16);
        for ((x, g), out) in (&mut xs).zip(&mut gs).zip(&mut outs) {
            for k in 0..16 {
                let d = g[k] * slope(x[k]);
                out[k] = d;
                lane_total[k] += d;
                lane_weighted[k] += d * x[k];
            }
        }
        for ((&v, &g), out) in xs.remainder().iter().zip(gs.remainder()).zip(outs.into_remainder()) {
            let d = g * slope(v);
            *out = d;
            lane_total[0] += d;
            lane_weighted[0] += d * v;
        }
        total += lane_total.iter().map(|&v| v as f64).sum::<f64>();
        weighted += lane_weighted.iter().map(|&v| v as f64).sum::<f64>();
    }
    (total, weighted)
}

multiversion! {
    /// `values = ELU(values + shift)` in place.
    pub fn shift_elu_in_place(values: &mut [f32], shift: f32) => shift_elu_in_place_generic
}

#[inline(always)]
fn shift_elu_in_place_generic(values: &mut [f32], shift: f32) {
    for value in values.iter_mut() {
        let z = *value + shift;
        let negative = exp_m1_negative(z.min(0.0));
        *value = if z > 0.0 { z } else { negative };
    }
}

multiversion! {
    /// The backward step of an ELU given its output `y`: `dz = dy * ELU'(z)`, where the slope
    /// is 1 above zero and `exp(z) = y + 1` below (so the input need not be kept).
    pub fn elu_backward_from_output(y: &[f32], dy: &[f32], dz: &mut [f32]) => elu_backward_from_output_generic
}

#[inline(always)]
fn elu_backward_from_output_generic(y: &[f32], dy: &[f32], dz: &mut [f32]) {
    for ((out, &y), &g) in dz.iter_mut().zip(y).zip(dy) {
        *out = if y > 0.0 { g } else { g * (y + 1.0) };
    }
}

multiversion! {
    /// `values = a * values + b * x + c`, element by element.
    pub fn combine_in_place(values: &mut [f32], x: &[f32], a: f32, b: f32, c: f32) => combine_in_place_generic
}

#[inline(always)]
fn combine_in_place_generic(values: &mut [f32], x: &[f32], a: f32, b: f32, c: f32) {
    for (value, &v) in values.iter_mut().zip(x) {
        *value = a * *value + b * v + c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{self, SimdPath};

    #[test]
    fn exp_m1_is_accurate_over_the_negative_range() {
        let mut worst = 0.0f64;
        let mut x = -90.0f32;
        while x <= 0.0 {
            let exact = (x as f64).exp_m1();
            let error = (exp_m1_negative(x) as f64 - exact).abs() / exact.abs().max(1e-30);
            if exact != 0.0 {
                worst = worst.max(error);
            }
            x += 0.001_37;
        }
        for x in [-1e-7f32, -1e-4, -0.3465, -0.3466, -1.0] {
            let exact = (x as f64).exp_m1();
            worst = worst.max((exp_m1_negative(x) as f64 - exact).abs() / exact.abs());
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_m1_negative(0.0), 0.0);
    }

    #[test]
    fn affine_elu_matches_the_definition_on_every_path() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        for path in SimdPath::supported() {
            let mut out = Vec::with_capacity(1000);
            isa::with_path(path, || affine_elu(&x, 1.7, -0.2, &mut out.spare_capacity_mut()[..1000]))
                .unwrap();
            // SAFETY: `affine_elu` wrote all 1000 values.
            unsafe { out.set_len(1000) };
            for (v, y) in x.iter().zip(&out) {
                // The affine step rounds once (with or without FMA, at most one ulp of |z|); the
                // polynomial is within 4e-7 of the result (the test above).
                let z = v * 1.7 - 0.2;
                let exact = if z > 0.0 { z as f64 } else { (z as f64).exp_m1() };
                let bound = f32::EPSILON as f64 * (z.abs() as f64) + 4e-7 * exact.abs() + 1e-12;
                assert!((*y as f64 - exact).abs() <= bound, "{path}, {v}: {y} vs {exact}");
            }
        }
    }

    #[test]
    fn sums_match_f64_on_every_path() {
        let values: Vec<f32> = (0..10_001).map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.3).collect();
        let exact_s: f64 = values.iter().map(|&v| v as f64).sum();
        let exact_q: f64 = values.iter().map(|&v| (v as f64).powi(2)).sum();
        let abs_s: f64 = values.iter().map(|&v| (v as f64).abs()).sum();
        // 16 lanes over blocks of 4096: each lane adds 256 values in f32 (squares one rounding more).
        let bound = |total: f64| 258.0 * f32::EPSILON as f64 * total;
        for path in SimdPath::supported() {
            let (s, q) = isa::with_path(path, || sum_and_squares(&values)).unwrap();
            assert!((s - exact_s).abs() <= bound(abs_s), "{path}: {s} vs {exact_s}");
            assert!((q - exact_q).abs() <= bound(exact_q), "{path}: {q} vs {exact_q}");
        }
    }
}
