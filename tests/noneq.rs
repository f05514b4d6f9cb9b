//! Non-equilibrium sampling against known answers: log Z of the free field (exact) from a
//! Gaussian start of another mass, with local and HMC protocol steps; reweighted
//! observables against the free field's exact values and HMC on φ⁴; the evolution as an
//! independence proposal, alone and composed with local sweeps; refusals and unreliable
//! reports. Errors are standard errors (delta method, Γ method); tolerances are 4σ.

mod common;

use std::sync::Arc;

use common::{assert_agree, assert_within, field_estimates};

use latflow::action::{Action, FreeField, Phi4};
use latflow::kernel::{
    ChainRecord, Cycle, Hmc, LocalMetropolis, NoneqEvolution, NoneqProposal, NoneqProtocol,
    NoneqUpdate, noneq_estimate,
};
use latflow::{Lattice, Proposal};

const L: usize = 6;
const V: usize = L * L;

fn free(m0sq: f64) -> Arc<FreeField> {
    Arc::new(FreeField::new(Lattice::hypercubic(2, L).unwrap(), m0sq).unwrap())
}

fn phi4() -> Arc<Phi4> {
    Arc::new(Phi4::hopping(Lattice::hypercubic(2, L).unwrap(), 0.537, 0.5).unwrap())
}

fn local(steps: usize) -> NoneqProtocol {
    NoneqProtocol {
        steps,
        update: NoneqUpdate::Local { step_size: 1.0 },
    }
}

fn phi2(phi: &[f64]) -> f64 {
    phi.iter().map(|x| x * x).sum::<f64>() / phi.len() as f64
}

#[test]
fn log_z_of_the_free_field_from_a_gaussian_of_another_mass() {
    let field = free(0.5);
    let exact = field.log_z();
    for (protocol, seed) in [
        (local(16), 1),
        (
            NoneqProtocol {
                steps: 8,
                update: NoneqUpdate::Hmc {
                    tau: 1.0,
                    md_steps: 5,
                },
            },
            2,
        ),
    ] {
        // A start wider than the target, so that its tails are covered.
        let mut evolution = NoneqEvolution::new(field.clone(), 0.2, protocol).unwrap();
        let start = evolution.log_z_start();
        let f = field.clone();
        let mut action_density = |phi: &[f64]| f.action(phi) / V as f64;
        let est = noneq_estimate(
            &mut evolution,
            2_000,
            seed,
            &mut [&mut phi2, &mut action_density],
        )
        .unwrap();
        assert!(est.reliable, "{:?}", est.caveats);
        // A test with teeth: the start is far from the target (log Z differs by about 2)
        // and the error is a small fraction of that.
        assert!((exact - start).abs() > 1.0, "log Z₀ {start} vs {exact}");
        assert!(est.log_z_err < 0.05, "error {}", est.log_z_err);
        assert!(
            (est.log_z - exact).abs() < 4.0 * est.log_z_err,
            "{protocol:?}: log Z {} ± {} vs exact {exact}",
            est.log_z,
            est.log_z_err
        );
        // The second law: ⟨W⟩ ≥ ΔF = log Z₀ − log Z.
        assert!(est.mean_work >= start - exact - 4.0 * est.log_z_err);
        assert_within(&est.observables[0], field.propagator()[0], "G(0)");
        assert_within(&est.observables[1], 0.5, "S/|Λ|");
    }
}

fn run<K: Proposal, A: Action + 'static>(
    kernel: K,
    action: &Arc<A>,
    seed: u64,
    n: usize,
) -> ChainRecord {
    common::run_measured(kernel, action, seed, 100, n)
}

#[test]
fn the_independence_sampler_reproduces_the_free_field() {
    let field = free(0.5);
    let kernel = NoneqProposal::new(NoneqEvolution::new(field.clone(), 2.0, local(16)).unwrap());
    let record = run(kernel, &field, 3, 6_000);
    let acc = record.acceptance_of("noneq");
    assert!(acc > 0.2 && acc < 0.95, "acceptance {acc}");
    let [phi2, chi, s] = field_estimates(&record, V);
    assert_within(&phi2, field.propagator()[0], "G(0)");
    assert_within(&chi, field.susceptibility(), "χ");
    assert_within(&s, 0.5, "S/|Λ|");
}

/// φ⁴ at L = 6: reweighted evolutions, the independence sampler alone and composed with
/// local sweeps (which makes it draw the current state's path backwards), against HMC.
#[test]
fn evolutions_agree_with_hmc_on_phi4() {
    let action = phi4();
    let reference = field_estimates(
        &run(
            Hmc::new(action.clone(), 1.0, 8).unwrap(),
            &action,
            4,
            30_000,
        ),
        V,
    );
    let mut evolution = NoneqEvolution::new(action.clone(), 1.0, local(16)).unwrap();
    let est = noneq_estimate(&mut evolution, 3_000, 5, &mut [&mut phi2]).unwrap();
    assert!(est.reliable, "{:?}", est.caveats);
    assert_agree(&est.observables[0], &reference[0], "reweighted ⟨φ²⟩");
    let alone = NoneqProposal::new(NoneqEvolution::new(action.clone(), 1.0, local(16)).unwrap());
    let mixed = Cycle::new(
        NoneqProposal::new(NoneqEvolution::new(action.clone(), 1.0, local(16)).unwrap()),
        LocalMetropolis::new(action.clone(), 1.0).unwrap(),
    );
    for (name, record) in [
        ("noneq", run(alone, &action, 6, 6_000)),
        ("noneq+local", run(mixed, &action, 7, 5_000)),
    ] {
        let acc = record.acceptance_of("noneq");
        assert!(acc > 0.1, "{name}: acceptance {acc}");
        for ((a, b), what) in
            field_estimates(&record, V)
                .iter()
                .zip(&reference)
                .zip(["⟨φ²⟩", "χ", "S/|Λ|"])
        {
            assert_agree(a, b, &format!("{name} {what}"));
        }
    }
}

/// The free field, except that S is NaN where φ_0 > 1.
struct Broken(FreeField);

impl Action for Broken {
    fn lattice(&self) -> &Lattice {
        self.0.lattice()
    }

    fn action(&self, phi: &[f64]) -> f64 {
        if phi[0] > 1.0 {
            f64::NAN
        } else {
            self.0.action(phi)
        }
    }

    fn force(&self, phi: &[f64], out: &mut [f64]) {
        self.0.force(phi, out)
    }

    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        self.action(phi) - self.0.action(phi) + self.0.delta_local(phi, site, new)
    }
}

#[test]
fn zero_steps_are_refused_and_non_finite_work_is_unreliable() {
    let field = free(0.5);
    for (protocol, key) in [
        (local(0), "noneq_steps"),
        (
            NoneqProtocol {
                steps: 4,
                update: NoneqUpdate::Local { step_size: -1.0 },
            },
            "noneq_step_size",
        ),
        (
            NoneqProtocol {
                steps: 4,
                update: NoneqUpdate::Hmc {
                    tau: 1.0,
                    md_steps: 0,
                },
            },
            "md_steps",
        ),
    ] {
        let err = NoneqEvolution::new(field.clone(), 1.0, protocol)
            .err()
            .unwrap();
        assert!(err.to_string().contains(key), "{err}");
    }
    let err = NoneqEvolution::new(field.clone(), 0.0, local(4))
        .err()
        .unwrap();
    assert!(err.to_string().contains("noneq_start_m0sq"), "{err}");
    let mut evolution = NoneqEvolution::new(field, 1.0, local(4)).unwrap();
    assert!(noneq_estimate(&mut evolution, 10, 1, &mut []).is_err());
    let broken = Arc::new(Broken(
        FreeField::new(Lattice::hypercubic(2, L).unwrap(), 0.5).unwrap(),
    ));
    let mut evolution = NoneqEvolution::new(broken, 1.0, local(4)).unwrap();
    let est = noneq_estimate(&mut evolution, 200, 2, &mut [&mut phi2]).unwrap();
    assert!(!est.reliable);
    assert!(est.log_z.is_nan() && est.observables.is_empty());
    assert!(est.caveats[0].contains("non-finite"), "{:?}", est.caveats);
}
