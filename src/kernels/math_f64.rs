//! Elementary functions in f64 over slices, vectorised and in plain arithmetic without fused
//! multiply-adds, so that their bits are the same on every path of [`super::isa`] and every
//! platform: the sparse engine's vacuum is a pure function of its seed, whatever machine
//! generates it. Each is within an ulp of the exact value, as the platform's libm.

use super::simd::multiversion;

multiversion! {
    /// How many of `x` lie outside `[low, high]`, NaN included: the lanes a kernel leaves to
    /// libm, found in one vectorised pass (the check lane by lane cost half as much as a kernel).
    pub fn count_outside(x: &[f64], low: f64, high: f64) -> usize => count_outside_generic
}

#[inline(always)]
fn count_outside_generic(x: &[f64], low: f64, high: f64) -> usize {
    x.iter().filter(|&&x| outside(x, low, high)).count()
}

/// Whether `x` lies outside `[low, high]` or is NaN.
#[inline(always)]
fn outside(x: f64, low: f64, high: f64) -> bool {
    !(x >= low && x <= high)
}

// ---------------------------------------------------------------------------------------------
// Natural logarithm

/// `ln x[i]` into `out`, within an ulp of f64 (FreeBSD's `e_log.c`, both of its polynomial
/// forms chosen lane by lane); for zero, negative, subnormal and non-finite x the platform's
/// `ln`.
pub fn ln_f64(x: &[f64], out: &mut [f64]) {
    ln_normal(x, out);
    // The positive normal numbers.
    let (low, high) = (f64::MIN_POSITIVE, f64::MAX);
    if count_outside(x, low, high) > 0 {
        for (&x, out) in x.iter().zip(out.iter_mut()) {
            if outside(x, low, high) {
                *out = x.ln();
            }
        }
    }
}

multiversion! {
    /// [`ln_f64`] for positive normal x (other lanes are left to the caller).
    pub fn ln_normal(x: &[f64], out: &mut [f64]) => ln_normal_generic
}

// The constants as fdlibm publishes them (their decimals round to the intended doubles).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn ln_normal_generic(x: &[f64], out: &mut [f64]) {
    // ln 2 in a leading part whose multiples by an exponent are exact, and the rest.
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    const LG: [f64; 7] = [
        6.666_666_666_666_735_130e-01,
        3.999_999_999_940_941_908e-01,
        2.857_142_874_366_239_149e-01,
        2.222_219_843_214_978_396e-01,
        1.818_357_216_161_805_012e-01,
        1.531_383_769_920_937_332e-01,
        1.479_819_860_511_658_591e-01,
    ];
    for (&x, out) in x.iter().zip(out.iter_mut()) {
        // x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)): the high word's mantissa bits
        // decide whether x's mantissa or half of it lies there.
        let bits = x.to_bits();
        let high = (bits >> 32) as i32;
        let mantissa = high & 0x000f_ffff;
        let half = (mantissa + 0x95f64) & 0x0010_0000;
        let k = ((high >> 20) - 1023 + (half >> 20)) as f64;
        let reduced_high = (mantissa | (half ^ 0x3ff0_0000)) as u32 as u64;
        let f = f64::from_bits((reduced_high << 32) | (bits & 0xffff_ffff)) - 1.0;
        // ln(1 + f) = 2 atanh(s) = f - s (f - R) with s = f / (2 + f) and R a series in s^2.
        let s = f / (2.0 + f);
        let (z, w) = (s * s, s * s * (s * s));
        let odd = w * (LG[1] + w * (LG[3] + w * LG[5]));
        let even = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
        let r = even + odd;
        // Away from 1 + f = 1, fdlibm splits off f^2 / 2 for accuracy.
        let far = ((mantissa - 0x6147a) | (0x6b851 - mantissa)) > 0;
        let half_square = 0.5 * f * f;
        *out = if far {
            k * LN2_HI - ((half_square - (s * (half_square + r) + k * LN2_LO)) - f)
        } else {
            k * LN2_HI - ((s * (f - r) - k * LN2_LO) - f)
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Sine and cosine

/// Where [`sin_cos_f64`]'s own reduction holds: `|x| <= 2^19 pi/2`, so that `q pi/2` with the
/// 33-bit leading part of pi/2 is exact.
const SIN_COS_REACH: f64 = 823_549.6;

/// `(sin x[i], cos x[i])` into `sin` and `cos`, within an ulp of f64 (FreeBSD's kernels after a
/// four-part Cody-Waite reduction by pi/2), in plain arithmetic without fused multiply-adds, so
/// the bits are the same on every path and every platform; beyond [`SIN_COS_REACH`] (and for
/// non-finite x) the platform's `sin_cos`. About four times libm's rate on AVX-512.
pub fn sin_cos_f64(x: &[f64], sin: &mut [f64], cos: &mut [f64]) {
    sin_cos_reduced(x, sin, cos);
    if count_outside(x, -SIN_COS_REACH, SIN_COS_REACH) > 0 {
        for ((&x, sin), cos) in x.iter().zip(sin.iter_mut()).zip(cos.iter_mut()) {
            if outside(x, -SIN_COS_REACH, SIN_COS_REACH) {
                (*sin, *cos) = x.sin_cos();
            }
        }
    }
}

multiversion! {
    /// [`sin_cos_f64`] for `|x| <= SIN_COS_REACH`.
    pub fn sin_cos_reduced(x: &[f64], sin: &mut [f64], cos: &mut [f64]) => sin_cos_reduced_generic
}

// The constants as fdlibm publishes them (their decimals round to the intended doubles).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn sin_cos_reduced_generic(x: &[f64], sin: &mut [f64], cos: &mut [f64]) {
    // pi/2 in three 33-bit parts and the rest (fdlibm's pio2_1, pio2_2, pio2_3, pio2_3t).
    const PIO2_1: f64 = 1.570_796_326_734_125_614_17;
    const PIO2_2: f64 = 6.077_100_506_303_965_976_60e-11;
    const PIO2_3: f64 = 2.022_266_248_711_166_455_80e-21;
    const PIO2_3T: f64 = 8.478_427_660_368_899_569_97e-32;
    const S: [f64; 6] = [
        -1.666_666_666_666_663_243_48e-01,
        8.333_333_333_322_489_461_24e-03,
        -1.984_126_982_985_794_931_34e-04,
        2.755_731_370_707_006_767_89e-06,
        -2.505_076_025_340_686_341_95e-08,
        1.589_690_995_211_550_102_21e-10,
    ];
    const C: [f64; 6] = [
        4.166_666_666_666_660_190_37e-02,
        -1.388_888_888_887_410_957_49e-03,
        2.480_158_728_947_672_941_78e-05,
        -2.755_731_435_139_066_330_35e-07,
        2.087_572_321_298_174_827_90e-09,
        -1.135_964_755_778_819_482_65e-11,
    ];
    for ((&x, sin), cos) in x.iter().zip(sin.iter_mut()).zip(cos.iter_mut()) {
        let q = (x * std::f64::consts::FRAC_2_PI + 0.5).floor();
        let r = (((x - q * PIO2_1) - q * PIO2_2) - q * PIO2_3) - q * PIO2_3T;
        let (z, w) = (r * r, r * r * (r * r));
        let tail = S[1] + z * (S[2] + z * S[3]) + z * w * (S[4] + z * S[5]);
        let s = r + z * r * (S[0] + z * tail);
        let poly = z * (C[0] + z * (C[1] + z * C[2])) + w * w * (C[3] + z * (C[4] + z * C[5]));
        let (half, one_minus) = (0.5 * z, 1.0 - 0.5 * z);
        let c = one_minus + (((1.0 - one_minus) - half) + z * poly);
        // The quadrant q mod 4 picks and signs the pair.
        let quadrant = q - 4.0 * (q * 0.25).floor();
        let odd = quadrant == 1.0 || quadrant == 3.0;
        let (a, b) = if odd { (c, s) } else { (s, c) };
        *sin = if quadrant >= 2.0 { -a } else { a };
        *cos = if quadrant == 1.0 || quadrant == 2.0 { -b } else { b };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{self, SimdPath};

    /// Distance in ulps of `b`.
    fn ulps(a: f64, b: f64) -> f64 {
        (a - b).abs() / (f64::EPSILON * b.abs().max(f64::MIN_POSITIVE))
    }

    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn ln_is_within_two_ulps_of_libm_with_the_same_bits_on_every_path() {
        // The vacuum's uniforms (k / 2^32), values around 1 on both sides of both forms'
        // boundary, and wide and tiny magnitudes; then the lanes left to libm.
        let x: Vec<f64> = (0..100_003u64)
            .map(|i| {
                let u = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64;
                match i % 4 {
                    0 => ((u * 4_294_967_296.0).floor() + 1.0) / 4_294_967_296.0,
                    1 => 0.5 + u,
                    2 => 1.0 + (u - 0.5) * 1e-9,
                    _ => (u * 1400.0 - 700.0).exp(),
                }
            })
            .chain([1.0, 2.0, 0.5, f64::MIN_POSITIVE, f64::MAX, 1e-310, 0.0, -0.0, -1.0])
            .chain([f64::INFINITY, f64::NAN])
            .collect();
        let run = |path| {
            let mut out = vec![0.0; x.len()];
            isa::with_path(path, || ln_f64(&x, &mut out)).unwrap();
            out
        };
        let ln = run(SimdPath::Portable);
        for (&x, &value) in x.iter().zip(&ln) {
            let exact = x.ln();
            if exact.is_nan() || exact.is_infinite() || exact == 0.0 {
                assert!(value.to_bits() == exact.to_bits() || (value.is_nan() && exact.is_nan()), "{x:e}");
            } else {
                assert!(ulps(value, exact) <= 2.0, "{x:e}: {value} vs {exact}");
            }
        }
        for path in SimdPath::supported() {
            assert_eq!(bits(&run(path)), bits(&ln), "{path}");
        }
    }

    #[test]
    fn sin_cos_is_within_two_ulps_of_libm_with_the_same_bits_on_every_path() {
        // Angles over four turns either side, phases up to the reduction's reach, tiny ones.
        let x: Vec<f64> = (0..100_003u64)
            .map(|i| {
                let u = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64;
                match i % 3 {
                    0 => (u - 0.5) * 50.0,
                    1 => (u - 0.5) * 2.0 * SIN_COS_REACH,
                    _ => (u - 0.5) * 1e-6,
                }
            })
            .chain([0.0, -0.0, std::f64::consts::FRAC_PI_2, std::f64::consts::PI, 1e7, f64::NAN])
            .collect();
        let run = |path| {
            let (mut sin, mut cos) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            isa::with_path(path, || sin_cos_f64(&x, &mut sin, &mut cos)).unwrap();
            (sin, cos)
        };
        let (sin, cos) = run(SimdPath::Portable);
        // libm and these kernels are each within an ulp of the exact value.
        for ((&x, &s), &c) in x.iter().zip(&sin).zip(&cos) {
            if x.is_nan() {
                assert!(s.is_nan() && c.is_nan());
                continue;
            }
            assert!(
                ulps(s, x.sin()) <= 2.0 && ulps(c, x.cos()) <= 2.0,
                "{x:e}: ({s}, {c}) vs {:?}",
                x.sin_cos()
            );
        }
        for path in SimdPath::supported() {
            let (other_sin, other_cos) = run(path);
            assert_eq!((bits(&other_sin), bits(&other_cos)), (bits(&sin), bits(&cos)), "{path}");
        }
    }
}
