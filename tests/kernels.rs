//! Kernels and chains against known answers: the free field's exact χ, G(0) and ⟨S⟩,
//! HMC's reversibility, Creutz equality and ε⁴ energy error, the non-ergodicity that a
//! randomised trajectory length removes, and agreement of local Metropolis, HMC and their
//! cycle on interacting φ⁴. Errors are Γ-method errors; tolerances are 4σ.

use std::sync::Arc;

use latflow::action::{Action, FreeField, Phi4, single_site_sweep};
use latflow::kernel::ACTION_REFRESH_INTERVAL;
use latflow::kernel::{
    Chain, ChainRecord, Cycle, Hmc, Integrator, KernelExpr, LocalMetropolis, Mixture, MoveDetail,
    Repeat, SweepOrder,
};
use latflow::observable::{
    ActionDensity, FieldSquared, IsingEnergy, Magnetisation, MagnetisationSquared, Observable,
};
use latflow::stats::{GammaEstimate, gamma_method, gamma_method_derived};
use latflow::{Lattice, Proposal, SimRng, State, rng_from_seed};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

fn observables<A: Action + 'static>(action: &Arc<A>) -> Vec<Box<dyn Observable>> {
    vec![
        Box::new(Magnetisation),
        Box::new(MagnetisationSquared),
        Box::new(FieldSquared),
        Box::new(ActionDensity::new(action.clone())),
        Box::new(IsingEnergy::new(action.lattice())),
    ]
}

/// Γ-method estimates of ⟨φ²⟩, χ = |Λ|(⟨m²⟩ − ⟨m⟩²), S/|Λ| and the Ising energy.
struct Estimates {
    phi2: GammaEstimate,
    chi: GammaEstimate,
    action_density: GammaEstimate,
    energy: GammaEstimate,
}

fn estimates(record: &ChainRecord, volume: usize) -> Estimates {
    let series = |name: &str| record.series(name, 0).unwrap();
    let (m, m2) = (series("m"), series("m2"));
    let v = volume as f64;
    let chi = gamma_method_derived(&[&m, &m2], |a| v * (a[1] - a[0] * a[0])).unwrap();
    Estimates {
        phi2: gamma_method(&series("phi2")).unwrap(),
        chi,
        action_density: gamma_method(&series("action_density")).unwrap(),
        energy: gamma_method(&series("energy")).unwrap(),
    }
}

fn assert_matches(est: &GammaEstimate, exact: f64, what: &str) {
    assert!(est.window_converged, "{what}: window not converged ({est})");
    assert!(
        (est.mean - exact).abs() < 4.0 * est.err,
        "{what}: {est} vs exact {exact}"
    );
}

fn assert_agree(a: &GammaEstimate, b: &GammaEstimate, what: &str) {
    let sigma = (a.err * a.err + b.err * b.err).sqrt();
    assert!(
        (a.mean - b.mean).abs() < 4.0 * sigma,
        "{what}: {a} vs {b} (combined σ {sigma})"
    );
}

fn run_chain<K: Proposal, A: Action + 'static>(
    kernel: K,
    action: &Arc<A>,
    seed: u64,
    thermalise: usize,
    steps: usize,
) -> ChainRecord {
    let mut chain = Chain::new(kernel, State::zero(&**action), seed);
    chain.thermalise(thermalise);
    chain
        .run_observables(steps, 1, &mut observables(action))
        .unwrap()
}

fn check_free_field(record: &ChainRecord, field: &FreeField, label: &str) {
    let est = estimates(record, field.lattice().volume());
    assert_matches(&est.chi, field.susceptibility(), &format!("{label} χ"));
    assert_matches(&est.phi2, field.propagator()[0], &format!("{label} G(0)"));
    assert_matches(&est.action_density, 0.5, &format!("{label} S/|Λ|"));
}

#[test]
fn local_metropolis_reproduces_the_free_field() {
    for (m0sq, seed) in [(0.5, 1), (0.1, 2)] {
        let field = Arc::new(FreeField::new(Lattice::hypercubic(2, 8).unwrap(), m0sq).unwrap());
        let kernel = LocalMetropolis::new(field.clone(), 1.0).unwrap();
        let record = run_chain(kernel, &field, seed, 2_000, 100_000);
        check_free_field(&record, &field, &format!("local m0²={m0sq}"));
    }
}

#[test]
fn local_metropolis_with_random_order_and_hits_reproduces_the_free_field() {
    let field = Arc::new(FreeField::new(Lattice::new(&[8, 6]).unwrap(), 0.3).unwrap());
    let kernel = LocalMetropolis::new(field.clone(), 1.0)
        .unwrap()
        .with_order(SweepOrder::Random)
        .unwrap()
        .with_hits(3)
        .unwrap();
    let record = run_chain(kernel, &field, 3, 1_000, 40_000);
    assert_eq!(record.moves[0].proposed, 3 * 48);
    check_free_field(&record, &field, "local random order, 3 hits");
}

#[test]
fn hmc_reproduces_the_free_field() {
    for (m0sq, seed, integrator) in [
        (0.5, 4, Integrator::Leapfrog),
        (0.1, 5, Integrator::Leapfrog),
        (0.1, 6, Integrator::Omelyan),
    ] {
        let field = Arc::new(FreeField::new(Lattice::hypercubic(2, 8).unwrap(), m0sq).unwrap());
        let kernel = Hmc::new(field.clone(), 1.0, 8)
            .unwrap()
            .with_integrator(integrator);
        let record = run_chain(kernel, &field, seed, 500, 30_000);
        check_free_field(&record, &field, &format!("hmc {integrator:?} m0²={m0sq}"));
    }
}

#[test]
fn local_step_size_adapts_to_the_target_only_while_thermalising() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 8).unwrap(), 0.576, 0.5).unwrap());
    for target in [0.3, 0.5, 0.7] {
        let kernel = LocalMetropolis::new(action.clone(), 0.1)
            .unwrap()
            .with_target_acceptance(target)
            .unwrap();
        let mut chain = Chain::new(kernel, State::zero(&*action), 7);
        chain.thermalise(3_000);
        let delta = chain.kernel().step_size();
        let record = chain.run_observables(2_000, 10, &mut []).unwrap();
        assert_eq!(chain.kernel().step_size(), delta);
        let acc = record.acceptance_of("local");
        // The adapted δ fluctuates by a few percent; its acceptance lands near the target.
        assert!(
            (acc - target).abs() < 0.02,
            "target {target}, acceptance {acc}"
        );
    }
}

/// Leapfrog on the zero mode (ω = m0) rotates phase space by θ per step with
/// cos θ = 1 − ε²ω²/2. With n steps and θ = 2π/n every fixed-length trajectory returns the
/// zero mode exactly: M never changes. A randomised length samples it correctly.
#[test]
fn fixed_trajectory_length_can_freeze_a_mode_and_randomised_length_does_not() {
    let m0sq: f64 = 0.5;
    let field = Arc::new(FreeField::new(Lattice::hypercubic(2, 8).unwrap(), m0sq).unwrap());
    let n = 40;
    let eps = 2.0 * (std::f64::consts::PI / n as f64).sin() / m0sq.sqrt();
    let tau = eps * n as f64;

    let mut rng = rng_from_seed(8);
    let start: Vec<f64> = (0..64).map(|_| StandardNormal.sample(&mut rng)).collect();
    let m_start: f64 = start.iter().sum();

    let fixed = Hmc::new(field.clone(), tau, n)
        .unwrap()
        .with_randomised_length(false);
    let mut chain = Chain::new(fixed, State::new(&*field, start.clone()).unwrap(), 9);
    let record = chain.run_observables(300, 1, &mut []).unwrap();
    assert!(
        record.acceptance() > 0.3,
        "acceptance {}",
        record.acceptance()
    );
    let m_end: f64 = chain.state().phi().iter().sum();
    assert!(
        (m_end - m_start).abs() < 1e-9,
        "M moved from {m_start} to {m_end}"
    );

    let randomised = Hmc::new(field.clone(), tau, n).unwrap();
    assert!(randomised.randomises_length());
    assert_eq!(randomised.step_count_range(), 20..=60);
    let mut chain = Chain::new(randomised, State::new(&*field, start).unwrap(), 10);
    let record = chain
        .run_observables(20_000, 1, &mut observables(&field))
        .unwrap();
    let est = estimates(&record, 64);
    assert_matches(&est.chi, field.susceptibility(), "randomised-length χ");
}

fn thermalised_phi4(l: usize, seed: u64) -> (Arc<Phi4>, Vec<f64>) {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, l).unwrap(), 0.576, 0.5).unwrap());
    let kernel = LocalMetropolis::new(action.clone(), 1.0).unwrap();
    let mut chain = Chain::new(kernel, State::zero(&*action), seed);
    chain.thermalise(500);
    let phi = chain.state().phi().to_vec();
    (action, phi)
}

#[test]
fn hmc_integrators_are_reversible() {
    let (action, phi0) = thermalised_phi4(8, 11);
    let mut rng = rng_from_seed(12);
    for integrator in [Integrator::Leapfrog, Integrator::Omelyan] {
        let hmc = Hmc::new(action.clone(), 1.0, 10)
            .unwrap()
            .with_integrator(integrator);
        let pi0: Vec<f64> = (0..64).map(|_| StandardNormal.sample(&mut rng)).collect();
        let (mut phi, mut pi, mut force) = (phi0.clone(), pi0.clone(), vec![0.0; 64]);
        action.force(&phi, &mut force);
        let s_end = hmc.integrate(&mut phi, &mut pi, &mut force, 10);
        assert!((s_end - action.action(&phi)).abs() < 1e-10 * s_end.abs().max(1.0));
        let moved: f64 = phi.iter().zip(&phi0).map(|(a, b)| (a - b).abs()).sum();
        assert!(moved > 1.0, "the trajectory must go somewhere");
        pi.iter_mut().for_each(|p| *p = -*p);
        hmc.integrate(&mut phi, &mut pi, &mut force, 10);
        for i in 0..64 {
            assert!((phi[i] - phi0[i]).abs() < 1e-10, "{integrator:?} φ_{i}");
            assert!((pi[i] + pi0[i]).abs() < 1e-10, "{integrator:?} π_{i}");
        }
    }
}

#[test]
fn hmc_satisfies_the_creutz_equality_on_phi4() {
    let (action, phi) = thermalised_phi4(8, 13);
    for (integrator, n, seed) in [(Integrator::Leapfrog, 4, 14), (Integrator::Omelyan, 2, 15)] {
        let hmc = Hmc::new(action.clone(), 1.0, n)
            .unwrap()
            .with_integrator(integrator);
        let mut chain = Chain::new(hmc, State::new(&*action, phi.clone()).unwrap(), seed);
        let record = chain.run_observables(20_000, 1, &mut []).unwrap();
        let weights: Vec<f64> = record.delta_h().iter().map(|d| (-d).exp()).collect();
        let est = gamma_method(&weights).unwrap();
        let acc = record.acceptance_of("hmc");
        // A test with teeth: ΔH must be far from 0 (acceptance well below 1).
        assert!(acc < 0.9, "{integrator:?} acceptance {acc}");
        assert_matches(&est, 1.0, &format!("{integrator:?} ⟨e^(−ΔH)⟩"));
    }
}

/// ⟨ΔH⟩ over independent exact free-field configurations with fresh momenta, at fixed
/// trajectory length τ = 1 and n steps: (mean, standard error).
fn mean_delta_h(
    field: &Arc<FreeField>,
    integrator: Integrator,
    n: usize,
    samples: usize,
) -> (f64, f64) {
    let hmc = Hmc::new(field.clone(), 1.0, n)
        .unwrap()
        .with_integrator(integrator)
        .with_randomised_length(false);
    let v = field.lattice().volume();
    let mut sampler = field.sampler();
    let mut rng = rng_from_seed(100 + n as u64);
    let (mut phi, mut pi, mut force) = (vec![0.0; v], vec![0.0; v], vec![0.0; v]);
    let (mut sum, mut sum2) = (0.0, 0.0);
    for _ in 0..samples {
        sampler.sample_into(&mut rng, &mut phi).unwrap();
        pi.iter_mut()
            .for_each(|p| *p = StandardNormal.sample(&mut rng));
        let h0 = hmc.hamiltonian(&phi, &pi);
        field.force(&phi, &mut force);
        hmc.integrate(&mut phi, &mut pi, &mut force, n);
        let dh = hmc.hamiltonian(&phi, &pi) - h0;
        sum += dh;
        sum2 += dh * dh;
    }
    let nf = samples as f64;
    let mean = sum / nf;
    (mean, ((sum2 / nf - mean * mean) / (nf - 1.0)).sqrt())
}

#[test]
fn leapfrog_energy_error_scales_as_eps_to_the_fourth() {
    // ⟨ΔH⟩ grows like |Λ| and its noise like √|Λ|: a large lattice resolves small ε.
    let field = Arc::new(FreeField::new(Lattice::hypercubic(2, 64).unwrap(), 0.5).unwrap());
    let steps = [6usize, 8, 11, 16];
    let points: Vec<(f64, f64, f64)> = steps
        .iter()
        .map(|&n| {
            let (mean, err) = mean_delta_h(&field, Integrator::Leapfrog, n, 3_000);
            assert!(
                mean > 4.0 * err,
                "n = {n}: ⟨ΔH⟩ = {mean} ± {err} not resolved"
            );
            ((1.0 / n as f64).ln(), mean.ln(), err / mean)
        })
        .collect();
    // Weighted least squares of log⟨ΔH⟩ against log ε.
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, y, e) in &points {
        let w = 1.0 / (e * e);
        sw += w;
        sx += w * x;
        sy += w * y;
        sxx += w * x * x;
        sxy += w * x * y;
    }
    let slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx);
    let slope_err = (sw / (sw * sxx - sx * sx)).sqrt();
    // The tolerance 0.4 must be at least 3σ of the fitted slope for the test to mean much.
    assert!(slope_err < 0.4 / 3.0, "slope error {slope_err}");
    assert!(
        (slope - 4.0).abs() < 0.4,
        "slope {slope} ± {slope_err}, points {points:?}"
    );

    // Omelyan's integrator has a much smaller error at the same step size.
    let (lf, lf_err) = mean_delta_h(&field, Integrator::Leapfrog, 8, 1_000);
    let (om, om_err) = mean_delta_h(&field, Integrator::Omelyan, 8, 1_000);
    assert!(
        om + 4.0 * om_err < 0.5 * (lf - 4.0 * lf_err),
        "omelyan {om}, leapfrog {lf}"
    );
}

#[test]
fn trajectory_length_is_randomised_by_default() {
    let field = Arc::new(FreeField::new(Lattice::hypercubic(2, 4).unwrap(), 1.0).unwrap());
    let hmc = Hmc::new(field.clone(), 1.0, 10).unwrap();
    assert!(hmc.randomises_length());
    assert_eq!(hmc.step_count_range(), 5..=15);
    let fixed = hmc.with_randomised_length(false);
    assert_eq!(fixed.step_count_range(), 10..=10);
    assert!(Hmc::new(field.clone(), 0.0, 10).is_err());
    assert!(Hmc::new(field, 1.0, 0).is_err());
}

#[test]
fn local_hmc_and_their_cycle_agree_on_phi4() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 8).unwrap(), 0.576, 0.5).unwrap());
    let local = || LocalMetropolis::new(action.clone(), 1.0).unwrap();
    let hmc = || Hmc::new(action.clone(), 1.0, 8).unwrap();
    let records = [
        ("local", run_chain(local(), &action, 21, 2_000, 60_000)),
        ("hmc", run_chain(hmc(), &action, 22, 500, 20_000)),
        (
            "cycle",
            run_chain(Cycle::new(local(), hmc()), &action, 23, 500, 15_000),
        ),
    ];
    let est: Vec<(&str, Estimates)> = records
        .iter()
        .map(|(name, r)| (*name, estimates(r, 64)))
        .collect();
    for i in 0..est.len() {
        for j in i + 1..est.len() {
            let (a, b) = (&est[i], &est[j]);
            let pair = format!("{} vs {}", a.0, b.0);
            assert_agree(&a.1.phi2, &b.1.phi2, &format!("{pair} ⟨φ²⟩"));
            assert_agree(&a.1.chi, &b.1.chi, &format!("{pair} χ"));
            assert_agree(&a.1.energy, &b.1.energy, &format!("{pair} energy"));
        }
    }
    // The errors must be small enough for the comparison to mean something.
    for (name, e) in &est {
        assert!(e.chi.err < 0.05 * e.chi.mean, "{name}: χ = {}", e.chi);
    }
}

#[test]
fn chain_keeps_the_cached_action_current() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 8).unwrap(), 0.576, 0.5).unwrap());
    let kernel = Cycle::new(
        Repeat::new(LocalMetropolis::new(action.clone(), 1.0).unwrap(), 3).unwrap(),
        Hmc::new(action.clone(), 1.0, 8).unwrap(),
    );
    let mut chain = Chain::new(kernel, State::zero(&*action), 30);
    chain.run_observables(500, 1, &mut []).unwrap();
    let state = chain.state();
    let exact = action.action(state.phi());
    assert!((state.action() - exact).abs() < 1e-9 * exact.abs().max(1.0));
}

#[test]
fn chain_record_counts_measurements_and_moves() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4).unwrap(), 0.5, 0.5).unwrap());
    let kernel = Cycle::new(
        Repeat::new(LocalMetropolis::new(action.clone(), 1.0).unwrap(), 2).unwrap(),
        Hmc::new(action.clone(), 1.0, 5).unwrap(),
    );
    let mut chain = Chain::new(kernel, State::zero(&*action), 31);
    let record = chain
        .run_observables(103, 10, &mut observables(&action))
        .unwrap();
    assert_eq!(record.steps, 103);
    assert_eq!(record.n_measurements(), 10);
    assert_eq!(record.series("m", 0).unwrap().len(), 10);
    assert!(record.series("m", 1).is_none());
    assert_eq!(record.moves.len(), 3 * 103);
    assert_eq!(record.accept_history("hmc").len(), 103);
    assert!(record.accept_history("local").is_empty());
    let local_moves = record.moves.iter().filter(|m| m.kernel == "local").count();
    assert_eq!(local_moves, 206);
    assert!(matches!(
        chain.run_observables(10, 0, &mut []),
        Err(latflow::Error::InvalidParameter { .. })
    ));
}

#[test]
fn same_seed_gives_the_same_chain() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4).unwrap(), 0.5, 0.5).unwrap());
    let run = |seed| {
        let kernel = Mixture::new(
            LocalMetropolis::new(action.clone(), 1.0).unwrap(),
            Hmc::new(action.clone(), 1.0, 5).unwrap(),
            0.5,
        )
        .unwrap();
        let mut chain = Chain::new(kernel, State::zero(&*action), seed);
        chain.thermalise(50);
        chain.run_observables(200, 1, &mut []).unwrap();
        chain.into_parts().1
    };
    assert_eq!(run(40), run(40));
    assert_ne!(run(40), run(41));
}

#[test]
fn mixture_picks_its_first_kernel_with_the_given_probability() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4).unwrap(), 0.5, 0.5).unwrap());
    let p = 0.3;
    let kernel = Mixture::new(
        LocalMetropolis::new(action.clone(), 1.0).unwrap(),
        Hmc::new(action.clone(), 1.0, 3).unwrap(),
        p,
    )
    .unwrap();
    let mut chain = Chain::new(kernel, State::zero(&*action), 50);
    let n = 20_000;
    let record = chain.run_observables(n, 1, &mut []).unwrap();
    let local = record.moves.iter().filter(|m| m.kernel == "local").count() as f64;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (local - n as f64 * p).abs() < 4.0 * sigma,
        "{local} local moves"
    );
    assert!(
        Mixture::new(
            LocalMetropolis::new(action.clone(), 1.0).unwrap(),
            Hmc::new(action, 1.0, 3).unwrap(),
            1.5
        )
        .is_err()
    );
}

#[test]
fn bad_kernel_parameters_are_refused() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4).unwrap(), 0.5, 0.5).unwrap());
    assert!(LocalMetropolis::new(action.clone(), 0.0).is_err());
    assert!(LocalMetropolis::new(action.clone(), f64::NAN).is_err());
    let local = || LocalMetropolis::new(action.clone(), 1.0).unwrap();
    assert!(local().with_hits(0).is_err());
    assert!(local().with_target_acceptance(1.0).is_err());
    assert!(local().with_target_acceptance(0.0).is_err());
    assert!(Repeat::new(local(), 0).is_err());
    assert!(Hmc::new(action.clone(), f64::INFINITY, 4).is_err());
    assert!(Hmc::new(action, -1.0, 4).is_err());
}

#[test]
fn phi4_sweep_takes_the_reference_decisions() {
    // Phi4's specialised sweep (d ≤ 4) and its fallback (d = 5) against the reference
    // sweep through delta_local: same seed, so the fields, tallies and generator states
    // must agree exactly.
    let extents: [&[usize]; 5] = [&[7], &[5, 6], &[3, 4, 5], &[3, 3, 2, 3], &[2, 2, 2, 2, 3]];
    for (case, ext) in extents.iter().enumerate() {
        let lattice = Lattice::new(ext).unwrap();
        let v = lattice.volume();
        let action = Phi4::hopping(lattice, 0.6, 0.5).unwrap();
        let mut rng = rng_from_seed(40 + case as u64);
        let phi0: Vec<f64> = (0..v).map(|_| rng.random_range(-1.5..1.5)).collect();
        let mut sites: Vec<usize> = (0..v).rev().chain(0..v).collect();
        sites.swap(1, v / 2);
        for hits in [1, 3] {
            let propose =
                |old: f64, rng: &mut SimRng| old + 1.2 * (2.0 * rng.random::<f64>() - 1.0);
            let (mut phi_fast, mut rng_fast) = (phi0.clone(), rng_from_seed(7));
            let fast = action.metropolis_sweep(&mut phi_fast, &sites, hits, &mut rng_fast, propose);
            let (mut phi_ref, mut rng_ref) = (phi0.clone(), rng_from_seed(7));
            let reference =
                single_site_sweep(&action, &mut phi_ref, &sites, hits, &mut rng_ref, propose);
            assert_eq!(fast, reference, "d = {}, hits = {hits}", ext.len());
            assert_eq!(phi_fast, phi_ref, "d = {}, hits = {hits}", ext.len());
            assert_eq!(rng_fast.next_u64(), rng_ref.next_u64());
            let total = sites.len() as u32 * hits;
            assert!(
                fast.accepted > total / 10 && fast.accepted < total,
                "{fast:?}"
            );
            let exact = action.action(&phi_fast) - action.action(&phi0);
            assert!((fast.delta_action - exact).abs() < 1e-9 * exact.abs().max(1.0));
        }
    }
}

#[test]
fn leapfrog_step_is_force_then_kick_then_drift() {
    let (action, phi0) = thermalised_phi4(8, 16);
    let hmc = Hmc::new(action.clone(), 1.0, 8).unwrap();
    let eps = hmc.step_size();
    let mut rng = rng_from_seed(17);
    let pi0: Vec<f64> = (0..64).map(|_| StandardNormal.sample(&mut rng)).collect();
    let (mut phi, mut pi, mut force) = (phi0.clone(), pi0.clone(), vec![0.0; 64]);
    hmc.leapfrog_step(&mut phi, &mut pi, &mut force);
    let mut expected_force = vec![0.0; 64];
    action.force(&phi0, &mut expected_force);
    assert_eq!(force, expected_force);
    for i in 0..64 {
        let p = pi0[i] - eps * expected_force[i];
        assert_eq!(pi[i], p, "π_{i}");
        assert_eq!(phi[i], phi0[i] + eps * p, "φ_{i}");
    }
}

/// The cached action of a state that only local sweeps move, in sequential and in
/// checkerboard order. Summing ΔS sweep after sweep adds rounding errors of order
/// ε(|S| + |Λ|) per sweep, a random walk that grows without bound (√n of them after n
/// sweeps); the kernel recomputes S from the field every `ACTION_REFRESH_INTERVAL` sweeps, so
/// that the cached value is exact right after a recomputation and within that many sweeps'
/// rounding in between.
#[test]
fn local_sweeps_keep_the_cached_action_exact() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 8).unwrap(), 0.576, 0.5).unwrap());
    for (order, sweeps) in [
        (SweepOrder::Sequential, 1_000_000u32),
        (SweepOrder::Checkerboard, 300_000),
    ] {
        let mut kernel = LocalMetropolis::new(action.clone(), 1.0)
            .unwrap()
            .with_order(order)
            .unwrap();
        let mut state = State::zero(&*action);
        let mut rng = rng_from_seed(60);
        let mut moves = Vec::new();
        let interval = ACTION_REFRESH_INTERVAL;
        let mut worst: f64 = 0.0;
        for sweep in 1..=sweeps {
            moves.clear();
            kernel.step(&mut state, &mut rng, &mut moves);
            if sweep % (interval * 64) == 0 {
                // Right after a recomputation (sweep counts from the kernel's construction).
                let exact = action.action(state.phi());
                assert_eq!(state.action(), exact, "{order:?}, sweep {sweep}");
            }
            if sweep % 997 == 0 {
                let exact = action.action(state.phi());
                let scale = exact.abs() + state.phi().len() as f64;
                worst = worst.max((state.action() - exact).abs() / scale);
            }
        }
        let bound = 8.0 * interval as f64 * f64::EPSILON;
        assert!(
            worst > 0.0 && worst < bound,
            "{order:?}: cached action off by {:.1} ε(|S| + |Λ|)",
            worst / f64::EPSILON
        );
    }
}

/// A kernel built from an expression, a hand-made composite of boxed kernels and one of
/// concrete kernels make the same moves from the same seed.
#[test]
fn boxed_and_concrete_composites_make_the_same_moves() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4).unwrap(), 0.5, 0.5).unwrap());
    let local = || LocalMetropolis::new(action.clone(), 1.0).unwrap();
    let hmc = || Hmc::new(action.clone(), 1.0, 5).unwrap();
    let run = |kernel: Box<dyn Proposal>| {
        let mut chain = Chain::new(kernel, State::zero(&*action), 70);
        chain.thermalise(20);
        let record = chain.run_observables(300, 1, &mut []).unwrap();
        (chain.state().clone(), record.moves)
    };
    let concrete = run(Box::new(Cycle::new(
        Repeat::new(local(), 2).unwrap(),
        hmc(),
    )));
    let boxed_parts: Box<dyn Proposal> = Box::new(Cycle::new(
        Repeat::new(Box::new(local()) as Box<dyn Proposal>, 2).unwrap(),
        Box::new(hmc()) as Box<dyn Proposal>,
    ));
    let from_expression = KernelExpr::parse("local*2+hmc")
        .unwrap()
        .build(&mut |name, _| -> latflow::Result<Box<dyn Proposal>> {
            match name {
                "local" => Ok(Box::new(local())),
                "hmc" => Ok(Box::new(hmc())),
                other => Err(latflow::Error::param("kernel", other)),
            }
        })
        .unwrap();
    assert_eq!(run(boxed_parts), concrete);
    assert_eq!(run(from_expression), concrete);
    assert_eq!(concrete.1.len(), 3 * 300);

    // The record's accessors see the typed details.
    let mut chain = Chain::new(
        Cycle::new(Repeat::new(local(), 2).unwrap(), hmc()),
        State::zero(&*action),
        71,
    );
    let record = chain.run_observables(50, 1, &mut []).unwrap();
    assert_eq!(record.delta_h().len(), 50);
    assert_eq!(record.log_acceptance_ratios("hmc").len(), 50);
    assert!(record.log_acceptance_ratios("local").is_empty());
    assert!(record.log_weight_ratios("flow").is_empty());
    assert_eq!(
        record.local_step_size(),
        Some(chain.kernel().first.kernel.step_size())
    );

    // A local sweep records S after − S before.
    let mut chain = Chain::new(local(), State::zero(&*action), 72);
    let record = chain.run_observables(10, 1, &mut []).unwrap();
    let summed: f64 = record
        .moves
        .iter()
        .map(|m| match m.detail {
            MoveDetail::LocalSweep { delta_action, .. } => delta_action,
            _ => f64::NAN,
        })
        .sum();
    let change = chain.state().action() - State::zero(&*action).action();
    assert!(
        summed != 0.0 && (summed - change).abs() < 1e-9,
        "{summed} vs {change}"
    );

    // An unknown name in an expression is the builder's error.
    let unknown = KernelExpr::parse("local+gibbs")
        .unwrap()
        .build(&mut |name, _| {
            Err(latflow::Error::param(
                "kernel",
                format!("unknown kernel `{name}`"),
            ))
        });
    assert!(unknown.is_err());
}
