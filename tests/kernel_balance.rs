//! The statistical detailed-balance check of a kernel's real step on a 2×2 free field, whose exact
//! sampler provides the stationary starting states: correct kernels pass, a kernel
//! aimed at another distribution and one missing its Hastings correction fail.

use std::sync::Arc;

use latflow::action::FreeField;
use latflow::kernel::{Hmc, KernelExpr, LocalMetropolis, Mixture, MoveDetail, SweepOrder};
use latflow::testing::balance::{KernelBalanceCheck, kernel_balance};
use latflow::{Lattice, MoveInfo, Proposal, SimRng, State};
use rand::RngExt;

const SAMPLES: usize = 20_000;

fn field(m0sq: f64) -> Arc<FreeField> {
    Arc::new(FreeField::new(Lattice::hypercubic(2, 2).unwrap(), m0sq).unwrap())
}

/// Bin edges for m = M/|Λ| (standard deviation 1/(2 m0) on the 2×2 lattice).
fn edges() -> Vec<f64> {
    (-6..=6).map(|k| 0.25 * k as f64).collect()
}

fn check<K: Proposal + ?Sized>(
    kernel: &mut K,
    target: &FreeField,
    seed: u64,
) -> KernelBalanceCheck {
    let mut sampler = target.sampler();
    let magnetisation = |phi: &[f64]| phi.iter().sum::<f64>() / phi.len() as f64;
    kernel_balance(
        kernel,
        target,
        &mut |rng, phi| sampler.sample_into(rng, phi),
        &magnetisation,
        &edges(),
        SAMPLES,
        seed,
    )
    .unwrap()
}

#[test]
fn reversible_kernels_pass() {
    let target = field(0.5);
    let local = || {
        LocalMetropolis::new(target.clone(), 1.0)
            .unwrap()
            .with_order(SweepOrder::Random)
            .unwrap()
    };
    let hmc = || Hmc::new(target.clone(), 1.0, 4).unwrap();
    let mut mixture = Mixture::new(local(), hmc(), 0.4).unwrap();
    let mut built = KernelExpr::parse("mix(1: local, 2: hmc)")
        .unwrap()
        .build(&mut |name, _| -> latflow::Result<Box<dyn Proposal>> {
            Ok(match name {
                "local" => Box::new(local()),
                _ => Box::new(hmc()),
            })
        })
        .unwrap();
    let checks = [
        ("local", check(&mut local(), &target, 1)),
        ("hmc", check(&mut hmc(), &target, 2)),
        ("mixture", check(&mut mixture, &target, 3)),
        ("built mixture", check(&mut built, &target, 4)),
    ];
    for (name, c) in checks {
        assert!(c.moved > 0.3, "{name}: {c:?}");
        assert!(
            c.symmetry.dof >= 20 && c.stationarity.dof >= 10,
            "{name}: {c:?}"
        );
        assert!(c.holds(4.0), "{name}: {c:?}");
    }
}

#[test]
fn a_kernel_for_another_distribution_fails() {
    // Local sweeps that leave m0² = 0.5 invariant, started from m0² = 1 samples.
    let mut kernel = LocalMetropolis::new(field(0.5), 1.0)
        .unwrap()
        .with_order(SweepOrder::Random)
        .unwrap();
    let c = check(&mut kernel, &field(1.0), 5);
    assert!(c.stationarity.z() > 4.0, "{c:?}");
    assert!(c.symmetry.z() > 4.0, "{c:?}");
    assert!(!c.holds(4.0));
}

/// A user's kernel: one random site moved by δ·(u + 0.2), u ~ U(−1, 1), accepted with
/// min(1, e^{−ΔS}) — the proposal is not symmetric, and the Hastings factor is missing.
struct DriftingSite {
    action: Arc<FreeField>,
}

impl Proposal for DriftingSite {
    fn name(&self) -> String {
        "drifting site".into()
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        use latflow::Action;
        let site = rng.random_range(0..state.phi().len());
        let new = state.phi()[site] + 1.0 * (2.0 * rng.random::<f64>() - 1.0 + 0.2);
        let delta = self.action.delta_local(state.phi(), site, new);
        let accept = delta <= 0.0 || rng.random::<f64>() < (-delta).exp();
        if accept {
            state.change(|phi, s| {
                phi[site] = new;
                *s += delta;
            });
        }
        moves.push(MoveInfo {
            kernel: "drift".into(),
            proposed: 1,
            accepted: u32::from(accept),
            detail: MoveDetail::Metropolis {
                log_acceptance_ratio: -delta,
            },
        });
    }
}

#[test]
fn a_kernel_without_its_hastings_factor_fails() {
    let target = field(0.5);
    let mut kernel = DriftingSite {
        action: target.clone(),
    };
    let c = check(&mut kernel, &target, 6);
    assert!(c.symmetry.z() > 4.0, "{c:?}");
    assert!(!c.holds(4.0));
}

#[test]
fn bad_bins_are_refused() {
    let target = field(0.5);
    let mut kernel = Hmc::new(target.clone(), 1.0, 4).unwrap();
    let mut sampler = target.sampler();
    for edges in [vec![], vec![0.0, 0.0], vec![1.0, f64::NAN]] {
        let result = kernel_balance(
            &mut kernel,
            &*target,
            &mut |rng, phi| sampler.sample_into(rng, phi),
            &|phi: &[f64]| phi[0],
            &edges,
            10,
            1,
        );
        assert!(result.is_err(), "{edges:?}");
    }
}
