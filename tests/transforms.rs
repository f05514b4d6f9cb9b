//! Laws of the pointwise transforms: invertibility (f32 and f64), log-derivatives,
//! backward passes against finite differences, identities at zero parameters and the Z2
//! symmetry of `Z2Affine`.

use latflow::flow::PointwiseTransform;
use latflow::flow::transform::{Additive, Affine, Z2Affine};
use latflow::testing::{GradCheck, check_transform_gradients};
use proptest::prelude::*;

/// Field values: mostly order one, some far out (up to |v| = 50).
fn field(n: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(prop_oneof![3 => -6.0..6.0f64, 1 => -50.0..50.0f64], n)
}

fn params(n: usize, scale: f64) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-scale..scale, n)
}

/// (v, θ) for `sites` sites of a transform with `k` parameters per site.
fn case(k: usize, sites: usize, scale: f64) -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (field(sites), params(sites * k, scale))
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
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Backward against central differences of L = Σ a y + b ld in f64 (h = 1e-5,
    /// rtol 1e-6, atol 1e-6 · max(1, |v|)); |s| ≤ 3 keeps e^{±s} of order 20.
    #[test]
    fn shift_scale_backward_matches_finite_differences(
        (v, theta) in case(2, 6, 3.0),
        seed in any::<u64>(),
    ) {
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
