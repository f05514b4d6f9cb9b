//! The public test helpers in `latflow::testing` checked on cases with known answers, and
//! shown to fail on deliberately wrong inputs.

use latflow::flow::transform::{Affine, Rqs, Z2Affine};
use latflow::flow::{Flow, LatentPrior, PointwiseTransform, Prior};
use latflow::rng::rng_from_seed;
use latflow::testing::strategies::proptest_config;
use latflow::testing::strategies::{FAR_FIELD, arb_field, arb_latent_batch, arb_sites};
use latflow::testing::{assert_gradients_close, finite_difference_gradient, random_loss_weights};
use latflow::testing::{
    check_flow_invertible, check_flow_log_det_bruteforce, check_flow_z2_equivariant, log_abs_det,
};
use latflow::{Lattice, Result};
use ndarray::{Array1, Array2, ArrayView2};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rand::RngExt;

#[test]
fn finite_difference_gradient_of_a_known_function() {
    // f = x0² x1 + sin x2, ∇f = (2 x0 x1, x0², cos x2).
    let f = |x: &[f64]| x[0] * x[0] * x[1] + x[2].sin();
    let x = [1.3, -0.7, 0.4];
    let exact = [2.0 * 1.3 * -0.7, 1.3 * 1.3, 0.4f64.cos()];
    let numeric = finite_difference_gradient(f, &x, 1e-5);
    // Truncation error h²/6 |f'''| ≤ 1e-10 here; rounding ε/h ≈ 1e-11.
    for (n, e) in numeric.iter().zip(exact) {
        assert!((n - e).abs() < 1e-9, "{n} vs {e}");
    }
    assert!(assert_gradients_close(&exact, &numeric, 0.0, 1e-9).is_ok());
}

#[test]
fn assert_gradients_close_names_the_worst_component() {
    let analytic = [1.0, 2.0, 3.0, 4.0];
    let numeric = [1.0, 2.001, 3.1, 4.0];
    let err = assert_gradients_close(&analytic, &numeric, 1e-6, 1e-6).unwrap_err();
    assert!(err.starts_with("component 2:"), "{err}");
    assert!(assert_gradients_close(&analytic, &numeric, 0.05, 0.0).is_ok());
    assert!(assert_gradients_close(&analytic, &numeric[..3], 1.0, 1.0).is_err());
    assert!(assert_gradients_close(&[f64::NAN], &[f64::NAN], 1.0, 1.0).is_err());
}

#[test]
fn random_loss_weights_are_seeded_and_in_range() {
    let (a, b) = random_loss_weights(100, 5);
    assert_eq!(random_loss_weights(100, 5), (a.clone(), b.clone()));
    assert_ne!(random_loss_weights(100, 6).0, a);
    assert!(a.iter().chain(&b).all(|x| (-1.0..1.0).contains(x)));
}

// ---------------------------------------------------------------------------------------
// Flow-level checks on a small coupling flow built from the pointwise transforms.

/// `cases` cases per property from a fixed seed; failing cases go to
/// `proptest-regressions/testing_helpers.txt`.
fn config(cases: u32) -> ProptestConfig {
    proptest_config(cases, "proptest-regressions/testing_helpers.txt")
}

/// One coupling layer: θ = tanh(W v_P + b) · scale for the active sites.
struct Layer {
    active: Vec<usize>,
    passive: Vec<usize>,
    weights: Array2<f32>,
    bias: Option<Array1<f32>>,
    scale: f32,
    transform: Box<dyn PointwiseTransform<f32>>,
}

impl Layer {
    fn new(
        lattice: &Lattice,
        parity: u8,
        transform: Box<dyn PointwiseTransform<f32>>,
        with_bias: bool,
        scale: f32,
        seed: u64,
    ) -> Self {
        let active = lattice.sites_of_parity(parity);
        let passive = lattice.sites_of_parity(1 - parity);
        let k = transform.params_per_site();
        let mut rng = rng_from_seed(seed);
        let spread = 1.0 / (passive.len() as f32).sqrt();
        let weights = Array2::from_shape_fn((active.len() * k, passive.len()), |_| {
            rng.random_range(-spread..spread)
        });
        let bias = with_bias
            .then(|| Array1::from_shape_fn(active.len() * k, |_| rng.random_range(-0.5..0.5f32)));
        Layer {
            active,
            passive,
            weights,
            bias,
            scale,
            transform,
        }
    }

    fn theta(&self, row: &[f32]) -> Vec<f32> {
        let vp = Array1::from_iter(self.passive.iter().map(|&s| row[s]));
        let mut pre = self.weights.dot(&vp);
        if let Some(b) = &self.bias {
            pre += b;
        }
        pre.iter().map(|x| x.tanh() * self.scale).collect()
    }

    /// Applies the layer to one row in place, returning its log-det.
    fn apply(&self, row: &mut [f32], inverse: bool) -> f64 {
        let theta = self.theta(row);
        let va: Vec<f32> = self.active.iter().map(|&s| row[s]).collect();
        let (mut out, mut ld) = (vec![0.0; va.len()], vec![0.0; va.len()]);
        if inverse {
            self.transform.inverse(&va, &theta, &mut out, &mut ld);
        } else {
            self.transform.forward(&va, &theta, &mut out, &mut ld);
        }
        for (&s, &o) in self.active.iter().zip(&out) {
            row[s] = o;
        }
        ld.iter().map(|&l| l as f64).sum()
    }
}

static STANDARD_NORMAL: Prior = Prior::StandardNormal;

struct CouplingFlow {
    lattice: Lattice,
    layers: Vec<Layer>,
}

impl CouplingFlow {
    fn run(&self, x: ArrayView2<f32>, inverse: bool) -> (Array2<f32>, Array1<f64>) {
        let mut out = x.to_owned();
        let mut ld = Array1::zeros(x.nrows());
        for (mut row, l) in out.rows_mut().into_iter().zip(ld.iter_mut()) {
            let row = row.as_slice_mut().expect("standard layout");
            if inverse {
                *l = self
                    .layers
                    .iter()
                    .rev()
                    .map(|layer| layer.apply(row, true))
                    .sum();
            } else {
                *l = self
                    .layers
                    .iter()
                    .map(|layer| layer.apply(row, false))
                    .sum();
            }
        }
        (out, ld)
    }
}

impl Flow for CouplingFlow {
    fn lattice(&self) -> &Lattice {
        &self.lattice
    }
    fn prior(&self) -> &dyn LatentPrior {
        &STANDARD_NORMAL
    }
    fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        Ok(self.run(z, false))
    }
    fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        Ok(self.run(phi, true))
    }
}

/// Output scale of the Z2-affine nets (|s| ≤ 0.3 per site and layer).
const AFFINE_SCALE: f32 = 0.3;
/// Output scale of the spline nets (raw parameters in (−1, 1): bins between about 0.3 and 3
/// wide, so that the Jacobian stays moderately conditioned and f32 tolerances of 1e-4
/// (round trip) and 1e-2 (brute-force log-det with h = 5e-3) apply).
const SPLINE_SCALE: f32 = 1.0;

/// Two Z2-affine blocks on a 4 × 4 lattice (bias-free tanh nets: Z2-equivariant unless
/// `with_bias`), optionally followed by one RQS block (with biases: not equivariant).
fn seed_like_flow(with_spline: bool, with_bias: bool) -> CouplingFlow {
    let lattice = Lattice::new(&[4, 4]).unwrap();
    let mut layers = Vec::new();
    for i in 0..4u64 {
        let parity = (i % 2) as u8;
        let z2 = Box::new(Z2Affine);
        layers.push(Layer::new(&lattice, parity, z2, with_bias, AFFINE_SCALE, i));
    }
    if with_spline {
        let rqs = Rqs::new(8, 5.0).unwrap();
        for i in 0..2u64 {
            let parity = (i % 2) as u8;
            let spline = Box::new(rqs);
            layers.push(Layer::new(
                &lattice,
                parity,
                spline,
                true,
                SPLINE_SCALE,
                10 + i,
            ));
        }
    }
    CouplingFlow { lattice, layers }
}

/// A flow that adds `offset` to its forward log-det (and subtracts it in the inverse).
struct OffsetLogDet(CouplingFlow, f64);

impl Flow for OffsetLogDet {
    fn lattice(&self) -> &Lattice {
        self.0.lattice()
    }
    fn prior(&self) -> &dyn LatentPrior {
        self.0.prior()
    }
    fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        let (phi, ld) = self.0.forward(z)?;
        Ok((phi, ld + self.1))
    }
    fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        let (z, ld) = self.0.inverse(phi)?;
        Ok((z, ld - self.1))
    }
}

/// A flow whose inverse returns the forward log-det instead of its negative.
struct InverseLogDetSign(CouplingFlow);

impl Flow for InverseLogDetSign {
    fn lattice(&self) -> &Lattice {
        self.0.lattice()
    }
    fn prior(&self) -> &dyn LatentPrior {
        self.0.prior()
    }
    fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        self.0.forward(z)
    }
    fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        let (z, ld) = self.0.inverse(phi)?;
        Ok((z, -ld))
    }
}

fn latent(rows: usize, seed: u64) -> Array2<f32> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_fn((rows, 16), |_| rng.random_range(-2.5..2.5f32))
}

#[test]
fn log_abs_det_of_known_matrices() {
    // det diag(2, −3, 0.5) = −3.
    let mut d = vec![2.0, 0.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0, 0.5];
    assert!((log_abs_det(&mut d, 3) - 3f64.ln()).abs() < 1e-15);
    // A zero leading entry needs a row swap: det [[0, 2, 1], [1, 1, 0], [3, 0, 1]] = −5.
    let mut m = vec![0.0, 2.0, 1.0, 1.0, 1.0, 0.0, 3.0, 0.0, 1.0];
    assert!((log_abs_det(&mut m, 3) - 5f64.ln()).abs() < 1e-14);
    let mut singular = vec![1.0, 2.0, 2.0, 4.0];
    assert_eq!(log_abs_det(&mut singular, 2), f64::NEG_INFINITY);
}

#[test]
fn flow_checks_pass_on_a_correct_flow() {
    let flow = seed_like_flow(true, true);
    let z = latent(8, 1);
    let r = check_flow_invertible(&flow, z.view(), 1e-4);
    assert!(r.is_ok(), "{}", r.unwrap_err());
    for row in z.rows() {
        // h = 5e-3 in f32, tol 1e-2 on a 16-site log-det (see the helper's documentation).
        let r = check_flow_log_det_bruteforce(&flow, row.as_slice().unwrap(), 5e-3, 1e-3);
        assert!(r.is_ok(), "{}", r.unwrap_err());
    }
    let (_, ld) = flow.forward(z.view()).unwrap();
    assert!(
        ld.iter().any(|l| l.abs() > 0.5),
        "the test flow is too close to the identity: {ld}"
    );
}

#[test]
fn flow_checks_detect_wrong_log_dets() {
    let z = latent(4, 2);
    let row = z.row(0).to_vec();
    // An offset of 0.05 in the log-det, beyond the relative tolerance 1e-3 · (1 + |ld|), keeps
    // the flow invertible but fails the brute-force Jacobian.
    let shifted = OffsetLogDet(seed_like_flow(true, true), 0.05);
    assert!(check_flow_invertible(&shifted, z.view(), 1e-4).is_ok());
    assert!(check_flow_log_det_bruteforce(&shifted, &row, 5e-3, 1e-3).is_err());
    let wrong_sign = InverseLogDetSign(seed_like_flow(true, true));
    let err = check_flow_invertible(&wrong_sign, z.view(), 1e-4).unwrap_err();
    assert!(err.contains("log-det"), "{err}");
    assert!(
        check_flow_log_det_bruteforce(&seed_like_flow(false, false), &row[..8], 5e-3, 1e-3)
            .is_err()
    );
}

#[test]
fn z2_check_separates_equivariant_from_biased_flows() {
    let z = latent(8, 3);
    let r = check_flow_z2_equivariant(&seed_like_flow(false, false), z.view(), 1e-5);
    assert!(r.is_ok(), "{}", r.unwrap_err());
    assert!(check_flow_z2_equivariant(&seed_like_flow(false, true), z.view(), 1e-5).is_err());
    assert!(check_flow_z2_equivariant(&seed_like_flow(true, false), z.view(), 1e-5).is_err());
}

#[test]
fn strategies_cover_far_fields_and_stay_in_range() {
    let mut runner = TestRunner::deterministic();
    let mut far = 0;
    for _ in 0..50 {
        let v = arb_field(20, 6.0).new_tree(&mut runner).unwrap().current();
        assert_eq!(v.len(), 20);
        assert!(v.iter().all(|x| x.abs() < FAR_FIELD));
        far += v.iter().filter(|x| x.abs() > 6.0).count();
        let (v, theta) = arb_sites(5, 7, 3.0, 2.0)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        assert!((1..=7).contains(&v.len()));
        assert_eq!(theta.len(), 5 * v.len());
        assert!(theta.iter().all(|t| t.abs() < 2.0));
    }
    // One value in four is drawn from (−50, 50), 88 % of which lie beyond |v| = 6:
    // about 220 of 1000 are expected; 100 is more than 8 standard deviations below.
    assert!(far > 100, "{far} values beyond |v| = 6");
}

proptest! {
    #![proptest_config(config(32))]

    /// Random latent batches: the coupling flow with a spline is invertible (tol 1e-4) and
    /// the Z2-affine flow is Z2-equivariant (tol 1e-5).
    #[test]
    fn flow_laws_on_random_batches(z in arb_latent_batch(4, 16, 3.0)) {
        let r = check_flow_invertible(&seed_like_flow(true, true), z.view(), 1e-4);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        let r = check_flow_z2_equivariant(&seed_like_flow(false, false), z.view(), 1e-5);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

#[test]
fn affine_flow_log_det_is_sum_of_scales() {
    // With one affine layer, log|det| = −Σ s over the active sites: the brute-force check
    // must agree with that closed form as well.
    let lattice = Lattice::new(&[4, 4]).unwrap();
    let layer = Layer::new(&lattice, 0, Box::new(Affine), true, 0.8, 7);
    let z = latent(1, 4);
    let row = z.row(0).to_vec();
    let expected: f64 = layer.theta(&row).chunks(2).map(|p| -(p[0] as f64)).sum();
    let flow = CouplingFlow {
        lattice,
        layers: vec![layer],
    };
    let (_, ld) = flow.forward(z.view()).unwrap();
    assert!((ld[0] - expected).abs() < 1e-5, "{} vs {expected}", ld[0]);
    assert!(check_flow_log_det_bruteforce(&flow, &row, 5e-3, 1e-3).is_ok());
}
