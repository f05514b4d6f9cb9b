//! Flow HMC against known answers: the pulled-back force against finite differences of
//! U(z) = S(f(z)) − log|det ∂f/∂z|, the f64 inverse, reversibility of both integrators to
//! rounding, ⟨e^{−ΔH}⟩ = 1, the free field's exact χ, G(0) and ⟨S⟩/|Λ| with a random
//! (untrained) flow, and agreement with HMC on interacting φ⁴, alone and composed with
//! local sweeps. Errors are Γ-method errors; tolerances are 4σ.

mod common;

use std::sync::Arc;

use common::{assert_agree, assert_within, field_estimates, random_model};
use latflow::action::{Action, FreeField, Phi4};
use latflow::flow::{Flow, FlowConfig, FlowModel, FlowScratch, LatentPrior, Prior};
use latflow::kernel::{Chain, ChainRecord, Cycle, FlowHmc, Hmc, Integrator, LocalMetropolis};
use latflow::stats::gamma_method;
use latflow::{Error, Lattice, Proposal, State, rng_from_seed};
use ndarray::{Array1, Array2, ArrayView2};
use rand_distr::{Distribution, StandardNormal};

const L: usize = 6;

/// The seed recipe (one affine block, one spline block) with hidden width 16 and
/// parameters uniform in (−0.2, 0.2): far from the identity and from any target.
fn random_flow(seed: u64) -> Arc<FlowModel> {
    Arc::new(random_model(
        &FlowConfig::seed(16, 1, 4).unwrap(),
        L,
        0.2,
        seed,
    ))
}

fn phi4() -> Arc<Phi4> {
    Arc::new(Phi4::hopping(Lattice::hypercubic(2, L).unwrap(), 0.537, 0.5).unwrap())
}

fn normal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rng_from_seed(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

fn run<K: Proposal, A: Action + 'static>(
    kernel: K,
    action: &Arc<A>,
    seed: u64,
    steps: usize,
) -> ChainRecord {
    common::run_measured(kernel, action, seed, 200, steps)
}

#[test]
fn the_pulled_back_force_is_the_gradient_of_the_potential() {
    let flow = random_flow(1);
    let action = phi4();
    let v = L * L;
    let z = normal(v, 2);
    let (mut phi, mut grad) = (vec![0.0; v], vec![0.0; v]);
    let mut scratch = FlowScratch::new();
    let mut potential = |z: &[f64], phi: &mut [f64], grad: &mut [f64]| {
        let mut pass = |f: &[f64], g: &mut [f64]| action.action_and_force(f, g);
        flow.pull_back(z, phi, &mut pass, grad, &mut scratch)
            .unwrap()
            .potential()
    };
    let u = potential(&z, &mut phi, &mut grad);
    // φ agrees with the f32 forward pass, S is the action of φ.
    let z32 = Array2::from_shape_fn((1, v), |(_, i)| z[i] as f32);
    let (phi32, log_det32) = flow.forward(z32.view()).unwrap();
    for (a, b) in phi.iter().zip(phi32.iter()) {
        assert!((a - f64::from(*b)).abs() < 1e-4, "φ {a} vs f32 {b}");
    }
    let expected_u = action.action(&phi) - log_det32[0];
    assert!((u - expected_u).abs() < 1e-3, "U {u} vs {expected_u}");
    // Central differences of U in f64, step h: error O(h²) ≈ 1e-8 relative.
    let h = 1e-5;
    let (mut scratch_phi, mut scratch_grad) = (vec![0.0; v], vec![0.0; v]);
    for site in [0, 7, 20, 35] {
        let mut zp = z.clone();
        zp[site] += h;
        let up = potential(&zp, &mut scratch_phi, &mut scratch_grad);
        zp[site] -= 2.0 * h;
        let um = potential(&zp, &mut scratch_phi, &mut scratch_grad);
        let numeric = (up - um) / (2.0 * h);
        assert!(
            (numeric - grad[site]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "∂U/∂z_{site}: reverse mode {} vs difference {numeric}",
            grad[site]
        );
    }
    // The f64 inverse takes φ back to z to rounding, with minus the forward log-det.
    let mut back = vec![0.0; v];
    let inverse_ld = flow.inverse_f64(&phi, &mut back, &mut scratch).unwrap();
    for (a, b) in back.iter().zip(&z) {
        assert!((a - b).abs() < 1e-10, "f⁻¹(f(z)) {a} vs z {b}");
    }
    assert!((inverse_ld + action.action(&phi) - u).abs() < 1e-9);
}

#[test]
fn both_integrators_are_reversible_to_rounding() {
    let action = phi4();
    let v = L * L;
    for (integrator, seed) in [(Integrator::Leapfrog, 3), (Integrator::Omelyan, 4)] {
        let mut hmc = FlowHmc::new(random_flow(seed), action.clone(), 1.0, 10)
            .unwrap()
            .with_integrator(integrator);
        let z0 = normal(v, seed + 10);
        let p0 = normal(v, seed + 20);
        let u0 = hmc.potential(&z0);
        let (mut z, mut p) = (z0.clone(), p0.clone());
        let u1 = hmc.integrate(&mut z, &mut p, 10);
        assert!(u1.is_finite() && u0.is_finite());
        let moved: f64 = z.iter().zip(&z0).map(|(a, b)| (a - b).abs()).sum();
        assert!(
            moved > 1.0,
            "{integrator:?}: the trajectory must go somewhere"
        );
        p.iter_mut().for_each(|x| *x = -*x);
        let u2 = hmc.integrate(&mut z, &mut p, 10);
        for i in 0..v {
            assert!((z[i] - z0[i]).abs() < 1e-9, "{integrator:?} z_{i}");
            assert!((p[i] + p0[i]).abs() < 1e-9, "{integrator:?} p_{i}");
        }
        assert!((u2 - u0).abs() < 1e-9 * u0.abs().max(1.0));
    }
}

#[test]
fn the_creutz_equality_holds_with_a_random_flow() {
    let action = phi4();
    for (integrator, n, seed) in [(Integrator::Leapfrog, 8, 5), (Integrator::Omelyan, 6, 6)] {
        let hmc = FlowHmc::new(random_flow(seed), action.clone(), 1.0, n)
            .unwrap()
            .with_integrator(integrator);
        let mut chain = Chain::new(hmc, State::zero(&*action), seed);
        chain.thermalise(200);
        let record = chain.run_observables(6_000, 1, &mut []).unwrap();
        let weights: Vec<f64> = record.delta_h().iter().map(|d| (-d).exp()).collect();
        let est = gamma_method(&weights).unwrap();
        let acc = record.acceptance_of("flowhmc");
        assert!(acc < 0.95 && acc > 0.1, "{integrator:?} acceptance {acc}");
        assert!(
            (est.mean - 1.0).abs() < 4.0 * est.err,
            "{integrator:?} ⟨e^(−ΔH)⟩ = {est}"
        );
    }
}

#[test]
fn a_random_flow_reproduces_the_free_field() {
    let field = Arc::new(FreeField::new(Lattice::hypercubic(2, L).unwrap(), 0.5).unwrap());
    let kernel = FlowHmc::new(random_flow(7), field.clone(), 1.0, 6).unwrap();
    let record = run(kernel, &field, 8, 12_000);
    let [phi2, chi, s] = field_estimates(&record, L * L);
    for (est, exact, what) in [
        (phi2, field.propagator()[0], "G(0)"),
        (chi, field.susceptibility(), "χ"),
        (s, 0.5, "S/|Λ|"),
    ] {
        assert_within(&est, exact, what);
    }
    let acc = record.acceptance_of("flowhmc");
    assert!(acc > 0.3, "acceptance {acc}");
}

/// φ⁴ at L = 6 from flow HMC alone and composed with local sweeps (which makes flow HMC
/// take over fields it did not make), against plain HMC.
#[test]
fn flow_hmc_alone_and_with_local_sweeps_agrees_with_hmc_on_phi4() {
    let action = phi4();
    let v = L * L;
    let reference = field_estimates(
        &run(
            Hmc::new(action.clone(), 1.0, 8).unwrap(),
            &action,
            9,
            30_000,
        ),
        v,
    );
    let alone = FlowHmc::new(random_flow(10), action.clone(), 1.0, 6).unwrap();
    let mixed = Cycle::new(
        FlowHmc::new(random_flow(11), action.clone(), 1.0, 6).unwrap(),
        LocalMetropolis::new(action.clone(), 1.0).unwrap(),
    );
    let records = [
        ("flowhmc", run(alone, &action, 12, 15_000)),
        ("flowhmc+local", run(mixed, &action, 13, 10_000)),
    ];
    for (name, record) in &records {
        let acc = record.acceptance_of("flowhmc");
        assert!(acc > 0.3, "{name}: acceptance {acc}");
        for ((a, b), what) in
            field_estimates(record, v)
                .iter()
                .zip(&reference)
                .zip(["⟨φ²⟩", "χ", "S/|Λ|"])
        {
            assert_agree(a, b, &format!("{name} {what} against hmc"));
        }
    }
}

/// A flow with no pull-back (a user's global rescaling).
struct Rescale {
    lattice: Lattice,
    prior: Prior,
}

impl Flow for Rescale {
    fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    fn prior(&self) -> &dyn LatentPrior {
        &self.prior
    }

    fn forward(&self, z: ArrayView2<f32>) -> latflow::Result<(Array2<f32>, Array1<f64>)> {
        Ok((z.mapv(|x| 0.5 * x), Array1::zeros(z.nrows())))
    }

    fn inverse(&self, phi: ArrayView2<f32>) -> latflow::Result<(Array2<f32>, Array1<f64>)> {
        Ok((phi.mapv(|x| 2.0 * x), Array1::zeros(phi.nrows())))
    }
}

#[test]
fn bad_settings_and_flows_without_a_pull_back_are_refused() {
    let action = phi4();
    let flow = random_flow(14);
    for (tau, n, key) in [
        (0.0, 5, "flowhmc_tau"),
        (f64::NAN, 5, "flowhmc_tau"),
        (1.0, 0, "flowhmc_md_steps"),
    ] {
        let err = FlowHmc::new(flow.clone(), action.clone(), tau, n)
            .err()
            .unwrap();
        assert!(err.to_string().contains(key), "{err}");
    }
    let other = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4).unwrap(), 0.5, 0.5).unwrap());
    assert!(matches!(
        FlowHmc::new(flow, other, 1.0, 5),
        Err(Error::Incompatible(_))
    ));
    let rescale = Arc::new(Rescale {
        lattice: action.lattice().clone(),
        prior: Prior::StandardNormal,
    });
    match FlowHmc::new(rescale, action, 1.0, 5) {
        Err(Error::Incompatible(message)) => assert!(message.contains("pull_back"), "{message}"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
}
