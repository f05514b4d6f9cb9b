//! Tests of the spline: construction, serialisation, knots, the f32 helpers against f64 and
//! the f32 kernel against the f64 one.

use rand::RngExt;

use super::scalar::{sigmoid, softplus};
use super::*;
use crate::rng::rng_from_seed;

#[test]
fn construction_rejects_bad_sizes() {
    assert!(Rqs::new(0, 5.0).is_err());
    assert!(Rqs::new(MAX_BINS + 1, 5.0).is_err());
    assert!(Rqs::new(8, 0.0).is_err());
    assert!(Rqs::new(8, f64::NAN).is_err());
    assert!(
        Rqs::new(8, 5.0)
            .unwrap()
            .with_minimums(2.0, 1e-3, 1e-3)
            .is_err()
    );
    assert!(
        Rqs::new(8, 5.0)
            .unwrap()
            .with_minimums(1e-3, 1e-3, 0.0)
            .is_err()
    );
    assert!(Rqs::new(MAX_BINS, 5.0).is_ok());
    assert_eq!(Rqs::new(8, 5.0).unwrap(), Rqs::default());
}

#[test]
fn serde_round_trip_validates() {
    let r = Rqs::new(6, 3.0).unwrap();
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Rqs>(&json).unwrap(), r);
    let bad = json.replace("\"bins\":6", "\"bins\":99");
    assert!(serde_json::from_str::<Rqs>(&bad).is_err());
}

#[test]
fn zero_parameters_give_uniform_knots_and_identity() {
    // Equal widths and heights with derivative softplus(0) + min ≠ 1: the map is not the
    // identity, but it fixes every knot X_k = Y_k = −a + 2ak/K.
    let r = Rqs::default();
    let raw = vec![0.0; 23];
    for k in 0..=8 {
        let x = -5.0 + 10.0 * k as f64 / 8.0;
        let x = x.clamp(-5.0, 5.0);
        let (mut y, mut ld) = ([0.0], [0.0]);
        r.forward(&[x], &raw, &mut y, &mut ld);
        let y = y[0];
        assert!((y - x).abs() < 1e-12, "knot {k}: {y} vs {x}");
    }
}

#[test]
fn f32_ln_1p_and_softplus_match_f64() {
    for i in 0..=20_000 {
        let u = i as f32 / 20_000.0 * if i % 2 == 0 { 1.0 } else { 1e-6 };
        let exact = (u as f64).ln_1p();
        let err = (f32::ln_1p_wide(u as f64) - exact).abs();
        assert!(
            err <= 2.5e-7 * exact.abs() + 1e-45,
            "ln_1p({u}): error {err:e}"
        );
    }
    for i in 0..=8000 {
        let x = -40.0 + i as f32 * 0.01;
        let exact = softplus::<f64>(x as f64);
        let err = (softplus::<f32>(x as f64) - exact).abs();
        assert!(err <= 5e-7 * exact, "softplus({x}): error {err:e}");
        let exact = sigmoid::<f64>(x as f64);
        let err = (sigmoid::<f32>(x as f64) - exact).abs();
        assert!(err <= 5e-7 * exact, "sigmoid({x}): error {err:e}");
    }
}

fn sites(k: usize, n: usize, v_max: f32, theta_max: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rng_from_seed(seed);
    let v = (0..n).map(|_| rng.random_range(-v_max..v_max)).collect();
    let theta = (0..n * k)
        .map(|_| rng.random_range(-theta_max..theta_max))
        .collect();
    (v, theta)
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&x| x as f64).collect()
}

/// For several bin counts, the f32 kernel (f32 exponentials and logarithm) agrees with
/// the f64 one on the same inputs: y and ld to 1e-5 (1 + |·|), the backward pass to
/// 1e-4 (1 + |·|), the standard of `tests/transforms.rs`.
#[test]
fn f32_kernel_agrees_with_f64_for_all_bin_counts() {
    let close = |a: f32, b: f64, tol: f64| (a as f64 - b).abs() <= tol * (1.0 + b.abs());
    for bins in [1, 2, 3, 8, 13, 32] {
        let r = Rqs::new(bins, 4.0).unwrap();
        let k = 3 * bins - 1;
        let n = 400;
        let (v, theta) = sites(k, n, 5.0, 2.0, bins as u64);
        let (gy, gld) = sites(1, n, 1.0, 1.0, 100 + bins as u64);
        let (mut y32, mut ld32) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut y64, mut ld64) = (vec![0.0; n], vec![0.0; n]);
        r.forward(&v, &theta, &mut y32, &mut ld32);
        r.forward(&widen(&v), &widen(&theta), &mut y64, &mut ld64);
        let (mut gv32, mut gt32) = (vec![0.0f32; n], vec![0.0f32; n * k]);
        let (mut gv64, mut gt64) = (vec![0.0; n], vec![0.0; n * k]);
        r.backward(&v, &theta, &gy, &gld[..n], &mut gv32, &mut gt32);
        let (gy64, gld64) = (widen(&gy), widen(&gld[..n]));
        r.backward(
            &widen(&v),
            &widen(&theta),
            &gy64,
            &gld64,
            &mut gv64,
            &mut gt64,
        );
        for i in 0..n {
            assert!(close(y32[i], y64[i], 1e-5), "K={bins} y[{i}]");
            assert!(close(ld32[i], ld64[i], 1e-5), "K={bins} ld[{i}]");
            assert!(close(gv32[i], gv64[i], 1e-4), "K={bins} gv[{i}]");
        }
        for j in 0..n * k {
            assert!(close(gt32[j], gt64[j], 1e-4), "K={bins} gθ[{j}]");
        }
    }
}

/// Inputs up to |v| = 50 and raw parameters up to ±80 (softmax weights spanning e^160,
/// knot derivatives from 1e-3 to 80) give finite f32 outputs, inverses and gradients.
#[test]
fn f32_kernel_is_finite_for_extreme_inputs() {
    let r = Rqs::default();
    let k = 23;
    let n = 4000;
    let (v, theta) = sites(k, n, 50.0, 80.0, 7);
    let (mut y, mut ld) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut back, mut ld_back) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut gv, mut gt) = (vec![0.0f32; n], vec![0.0f32; n * k]);
    r.forward(&v, &theta, &mut y, &mut ld);
    r.inverse(&y, &theta, &mut back, &mut ld_back);
    r.backward(&v, &theta, &y, &ld, &mut gv, &mut gt);
    let inside = v.iter().filter(|x| x.abs() < 5.0).count();
    assert!(inside > 300, "too few sites inside the spline: {inside}");
    for x in [&y, &ld, &back, &ld_back, &gv, &gt] {
        assert!(x.iter().all(|x| x.is_finite()));
    }
}

/// Every pass of kernel `B` on `T` (forward with and without saved state, inverse,
/// backward with and without saved state), specialised for `r.bins()` or not, as bits.
fn all_passes<T: SplineFloat, B: BinKernel<T>>(
    r: &Rqs,
    general: bool,
    v: &[T],
    theta: &[T],
    gy: &[T],
) -> Vec<u64> {
    let run = |batch: Batch<'_, T>| {
        if general {
            r.run_general::<T, B>(batch)
        } else {
            r.run::<T, B>(batch)
        }
    };
    let n = v.len();
    let zeros = || vec![T::zero(); n];
    let (mut y, mut ld, mut saved) = (zeros(), zeros(), vec![T::zero(); T::saved_len(r, n)]);
    run(Batch::Forward {
        v,
        theta,
        y: &mut y,
        ld: &mut ld,
        saved: &mut saved,
    });
    let (mut y_plain, mut ld_plain) = (zeros(), zeros());
    run(Batch::Forward {
        v,
        theta,
        y: &mut y_plain,
        ld: &mut ld_plain,
        saved: &mut [],
    });
    let (mut back, mut ld_back) = (zeros(), zeros());
    run(Batch::Inverse {
        y: &y,
        theta,
        v: &mut back,
        ld: &mut ld_back,
    });
    let mut grads = Vec::new();
    for saved in [&saved[..], &[]] {
        let (mut gv, mut gtheta) = (zeros(), vec![T::zero(); theta.len()]);
        run(Batch::Backward {
            v,
            theta,
            saved,
            gy,
            gld: &y,
            gv: &mut gv,
            gtheta: &mut gtheta,
        });
        grads.extend(gv.into_iter().chain(gtheta));
    }
    [y, ld, saved, y_plain, ld_plain, back, ld_back, grads]
        .concat()
        .into_iter()
        .map(|x| x.widen().to_bits())
        .collect()
}

/// The general kernels (arrays of MAX_BINS, bin count at run time) give bit for bit what
/// the kernels specialised for each bin count give, on both float types: 21 sites (two
/// full groups of eight and a partial one), inside and outside (−a, a).
#[test]
fn general_kernels_match_the_specialised_ones_bit_for_bit() {
    for &bins in SPECIALISED_BINS {
        let r = Rqs::new(bins, 4.0).unwrap();
        let (v, theta) = sites(3 * bins - 1, 21, 5.0, 2.0, 300 + bins as u64);
        let (gy, _) = sites(1, 21, 1.0, 1.0, 400 + bins as u64);
        let lanes = |general| all_passes::<f32, LaneGroups>(&r, general, &v, &theta, &gy);
        assert_eq!(lanes(true), lanes(false), "f32, K = {bins}");
        let (v, theta, gy) = (widen(&v), widen(&theta), widen(&gy));
        let per_site = |general| all_passes::<f64, PerSite>(&r, general, &v, &theta, &gy);
        assert_eq!(per_site(true), per_site(false), "f64, K = {bins}");
    }
    assert!(!SPECIALISED_BINS.contains(&13) && !SPECIALISED_BINS.contains(&MAX_BINS));
}
