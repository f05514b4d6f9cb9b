//! Branch-free f32 approximations of exp, ln and tanh: no library calls and no branches,
//! so that loops over them vectorise. f32 network math and the f32 spline use them; f64
//! uses the standard library.

use std::any::TypeId;

use super::Real;

/// exp(x) in f32 without library calls or branches (so loops over it vectorise): range
/// reduction x = n ln 2 + r with |r| ≤ ln 2 / 2 and a degree-6 polynomial for eʳ (Cephes
/// `expf`). Relative error below 2.5e-7 (about 2 ulp) for x ∈ [−87, 88]; the input is
/// clamped to that range, so the result is always finite and positive (NaN stays NaN).
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    er * f32::from_bits((exponent.wrapping_add(127) as u32) << 23)
}

/// ln(x) in f32 without library calls or branches: x = m·2ᵉ with m ∈ [√½, √2) and a
/// degree-9 polynomial in m − 1 (Cephes `logf`). Absolute error below 1.2e-7 · max(1, |ln x|)
/// for positive normal x; inputs below the smallest positive normal (zero, subnormals,
/// negatives) are treated as that number, so the result is always finite.
#[inline]
pub fn ln_f32(x: f32) -> f32 {
    const SQRT2: f32 = std::f32::consts::SQRT_2;
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > SQRT2;
    e += big as i32;
    let f = if big { 0.5 * m } else { m } - 1.0;
    let z = f * f;
    let p = 7.037_683_6e-2f32;
    let p = p * f - 1.151_461_1e-1;
    let p = p * f + 1.167_699_9e-1;
    let p = p * f - 1.242_014_1e-1;
    let p = p * f + 1.424_932_3e-1;
    let p = p * f - 1.666_805_8e-1;
    let p = p * f + 2.000_071_4e-1;
    let p = p * f - 2.499_999_4e-1;
    let p = p * f + 3.333_333e-1;
    let e = e as f32;
    let y = p * f * z + e * -2.121_944_4e-4 - 0.5 * z;
    f + y + e * 0.693_359_4
}

/// tanh for f32 as a rational function on [−9, 9] (saturating outside), the classic
/// minimax approximation used by Eigen, clamped to [−1, 1]: within a few ulp of the exact
/// value, odd, and free
/// of branches and library calls so that loops over it vectorise.
#[inline]
pub fn tanh_f32(x: f32) -> f32 {
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-9.0, 9.0);
    let x2 = x * x;
    let p = x2 * A13 + A11;
    let p = x2 * p + A9;
    let p = x2 * p + A7;
    let p = x2 * p + A5;
    let p = x2 * p + A3;
    let p = x2 * p + A1;
    let p = x * p;
    let q = x2 * B6 + B4;
    let q = x2 * q + B2;
    let q = x2 * q + B0;
    (p / q).clamp(-1.0, 1.0)
}

/// y = tanh(x) elementwise as [`Real::tanh_map`] computes it; in f32 on processors with
/// AVX-512 the loop runs 16 lanes wide.
pub(crate) fn tanh_into<T: Real>(xs: &[T], ys: &mut [T]) {
    assert_eq!(xs.len(), ys.len(), "tanh: lengths");
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: T is f32 (checked through its TypeId); the processor has AVX-512F.
        unsafe {
            tanh_avx512(
                std::slice::from_raw_parts(xs.as_ptr().cast::<f32>(), xs.len()),
                std::slice::from_raw_parts_mut(ys.as_mut_ptr().cast::<f32>(), ys.len()),
            )
        };
        return;
    }
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = x.tanh_map();
    }
}

/// y = tanh(y) in place (see [`tanh_into`]).
pub(crate) fn tanh_in_place<T: Real>(ys: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: as in `tanh_into`.
        unsafe {
            tanh_in_place_avx512(std::slice::from_raw_parts_mut(
                ys.as_mut_ptr().cast::<f32>(),
                ys.len(),
            ))
        };
        return;
    }
    for y in ys.iter_mut() {
        *y = y.tanh_map();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tanh_avx512(xs: &[f32], ys: &mut [f32]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = tanh_f32(x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tanh_in_place_avx512(ys: &mut [f32]) {
    for y in ys.iter_mut() {
        *y = tanh_f32(*y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 61st f32 in [lo, hi] (a few hundred thousand points spread over all exponents).
    fn floats_between(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let start = lo.to_bits();
        let end = hi.to_bits();
        (start..=end).step_by(61).map(f32::from_bits)
    }

    #[test]
    fn exp_f32_relative_error_is_within_its_stated_bound() {
        let mut worst = 0.0f64;
        // Negative and positive halves of [−87, 88] (bit patterns run in opposite orders).
        for x in floats_between(0.0, 87.0)
            .map(|x| -x)
            .chain(floats_between(0.0, 88.0))
        {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 2.5e-7, "max relative error {worst:e}");
        // Clamped outside the range: finite, positive, monotone at the ends.
        assert!(exp_f32(-1e30) > 0.0 && exp_f32(-1e30) == exp_f32(-87.0));
        assert!(exp_f32(1e30).is_finite() && exp_f32(1e30) == exp_f32(88.0));
    }

    #[test]
    fn ln_f32_error_is_within_its_stated_bound() {
        let mut worst = 0.0f64;
        for x in floats_between(f32::MIN_POSITIVE, f32::MAX) {
            let exact = (x as f64).ln();
            worst = worst.max((ln_f32(x) as f64 - exact).abs() / exact.abs().max(1.0));
        }
        assert!(worst < 1.2e-7, "max scaled error {worst:e}");
        for bad in [0.0, -1.0, 1e-45, f32::MIN_POSITIVE / 4.0] {
            assert_eq!(ln_f32(bad), ln_f32(f32::MIN_POSITIVE));
        }
    }
}
