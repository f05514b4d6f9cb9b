//! Laws of the pointwise transforms: invertibility (f32 and f64), log-derivatives,
//! backward passes against finite differences and against forward mode, identities at
//! zero parameters, the Z2 symmetry of `Z2Affine`, and continuity of the spline at its
//! knots and at ±a.

use latflow::flow::PointwiseTransform;
use latflow::flow::transform::{
    Additive, Affine, ForwardMode, MAX_FORWARD_MODE_PARAMS, Rqs, ScalarMap, Z2Affine,
};
use latflow::testing::strategies::proptest_config;
use latflow::testing::strategies::{arb_field, arb_sites, arb_theta};
use latflow::testing::{
    GradCheck, check_saved_backward, check_transform_finite, check_transform_gradients,
    check_transform_invertible, check_transform_log_derivative, check_transform_matches_reference,
    to_f32,
};
use num_traits::Float;
use proptest::prelude::*;

/// (v, θ) for `sites` sites of a transform with `k` parameters per site: v of order 6 with
/// one value in four up to |v| = 50, θ uniform in (−scale, scale).
fn case(k: usize, sites: usize, scale: f64) -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (arb_field(sites, 6.0), arb_theta(k, sites, scale))
}

/// `cases` cases per property from a fixed seed; failing cases go to
/// `proptest-regressions/transforms.txt`.
fn config(cases: u32) -> ProptestConfig {
    proptest_config(cases, "proptest-regressions/transforms.txt")
}

fn shift_scale_transforms() -> Vec<(&'static str, Box<dyn PointwiseTransform<f64>>)> {
    vec![
        ("additive", Box::new(Additive)),
        ("affine", Box::new(Affine)),
        ("z2-affine", Box::new(Z2Affine)),
    ]
}

#[test]
fn zero_parameters_are_the_identity() {
    let v: Vec<f64> = (0..41).map(|i| -50.0 + 2.5 * i as f64).collect();
    for (name, t) in shift_scale_transforms() {
        let theta = vec![0.0; v.len() * t.params_per_site()];
        let (mut y, mut ld) = (vec![1.0; v.len()], vec![1.0; v.len()]);
        t.forward(&v, &theta, &mut y, &mut ld);
        assert_eq!(y, v, "{name}: forward is not the identity");
        assert!(ld.iter().all(|&l| l == 0.0), "{name}: forward ld {ld:?}");
        t.inverse(&v, &theta, &mut y, &mut ld);
        assert_eq!(y, v, "{name}: inverse is not the identity");
        assert!(ld.iter().all(|&l| l == 0.0), "{name}: inverse ld {ld:?}");
    }
}

/// An `Affine` whose backward forgets the log-det term of ∂L/∂s: the gradient check must
/// catch it.
struct AffineMissingLogDetGradient;

impl PointwiseTransform<f64> for AffineMissingLogDetGradient {
    fn params_per_site(&self) -> usize {
        2
    }
    fn forward(&self, v: &[f64], theta: &[f64], y: &mut [f64], ld: &mut [f64]) {
        Affine.forward(v, theta, y, ld)
    }
    fn inverse(&self, y: &[f64], theta: &[f64], v: &mut [f64], ld: &mut [f64]) {
        Affine.inverse(y, theta, v, ld)
    }
    fn backward(
        &self,
        v: &[f64],
        theta: &[f64],
        gy: &[f64],
        _gld: &[f64],
        gv: &mut [f64],
        gtheta: &mut [f64],
    ) {
        let zeros = vec![0.0; v.len()];
        Affine.backward(v, theta, gy, &zeros, gv, gtheta)
    }
}

#[test]
fn gradient_check_detects_a_missing_term() {
    let v = [0.3, -1.2, 2.0];
    let theta = [0.1, 0.2, -0.4, 0.5, 0.7, -0.3];
    let cfg = GradCheck::default();
    assert!(check_transform_gradients(&Affine, &v, &theta, &cfg).is_ok());
    let err = check_transform_gradients(&AffineMissingLogDetGradient, &v, &theta, &cfg)
        .expect_err("a wrong backward must fail the check");
    assert!(err.contains("∂L/∂θ"), "{err}");
}

proptest! {
    #![proptest_config(config(128))]

    /// Backward against central differences of L = Σ a y + b ld in f64 (h = 1e-5,
    /// rtol 1e-6, atol 1e-6 · max(1, |v|)); |s| ≤ 3 keeps e^{±s} of order 20, and cases with
    /// some |s| < 1e-4 are skipped (the kink of |s| in Z2Affine lies within reach of h).
    #[test]
    fn shift_scale_backward_matches_finite_differences(
        (v, theta) in case(2, 6, 3.0),
        seed in any::<u64>(),
    ) {
        prop_assume!(theta.chunks(2).all(|p| p[0].abs() >= 1e-4));
        for (name, t) in shift_scale_transforms() {
            let k = t.params_per_site();
            let theta = &theta[..v.len() * k];
            let vmax = v.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            let cfg = GradCheck { step: 1e-5, rtol: 1e-6, atol: 1e-6 * vmax, seed };
            if let Err(e) = check_transform_gradients(t.as_ref(), &v, theta, &cfg) {
                prop_assert!(false, "{name}: {e}");
            }
        }
    }

    /// C⁻¹(C(v)) = v with |Δv| ≤ 8ε(|v| + |t|) (ε the machine epsilon of the type: the
    /// shift-scale inverse is backward stable), and inverse ld = −forward ld exactly.
    #[test]
    fn shift_scale_invertible_in_f64_and_f32((v, theta) in case(2, 8, 4.0)) {
        for (name, t64) in shift_scale_transforms() {
            let k = t64.params_per_site();
            let theta = &theta[..v.len() * k];
            let n = v.len();
            let (mut y, mut ld, mut back, mut ldi) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            t64.forward(&v, theta, &mut y, &mut ld);
            t64.inverse(&y, theta, &mut back, &mut ldi);
            for i in 0..n {
                let shift = theta[i * k + k - 1].abs();
                let tol = 8.0 * f64::EPSILON * (v[i].abs() + shift);
                prop_assert!((back[i] - v[i]).abs() <= tol, "{name} f64 site {i}: {} vs {}", back[i], v[i]);
                prop_assert_eq!(ldi[i], -ld[i]);
                prop_assert!(y[i].is_finite() && ld[i].is_finite());
            }
        }
        let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let th32: Vec<f32> = theta.iter().map(|&x| x as f32).collect();
        let t32: Vec<(&str, Box<dyn PointwiseTransform<f32>>)> = vec![
            ("additive", Box::new(Additive)),
            ("affine", Box::new(Affine)),
            ("z2-affine", Box::new(Z2Affine)),
        ];
        for (name, t) in t32 {
            let k = t.params_per_site();
            let th = &th32[..v32.len() * k];
            let n = v32.len();
            let (mut y, mut ld, mut back, mut ldi) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
            t.forward(&v32, th, &mut y, &mut ld);
            t.inverse(&y, th, &mut back, &mut ldi);
            for i in 0..n {
                let shift = th[i * k + k - 1].abs();
                let tol = 8.0 * f32::EPSILON * (v32[i].abs() + shift);
                prop_assert!((back[i] - v32[i]).abs() <= tol, "{name} f32 site {i}: {} vs {}", back[i], v32[i]);
                prop_assert_eq!(ldi[i], -ld[i]);
            }
        }
    }

    /// Z2Affine is odd under (v, t) → (−v, −t) at fixed s, and even in s.
    #[test]
    fn z2_affine_is_odd((v, theta) in case(2, 8, 4.0)) {
        let n = v.len();
        let neg_v: Vec<f64> = v.iter().map(|x| -x).collect();
        let mut flipped = theta.clone();
        for p in flipped.chunks_exact_mut(2) {
            p[1] = -p[1];
        }
        let mut neg_s = theta.clone();
        for p in neg_s.chunks_exact_mut(2) {
            p[0] = -p[0];
        }
        let (mut y, mut ld) = (vec![0.0; n], vec![0.0; n]);
        let (mut y2, mut ld2) = (vec![0.0; n], vec![0.0; n]);
        let (mut y3, mut ld3) = (vec![0.0; n], vec![0.0; n]);
        Z2Affine.forward(&v, &theta, &mut y, &mut ld);
        Z2Affine.forward(&neg_v, &flipped, &mut y2, &mut ld2);
        Z2Affine.forward(&v, &neg_s, &mut y3, &mut ld3);
        for i in 0..n {
            prop_assert_eq!(y2[i], -y[i]);
            prop_assert_eq!(ld2[i], ld[i]);
            prop_assert_eq!(y3[i], y[i]);
            prop_assert_eq!(ld3[i], ld[i]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Forward-mode oracles: the same maps written once as formulas.

fn c<F: Float>(x: f64) -> F {
    F::from(x).unwrap()
}

struct AdditiveMap;
impl ScalarMap for AdditiveMap {
    fn params_per_site(&self) -> usize {
        1
    }
    fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
        v - theta[0]
    }
}

struct AffineMap;
impl ScalarMap for AffineMap {
    fn params_per_site(&self) -> usize {
        2
    }
    fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
        (v - theta[1]) * (-theta[0]).exp()
    }
}

struct Z2AffineMap;
impl ScalarMap for Z2AffineMap {
    fn params_per_site(&self) -> usize {
        2
    }
    fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
        (v - theta[1]) * (-theta[0].abs()).exp()
    }
}

/// The spline of docs/flows.md#rational-quadratic-spline written out directly (default
/// minimums 1e-3).
struct RqsMap {
    bins: usize,
    bound: f64,
}

impl ScalarMap for RqsMap {
    fn params_per_site(&self) -> usize {
        3 * self.bins - 1
    }
    fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
        let k = self.bins;
        let a: F = c(self.bound);
        if !(v > -a && v < a) {
            return v;
        }
        let min: F = c(1e-3);
        let sizes = |raw: &[F]| -> Vec<F> {
            let max = raw.iter().fold(raw[0], |m, &r| m.max(r));
            let e: Vec<F> = raw.iter().map(|&r| (r - max).exp()).collect();
            let sum = e.iter().fold(F::zero(), |s, &x| s + x);
            let scale = c::<F>(2.0) * a - c::<F>(k as f64) * min;
            e.iter().map(|&x| min + scale * x / sum).collect()
        };
        let w = sizes(&theta[..k]);
        let h = sizes(&theta[k..2 * k]);
        let mut d = vec![F::one(); k + 1];
        for j in 1..k {
            d[j] = (F::one() + theta[2 * k + j - 1].exp()).ln() + min;
        }
        let (mut x0, mut y0) = (-a, -a);
        let mut l = 0;
        while l + 1 < k && v >= x0 + w[l] {
            x0 = x0 + w[l];
            y0 = y0 + h[l];
            l += 1;
        }
        let s = h[l] / w[l];
        let alpha = (v - x0) / w[l];
        let q = alpha * (F::one() - alpha);
        let num = s * alpha * alpha + d[l] * q;
        let den = s + (d[l] + d[l + 1] - c::<F>(2.0) * s) * q;
        y0 + h[l] * num / den
    }
}

/// A sinh–arcsinh map C = sinh(e^{θ₁} asinh(v) − θ₀), monotone for every θ.
struct SinhArcsinh;
impl ScalarMap for SinhArcsinh {
    fn params_per_site(&self) -> usize {
        2
    }
    fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
        (theta[1].exp() * v.asinh() - theta[0]).sinh()
    }
}

/// Bin widths of a default-minimum spline on [−a, a] from its raw width parameters:
/// 1e-3 + (2a − K·1e-3) softmax(raw).
fn bin_widths(raw: &[f64], a: f64) -> Vec<f64> {
    let max = raw.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = raw.iter().map(|r| (r - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    let scale = 2.0 * a - raw.len() as f64 * 1e-3;
    e.iter().map(|ek| 1e-3 + scale * ek / sum).collect()
}

/// The interior knots X_1 … X_{K−1} of the same spline.
fn width_knots(raw: &[f64], a: f64) -> Vec<f64> {
    let w = bin_widths(raw, a);
    w[..w.len() - 1]
        .iter()
        .scan(-a, |x, wk| {
            *x += wk;
            Some(*x)
        })
        .collect()
}

fn forward_mode<M: ScalarMap>(map: M) -> ForwardMode<M> {
    ForwardMode::new(map).expect("few parameters")
}

#[test]
fn forward_mode_rejects_bad_parameter_counts() {
    struct Wide;
    impl ScalarMap for Wide {
        fn params_per_site(&self) -> usize {
            MAX_FORWARD_MODE_PARAMS + 1
        }
        fn eval<F: Float>(&self, v: F, _theta: &[F]) -> F {
            v
        }
    }
    struct Fixed;
    impl ScalarMap for Fixed {
        fn params_per_site(&self) -> usize {
            0
        }
        fn eval<F: Float>(&self, v: F, _theta: &[F]) -> F {
            v
        }
    }
    assert!(ForwardMode::new(Wide).is_err());
    assert!(ForwardMode::new(Fixed).is_err());
    assert!(forward_mode(AffineMap).with_tolerance(0.0).is_err());
    assert!(forward_mode(AffineMap).with_tolerance(1e-10).is_ok());
}

#[test]
fn forward_mode_derivatives_by_hand() {
    // C = sinh(2 asinh v − 0.5) at v = 0.7: C' = 2 cosh(2 asinh v − 0.5) / √(1 + v²).
    let fm = forward_mode(SinhArcsinh);
    let (v, theta) = (0.7f64, [0.5, 2f64.ln()]);
    let u = 2.0 * v.asinh() - 0.5;
    let (value, slope) = fm.value_and_slope(v, &theta);
    assert!((value - u.sinh()).abs() < 1e-14);
    assert!((slope - 2.0 * u.cosh() / (1.0 + v * v).sqrt()).abs() < 1e-14);
    // C⁻¹ = sinh((asinh y + 0.5)/2), solved to the default tolerance 1e-13 (1 + |v|).
    let y = 3.0f64;
    let exact = ((y.asinh() + 0.5) / 2.0).sinh();
    assert!((fm.solve(y, &theta) - exact).abs() < 1e-13 * (1.0 + exact.abs()));
    // A parameter slice of the wrong length gives NaN, not a panic.
    assert!(fm.value_and_slope(v, &[0.5]).0.is_nan());
    assert!(fm.solve(y, &[0.0; 200]).is_nan());
}

#[test]
fn forward_mode_handles_decreasing_maps() {
    /// C(v; θ) = −e^θ v − v³: strictly decreasing, ld = log(e^θ + 3v²).
    struct Decreasing;
    impl ScalarMap for Decreasing {
        fn params_per_site(&self) -> usize {
            1
        }
        fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
            -(theta[0].exp() * v) - v * v * v
        }
    }
    let t = forward_mode(Decreasing);
    let v = [-3.0, -0.4, 0.0, 0.25, 2.0, 7.5];
    let theta = [0.3, -1.0, 2.0, 0.0, -0.5, 1.0];
    let (mut y, mut ld) = ([0.0; 6], [0.0; 6]);
    t.forward(&v, &theta, &mut y, &mut ld);
    for i in 0..6 {
        let exact = (theta[i].exp() + 3.0 * v[i] * v[i]).ln();
        assert!((ld[i] - exact).abs() < 1e-14, "ld {} vs {exact}", ld[i]);
    }
    let r = check_transform_invertible::<f64>(&t, &v, &theta, INVERSE_TOL_F64);
    assert!(r.is_ok(), "{}", r.unwrap_err());
    let r = check_transform_log_derivative(&t, &v, &theta, 1e-6, 1e-6);
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

/// Per-site f32/f64 tolerances of `check_transform_invertible` (see its documentation:
/// errors scaled by 1 + |v| + |y|/C').
const INVERSE_TOL_F64: f64 = 1e-10;
const INVERSE_TOL_F32: f64 = 1e-5;

fn rqs_default() -> Rqs {
    Rqs::default()
}

proptest! {
    #![proptest_config(config(96))]

    /// Built-in shift-scale transforms agree with their forward-mode oracles (forward and
    /// backward, rtol 1e-12, atol 1e-12).
    #[test]
    fn shift_scale_match_forward_mode((v, theta) in case(2, 6, 3.0), seed in any::<u64>()) {
        let n = v.len();
        let checks: [(&str, &dyn PointwiseTransform<f64>, &dyn PointwiseTransform<f64>); 3] = [
            ("additive", &Additive, &forward_mode(AdditiveMap)),
            ("affine", &Affine, &forward_mode(AffineMap)),
            ("z2-affine", &Z2Affine, &forward_mode(Z2AffineMap)),
        ];
        for (name, t, oracle) in checks {
            let k = t.params_per_site();
            let r = check_transform_matches_reference(t, oracle, &v, &theta[..n * k], seed, 1e-12, 1e-12);
            prop_assert!(r.is_ok(), "{name}: {}", r.unwrap_err());
        }
    }

    /// RQS forward and backward against the forward-mode oracle of the documented formula
    /// (docs/flows.md#rational-quadratic-spline) (rtol 1e-9, atol 1e-9: two different f64
    /// evaluation orders of the same formula).
    #[test]
    fn rqs_matches_forward_mode((v, theta) in arb_sites(23, 8, 6.0, 3.0), seed in any::<u64>()) {
        let oracle = forward_mode(RqsMap { bins: 8, bound: 5.0 });
        let r = check_transform_matches_reference(&rqs_default(), &oracle, &v, &theta, seed, 1e-9, 1e-9);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    /// RQS backward against central differences (h = 1e-6, rtol 1e-5, atol 1e-6), raw
    /// parameters in (−2, 2). With wider raw ranges, bins of width ~1e-3 and slopes ~1e3
    /// give log C' a curvature that no single finite-difference step resolves (truncation
    /// at h = 1e-6, rounding amplified by the slope at h = 1e-7); the exact comparison with
    /// forward mode above covers (−3, 3). A point within h of a knot would fail
    /// legitimately (probability ~1e-6 per site).
    #[test]
    fn rqs_backward_matches_finite_differences(
        (v, theta) in arb_sites(23, 6, 6.0, 2.0),
        seed in any::<u64>(),
    ) {
        for (&vi, p) in v.iter().zip(theta.chunks(23)) {
            let near = |x: f64| (vi - x).abs() < 1e-5;
            prop_assume!(!near(5.0) && !near(-5.0) && !width_knots(&p[..8], 5.0).into_iter().any(near));
        }
        let cfg = GradCheck { step: 1e-6, rtol: 1e-5, atol: 1e-6, seed };
        let r = check_transform_gradients(&rqs_default(), &v, &theta, &cfg);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    /// RQS: C⁻¹(C(v)) = v and ld consistency in f64 and f32, ld against finite
    /// differences (h = 1e-6, |Δ log C'| ≤ 1e-6), and only finite numbers, for K = 8 on
    /// [−5, 5] and for K = 3 on [−2, 2].
    #[test]
    fn rqs_invertible_and_log_derivative(
        (v, theta) in arb_sites(23, 8, 6.0, 3.0),
        (v3, theta3) in arb_sites(8, 8, 3.0, 3.0),
    ) {
        let small = Rqs::new(3, 2.0).unwrap();
        let cases: [(&Rqs, &[f64], &[f64]); 2] = [(&rqs_default(), &v, &theta), (&small, &v3, &theta3)];
        for (t, v, theta) in cases {
            let r = check_transform_invertible::<f64>(t, v, theta, INVERSE_TOL_F64);
            prop_assert!(r.is_ok(), "f64: {}", r.unwrap_err());
            let r = check_transform_invertible::<f32>(t, &to_f32(v), &to_f32(theta), INVERSE_TOL_F32);
            prop_assert!(r.is_ok(), "f32: {}", r.unwrap_err());
            let r = check_transform_log_derivative(t, v, theta, 1e-6, 1e-6);
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
            prop_assert!(check_transform_finite::<f64>(t, v, theta).is_ok());
        }
    }

    /// Extreme raw parameters (|θ| up to 40) and |v| up to 50: no NaN or infinity in any
    /// output of the spline, in f64 and f32.
    #[test]
    fn rqs_finite_for_extreme_parameters((v, theta) in arb_sites(23, 8, 6.0, 40.0)) {
        let t = rqs_default();
        let r = check_transform_finite::<f64>(&t, &v, &theta);
        prop_assert!(r.is_ok(), "f64: {}", r.unwrap_err());
        let r = check_transform_finite::<f32>(&t, &to_f32(&v), &to_f32(&theta));
        prop_assert!(r.is_ok(), "f32: {}", r.unwrap_err());
    }

    /// The spline is C¹ at ±a and at every interior knot. Values are probed at distances δ
    /// and 2δ on each side and extrapolated linearly to the point, which removes the O(δ)
    /// slope term. Next to a bin of width w with slope s, log C' varies on the scale
    /// w d/(2s) in v, so δ = 1e-8 · (narrower adjacent width) keeps the remaining
    /// O(δ² ld'') below 1e-6 even for the narrowest bins (w ≈ 1e-3, s ≈ 1e4). The one-sided
    /// limits of C must agree to 1e-9 and those of log C' to 1e-5 (a wrong knot
    /// derivative shows as a jump of order one). At ±a the inner limits must be C = ±a,
    /// log C' = 0, and just outside the map is exactly the identity.
    #[test]
    fn rqs_continuous_at_bounds_and_knots(theta in arb_theta(23, 1, 3.0)) {
        let t = rqs_default();
        let a = 5.0;
        let probe = |x: f64| {
            let (mut y, mut ld) = ([0.0], [0.0]);
            t.forward(&[x], &theta, &mut y, &mut ld);
            (y[0], ld[0])
        };
        // One-sided limits at x from the side `side` = ±1.
        let limit = |x: f64, side: f64, delta: f64| {
            let (y1, l1) = probe(x + side * delta);
            let (y2, l2) = probe(x + side * 2.0 * delta);
            (2.0 * y1 - y2, 2.0 * l1 - l2)
        };
        let w = bin_widths(&theta[..8], 5.0);
        for (edge, width) in [(a, w[7]), (-a, w[0])] {
            let delta = 1e-8 * width;
            let (y_in, ld_in) = limit(edge, -edge.signum(), delta);
            prop_assert!((y_in - edge).abs() < 1e-9, "C → {y_in} at {edge}");
            prop_assert!(ld_in.abs() < 1e-5, "log C' → {ld_in} at {edge}");
            let outside = edge + edge.signum() * delta;
            prop_assert_eq!(probe(outside), (outside, 0.0));
        }
        let mut knot = -a;
        for k in 0..7 {
            knot += w[k];
            let delta = 1e-8 * w[k].min(w[k + 1]);
            let (y_lo, ld_lo) = limit(knot, -1.0, delta);
            let (y_hi, ld_hi) = limit(knot, 1.0, delta);
            prop_assert!((y_hi - y_lo).abs() < 1e-9, "C jumps at knot {knot}: {y_lo} → {y_hi}");
            prop_assert!((ld_hi - ld_lo).abs() < 1e-5, "log C' jumps at knot {knot}: {ld_lo} → {ld_hi}");
        }
    }

    /// The analytic RQS inverse agrees with the forward-mode Newton inverse of the oracle
    /// to 1e-9 (1 + |y|/C') and with it the log-derivative to 1e-8.
    #[test]
    fn rqs_inverse_matches_newton((v, theta) in arb_sites(23, 8, 6.0, 3.0)) {
        let t = rqs_default();
        let oracle = forward_mode(RqsMap { bins: 8, bound: 5.0 });
        let n = v.len();
        let (mut y, mut ld) = (vec![0.0; n], vec![0.0; n]);
        t.forward(&v, &theta, &mut y, &mut ld);
        let (mut a, mut la, mut b, mut lb) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        t.inverse(&y, &theta, &mut a, &mut la);
        oracle.inverse(&y, &theta, &mut b, &mut lb);
        for i in 0..n {
            let tol = 1e-9 * (1.0 + y[i].abs() * (-ld[i]).exp());
            prop_assert!((a[i] - b[i]).abs() <= tol, "site {i}: {} vs {}", a[i], b[i]);
            prop_assert!((la[i] - lb[i]).abs() <= 1e-8 * (1.0 + la[i].abs()), "site {i}: {} vs {}", la[i], lb[i]);
        }
    }

    /// A user map through ForwardMode (sinh–arcsinh, |θ| ≤ 1): invertible in f64 and f32,
    /// ld against finite differences (h = 1e-6, 1e-6), backward against finite
    /// differences (h = 1e-5, rtol 1e-5, atol 1e-6), finite everywhere.
    #[test]
    fn forward_mode_user_map_laws(
        (v, theta) in arb_sites(2, 6, 6.0, 1.0),
        seed in any::<u64>(),
    ) {
        let t = forward_mode(SinhArcsinh);
        let r = check_transform_invertible::<f64>(&t, &v, &theta, INVERSE_TOL_F64);
        prop_assert!(r.is_ok(), "f64: {}", r.unwrap_err());
        let r = check_transform_invertible::<f32>(&t, &to_f32(&v), &to_f32(&theta), INVERSE_TOL_F32);
        prop_assert!(r.is_ok(), "f32: {}", r.unwrap_err());
        let r = check_transform_log_derivative(&t, &v, &theta, 1e-6, 1e-6);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        let cfg = GradCheck { step: 1e-5, rtol: 1e-5, atol: 1e-6, seed };
        let r = check_transform_gradients(&t, &v, &theta, &cfg);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        prop_assert!(check_transform_finite::<f64>(&t, &v, &theta).is_ok());
    }

    /// Shift-scale transforms: ld against finite differences and the shared invertibility
    /// check in f64 and f32.
    #[test]
    fn shift_scale_log_derivative_and_inverse((v, theta) in case(2, 8, 3.0)) {
        for (name, t) in shift_scale_transforms() {
            let k = t.params_per_site();
            let theta = &theta[..v.len() * k];
            let r = check_transform_log_derivative(t.as_ref(), &v, theta, 1e-6, 1e-6);
            prop_assert!(r.is_ok(), "{name}: {}", r.unwrap_err());
            let r = check_transform_invertible::<f64>(t.as_ref(), &v, theta, INVERSE_TOL_F64);
            prop_assert!(r.is_ok(), "{name}: {}", r.unwrap_err());
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// The f32 code paths agree with f64 on the same (f32-representable) inputs: y to 1e-5
    /// (1 + |·|), ld to 1e-5 (1 + |·|) for the shift-scale transforms and 1e-4 (1 + |·|) for
    /// the spline, and the backward pass to 1e-4 (1 + |·|). The spline's ld depends on the
    /// position ξ within a bin, whose knots are cumulative sums rounded in f32: their
    /// absolute error (≈ 2a·ε₃₂) divided by a narrow bin's width amplifies it, as it does
    /// for the backward pass (a case with ld off by 2.1e-5 relative is in the regressions).
    #[test]
    fn f32_paths_agree_with_f64(
        (v, theta) in arb_sites(23, 6, 6.0, 2.0),
        seed in any::<u64>(),
    ) {
        let rqs = rqs_default();
        let transforms: [(&str, &dyn PointwiseTransform<f32>, &dyn PointwiseTransform<f64>); 4] = [
            ("additive", &Additive, &Additive),
            ("affine", &Affine, &Affine),
            ("z2-affine", &Z2Affine, &Z2Affine),
            ("rqs", &rqs, &rqs),
        ];
        let n = v.len();
        for (name, t32, t64) in transforms {
            let k = t64.params_per_site();
            let v32 = to_f32(&v);
            let th32 = to_f32(&theta[..n * k]);
            let v64: Vec<f64> = v32.iter().map(|&x| x as f64).collect();
            let th64: Vec<f64> = th32.iter().map(|&x| x as f64).collect();
            let (mut y32, mut ld32) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (mut y64, mut ld64) = (vec![0.0; n], vec![0.0; n]);
            t32.forward(&v32, &th32, &mut y32, &mut ld32);
            t64.forward(&v64, &th64, &mut y64, &mut ld64);
            let (gy, gld) = latflow::testing::random_loss_weights(n, seed);
            let (gy32, gld32) = (to_f32(&gy), to_f32(&gld));
            let gy64: Vec<f64> = gy32.iter().map(|&x| x as f64).collect();
            let gld64: Vec<f64> = gld32.iter().map(|&x| x as f64).collect();
            let (mut gv32, mut gt32) = (vec![0.0f32; n], vec![0.0f32; n * k]);
            let (mut gv64, mut gt64) = (vec![0.0; n], vec![0.0; n * k]);
            t32.backward(&v32, &th32, &gy32, &gld32, &mut gv32, &mut gt32);
            t64.backward(&v64, &th64, &gy64, &gld64, &mut gv64, &mut gt64);
            let close = |a: f32, b: f64, tol: f64| (a as f64 - b).abs() <= tol * (1.0 + b.abs());
            for i in 0..n {
                prop_assert!(close(y32[i], y64[i], 1e-5), "{name} y[{i}]: {} vs {}", y32[i], y64[i]);
                let ld_tol = if name == "rqs" { 1e-4 } else { 1e-5 };
                prop_assert!(close(ld32[i], ld64[i], ld_tol), "{name} ld[{i}]: {} vs {}", ld32[i], ld64[i]);
                prop_assert!(close(gv32[i], gv64[i], 1e-4), "{name} gv[{i}]: {} vs {}", gv32[i], gv64[i]);
            }
            for j in 0..n * k {
                prop_assert!(close(gt32[j], gt64[j], 1e-4), "{name} gθ[{j}]: {} vs {}", gt32[j], gt64[j]);
            }
        }
    }
}

#[test]
fn single_bin_spline_is_the_identity() {
    // K = 1: one bin of width and height 2a with end derivatives 1, so s = 1 and C(v) = v.
    let t = Rqs::new(1, 3.0).unwrap();
    let v: Vec<f64> = (0..61).map(|i| -6.0 + 0.2 * i as f64).collect();
    let theta: Vec<f64> = (0..2 * v.len()).map(|j| 0.37 * j as f64 - 4.0).collect();
    let (mut y, mut ld) = (vec![0.0; v.len()], vec![0.0; v.len()]);
    t.forward(&v, &theta, &mut y, &mut ld);
    for i in 0..v.len() {
        assert!((y[i] - v[i]).abs() < 1e-14, "{} vs {}", y[i], v[i]);
        assert!(ld[i].abs() < 1e-14, "ld {}", ld[i]);
    }
}

#[test]
fn invertibility_check_detects_a_wrong_inverse() {
    /// Affine whose inverse forgets the shift.
    struct BrokenInverse;
    impl PointwiseTransform<f64> for BrokenInverse {
        fn params_per_site(&self) -> usize {
            2
        }
        fn forward(&self, v: &[f64], theta: &[f64], y: &mut [f64], ld: &mut [f64]) {
            Affine.forward(v, theta, y, ld)
        }
        fn inverse(&self, y: &[f64], theta: &[f64], v: &mut [f64], ld: &mut [f64]) {
            let no_shift: Vec<f64> = theta.chunks(2).flat_map(|p| [p[0], 0.0]).collect();
            Affine.inverse(y, &no_shift, v, ld)
        }
        fn backward(
            &self,
            v: &[f64],
            th: &[f64],
            gy: &[f64],
            gld: &[f64],
            gv: &mut [f64],
            gt: &mut [f64],
        ) {
            Affine.backward(v, th, gy, gld, gv, gt)
        }
    }
    let (v, theta) = ([0.5, -2.0], [0.3, 0.1, -0.2, 0.7]);
    assert!(check_transform_invertible::<f64>(&Affine, &v, &theta, INVERSE_TOL_F64).is_ok());
    assert!(
        check_transform_invertible::<f64>(&BrokenInverse, &v, &theta, INVERSE_TOL_F64).is_err()
    );
    // A log-derivative off by a constant fails the finite-difference check.
    let oracle = forward_mode(AffineMap);
    assert!(check_transform_log_derivative(&oracle, &v, &theta, 1e-6, 1e-6).is_ok());
    let scaled: Vec<f64> = theta.iter().map(|x| 1.01 * x).collect();
    assert!(
        check_transform_matches_reference(&Affine, &oracle, &v, &scaled, 0, 1e-12, 1e-12).is_ok()
    );
    assert!(
        check_transform_matches_reference(&Z2Affine, &oracle, &v, &theta, 0, 1e-12, 1e-12).is_err()
    );
}

/// The f32 spline kernel (f32 exponentials and segment formulas, eight sites per vector)
/// against the f64 kernel on the same f32 inputs, at K = 8 on [−5, 5] with raw parameters in (−3, 3).
/// Inputs: uniform in (−6, 6), every knot X_k and its f32 neighbours, points in the two
/// outermost bins, ±a and their neighbours, and |v| up to 50; 4000 sites in all, so every
/// group also has a partial remainder.
///
/// Error model: f32 knots carry an absolute error ε_X ≈ a·2⁻²³ per summand, which moves
/// the output by C'(v) ε_X, plus the relative f32 rounding of the segment formulas. The
/// stated tolerances are y: 4e-6 (1 + |y| + C'), ld: 4e-5 (1 + |ld| + 1/w_ℓ), where the
/// 1/w_ℓ term bounds the change of log C' when the knot errors shift α by ε_X/w_ℓ, plus
/// ε_X |∂ld/∂v| (for the inverse ε_X |∂ld/∂v| (1 + 1/C'), as y = C(v)) where the spline
/// bends sharply; inverse v: 4e-6 (1 + |v| + 1/C') (ld, inverse and gradients away from
/// knots, see below); gradients: 1e-3 (1 + |g|) relative to the largest
/// gradient of the site (the same condition numbers, one order of differentiation up),
/// except within rounding distance of an interior knot, where ∂ log C'/∂v jumps and the two
/// kernels may take the derivative from different sides.
#[test]
fn f32_kernel_agrees_with_f64_kernel_at_edges_and_outside() {
    use rand::RngExt;
    // Knots from f32 exponentials (relative error 2.5e-7) summed over up to 2a = 10: 2.5e-6,
    // with a factor 4 of margin.
    const KNOT_ERROR: f64 = 1e-5;
    let t = rqs_default();
    let (bins, a, k) = (8usize, 5.0f64, 23usize);
    let mut rng = latflow::rng::rng_from_seed(2024);
    let mut v = Vec::new();
    let mut theta = Vec::new();
    while v.len() < 4000 {
        let raw: Vec<f32> = (0..k).map(|_| rng.random_range(-3.0f32..3.0)).collect();
        let raw64: Vec<f64> = raw.iter().map(|&r| r as f64).collect();
        let knots = width_knots(&raw64[..bins], a);
        let mut xs: Vec<f32> = vec![rng.random_range(-6.0f32..6.0)];
        for &x in &knots {
            let x = x as f32;
            xs.extend([x, x.next_down(), x.next_up()]);
        }
        let (first, last) = (knots[0], knots[bins - 2]);
        xs.push(rng.random_range(-a..first) as f32);
        xs.push(rng.random_range(last..a) as f32);
        for edge in [-a as f32, a as f32] {
            xs.extend([edge, edge.next_down(), edge.next_up()]);
        }
        xs.push(rng.random_range(-50.0f32..50.0));
        for x in xs {
            v.push(x);
            theta.extend_from_slice(&raw);
        }
    }
    let n = v.len() - 3; // not a multiple of the group size
    let (v, theta) = (&v[..n], &theta[..n * k]);
    let wide = |x: &[f32]| x.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let (v64, theta64) = (wide(v), wide(theta));

    let (mut y32, mut ld32) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut y64, mut ld64) = (vec![0.0; n], vec![0.0; n]);
    t.forward(v, theta, &mut y32, &mut ld32);
    t.forward(&v64, &theta64, &mut y64, &mut ld64);

    let (mut back32, mut lb32) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut back64, mut lb64) = (vec![0.0; n], vec![0.0; n]);
    t.inverse(&y32, theta, &mut back32, &mut lb32);
    t.inverse(&wide(&y32), &theta64, &mut back64, &mut lb64);

    let (gy, gld) = latflow::testing::random_loss_weights(n, 5);
    let (gy32, gld32) = (to_f32(&gy), to_f32(&gld));
    let (mut gv32, mut gt32) = (vec![0.0f32; n], vec![0.0f32; n * k]);
    let (mut gv64, mut gt64) = (vec![0.0; n], vec![0.0; n * k]);
    t.backward(v, theta, &gy32, &gld32, &mut gv32, &mut gt32);
    t.backward(
        &v64,
        &theta64,
        &wide(&gy32),
        &wide(&gld32),
        &mut gv64,
        &mut gt64,
    );

    // ∂ld/∂v from the f64 kernel (gy = 0, gld = 1): how far a knot error moves log C'.
    let mut dld = vec![0.0; n];
    let mut unused = vec![0.0; n * k];
    t.backward(
        &v64,
        &theta64,
        &vec![0.0; n],
        &vec![1.0; n],
        &mut dld,
        &mut unused,
    );
    let mut worst = [0.0f64; 4];
    for i in 0..n {
        let slope = ld64[i].exp();
        let w = bin_widths(&theta64[i * k..i * k + bins], a);
        let bin = width_knots(&theta64[i * k..i * k + bins], a)
            .iter()
            .filter(|&&x| x <= v64[i])
            .count();
        // Within rounding distance of an interior knot the two kernels may evaluate from
        // different sides, where the curvature of log C' differs (by orders of magnitude
        // next to a narrow bin), and the inverse of an f32 y may land on either side: only y
        // is compared there.
        let near_knot = width_knots(&theta64[i * k..i * k + bins], a)
            .iter()
            .any(|&x| (x - v64[i]).abs() <= 1e-5);
        let away = if near_knot { 0.0 } else { 1.0 };
        let scaled = [
            (y32[i] as f64 - y64[i]).abs() / (4e-6 * (1.0 + y64[i].abs() + slope)),
            away * (ld32[i] as f64 - ld64[i]).abs()
                / (4e-5 * (1.0 + ld64[i].abs() + 1.0 / w[bin]) + KNOT_ERROR * dld[i].abs()),
            away * (back32[i] as f64 - back64[i]).abs()
                / (4e-6 * (1.0 + back64[i].abs() + 1.0 / slope)),
            away * (lb32[i] as f64 - lb64[i]).abs()
                / (4e-5 * (1.0 + lb64[i].abs() + 1.0 / w[bin])
                    + KNOT_ERROR * dld[i].abs() * (1.0 + 1.0 / slope)),
        ];
        for (w, s) in worst.iter_mut().zip(scaled) {
            *w = w.max(s);
        }
        assert!(
            scaled[0] <= 1.0,
            "y[{i}] at v = {}: {} vs {}",
            v[i],
            y32[i],
            y64[i]
        );
        assert!(
            scaled[1] <= 1.0,
            "ld[{i}] at v = {}: {} vs {}",
            v[i],
            ld32[i],
            ld64[i]
        );
        assert!(
            scaled[2] <= 1.0,
            "inverse[{i}] at v = {}: {} vs {}",
            v[i],
            back32[i],
            back64[i]
        );
        assert!(
            scaled[3] <= 1.0,
            "inverse ld[{i}] at v = {}: {} vs {}",
            v[i],
            lb32[i],
            lb64[i]
        );
        if near_knot {
            continue;
        }
        let gmax = gt64[i * k..(i + 1) * k]
            .iter()
            .fold(gv64[i].abs(), |m, g| m.max(g.abs()));
        let gtol = 1e-3 * (1.0 + gmax);
        assert!(
            (gv32[i] as f64 - gv64[i]).abs() <= gtol,
            "gv[{i}] at v = {}: {} vs {}",
            v[i],
            gv32[i],
            gv64[i]
        );
        for j in i * k..(i + 1) * k {
            assert!(
                (gt32[j] as f64 - gt64[j]).abs() <= gtol,
                "gθ[{j}] at v = {}: {} vs {}",
                v[i],
                gt32[j],
                gt64[j]
            );
        }
    }
    // Sites outside (−a, a) are the exact identity with zero log-derivative.
    for i in (0..n).filter(|&i| v[i].abs() >= 5.0) {
        assert_eq!((y32[i], ld32[i]), (v[i], 0.0));
    }
    eprintln!("worst scaled errors (y, ld, inverse v, inverse ld): {worst:?}");
}

proptest! {
    #![proptest_config(config(64))]

    /// The training path, which saves the spline of each site in the forward pass and
    /// reuses it in the backward pass, gives bit for bit what the plain passes give: f32
    /// (the lane kernel, 1 to 40 sites, so partial groups of eight too) and f64, several
    /// bin counts, sites inside and outside (−a, a).
    #[test]
    fn saved_state_backward_matches_the_plain_backward(
        bins in prop_oneof![Just(1usize), Just(3), Just(8), Just(13)],
        (v, theta) in arb_sites(3 * 13 - 1, 40, 6.0, 3.0),
        seed in any::<u64>(),
    ) {
        let rqs = Rqs::new(bins, 5.0).unwrap();
        let n = v.len();
        let k = 3 * bins - 1;
        let theta = &theta[..n * k];
        let (gy, gld) = latflow::testing::random_loss_weights(n, seed);
        let r = check_saved_backward::<f32>(&rqs, &to_f32(&v), &to_f32(theta), &to_f32(&gy), &to_f32(&gld));
        prop_assert!(r.is_ok(), "f32, K = {bins}: {}", r.unwrap_err());
        let r = check_saved_backward::<f64>(&rqs, &v, theta, &gy, &gld);
        prop_assert!(r.is_ok(), "f64, K = {bins}: {}", r.unwrap_err());
        prop_assert!(PointwiseTransform::<f32>::saved_len(&rqs, n) >= n * (2 * bins + 11));
    }
}

/// A spline whose saved-state backward pass reads a slightly corrupted state.
struct CorruptedState(Rqs);

impl PointwiseTransform<f32> for CorruptedState {
    fn params_per_site(&self) -> usize {
        PointwiseTransform::<f32>::params_per_site(&self.0)
    }
    fn forward(&self, v: &[f32], theta: &[f32], y: &mut [f32], ld: &mut [f32]) {
        self.0.forward(v, theta, y, ld)
    }
    fn inverse(&self, y: &[f32], theta: &[f32], v: &mut [f32], ld: &mut [f32]) {
        self.0.inverse(y, theta, v, ld)
    }
    fn backward(
        &self,
        v: &[f32],
        theta: &[f32],
        gy: &[f32],
        gld: &[f32],
        gv: &mut [f32],
        gt: &mut [f32],
    ) {
        self.0.backward(v, theta, gy, gld, gv, gt)
    }
    fn saved_len(&self, sites: usize) -> usize {
        PointwiseTransform::<f32>::saved_len(&self.0, sites)
    }
    fn forward_saving(
        &self,
        v: &[f32],
        theta: &[f32],
        y: &mut [f32],
        ld: &mut [f32],
        saved: &mut [f32],
    ) {
        self.0.forward_saving(v, theta, y, ld, saved)
    }
    fn backward_saved(
        &self,
        v: &[f32],
        theta: &[f32],
        saved: &[f32],
        gy: &[f32],
        gld: &[f32],
        gv: &mut [f32],
        gt: &mut [f32],
    ) {
        let nudged: Vec<f32> = saved.iter().map(|&x| x * (1.0 + 1e-3)).collect();
        self.0.backward_saved(v, theta, &nudged, gy, gld, gv, gt)
    }
}

#[test]
fn saved_state_check_detects_a_corrupted_state() {
    let n = 11;
    let v: Vec<f32> = (0..n).map(|i| -4.0 + 0.8 * i as f32).collect();
    let theta: Vec<f32> = (0..n * 23)
        .map(|j| ((j * 37) % 17) as f32 / 8.0 - 1.0)
        .collect();
    let (gy, gld) = latflow::testing::random_loss_weights(n, 3);
    let (gy, gld) = (to_f32(&gy), to_f32(&gld));
    let rqs = Rqs::default();
    assert!(check_saved_backward::<f32>(&rqs, &v, &theta, &gy, &gld).is_ok());
    let err = check_saved_backward::<f32>(&CorruptedState(rqs), &v, &theta, &gy, &gld);
    assert!(err.is_err(), "a corrupted saved state went unnoticed");
}
