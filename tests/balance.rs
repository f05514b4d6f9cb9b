//! Detailed balance as properties over random couplings, fields and step sizes:
//! local Metropolis on pairs of states differing at one site, HMC through its
//! flip∘integrate involution (reversible to 1e−10 and volume preserving).

use std::sync::Arc;

use latflow::Lattice;
use latflow::action::{Action, Phi4};
use latflow::kernel::{Hmc, Integrator, LocalMetropolis};
use latflow::testing::balance::{hmc_balance, hmc_log_jacobian, local_metropolis_balance};
use latflow::testing::strategies::proptest_config;
use proptest::prelude::*;

fn lattice_strategy() -> impl Strategy<Value = Lattice> {
    prop_oneof![
        (2usize..6, 2usize..6).prop_map(|(a, b)| Lattice::new(&[a, b]).unwrap()),
        (2usize..4).prop_map(|l| Lattice::hypercubic(3, l).unwrap()),
    ]
}

fn phi4_strategy() -> impl Strategy<Value = Phi4> {
    (lattice_strategy(), 0.0f64..1.0, 0.01f64..3.0)
        .prop_map(|(lat, beta, lambda)| Phi4::hopping(lat, beta, lambda).unwrap())
}

fn field_of(values: &[f64], volume: usize) -> Vec<f64> {
    values.iter().cycle().take(volume).copied().collect()
}

proptest! {
    #![proptest_config(proptest_config(200, "proptest-regressions/balance.txt"))]

    #[test]
    fn local_metropolis_satisfies_detailed_balance(
        action in phi4_strategy(),
        values in prop::collection::vec(-2.5f64..2.5, 64),
        step_size in 0.05f64..3.0,
        site_pick in 0usize..1000,
        u in -0.999f64..0.999,
    ) {
        let v = action.lattice().volume();
        let phi = field_of(&values, v);
        let site = site_pick % v;
        let new = phi[site] + step_size * u;
        let kernel = LocalMetropolis::new(Arc::new(action), step_size).unwrap();
        let check = local_metropolis_balance(&kernel, &phi, site, new).unwrap();
        prop_assert!(check.log_forward.is_finite());
        prop_assert!(check.holds(1e-12), "{check:?}");
    }

    #[test]
    fn hmc_satisfies_detailed_balance_through_an_involution(
        action in phi4_strategy(),
        values in prop::collection::vec(-2.0f64..2.0, 64),
        momenta in prop::collection::vec(-2.5f64..2.5, 64),
        tau in 0.1f64..1.5,
        n_steps in 1usize..12,
        omelyan in any::<bool>(),
    ) {
        let v = action.lattice().volume();
        let (phi, pi) = (field_of(&values, v), field_of(&momenta, v));
        let integrator = if omelyan { Integrator::Omelyan } else { Integrator::Leapfrog };
        let hmc = Hmc::new(Arc::new(action), tau, n_steps).unwrap().with_integrator(integrator);
        let check = hmc_balance(&hmc, &phi, &pi, n_steps).unwrap();
        // Trajectories whose energy error is huge (an unstable step size) are rejected by
        // any chain and amplify rounding beyond 1e−10; balance is checked where it matters.
        prop_assume!(check.delta_h.abs() < 50.0);
        prop_assert!(check.involution_error < 1e-10, "{check:?}");
        prop_assert!(check.balance.holds(1e-10), "{check:?}");
    }
}

proptest! {
    #![proptest_config(proptest_config(24, "proptest-regressions/balance.txt"))]

    #[test]
    fn hmc_map_preserves_phase_space_volume(
        beta in 0.0f64..1.0,
        lambda in 0.01f64..2.0,
        values in prop::collection::vec(-1.5f64..1.5, 9),
        momenta in prop::collection::vec(-1.5f64..1.5, 9),
        tau in 0.1f64..1.0,
        n_steps in 1usize..8,
        omelyan in any::<bool>(),
    ) {
        let action = Phi4::hopping(Lattice::new(&[3, 3]).unwrap(), beta, lambda).unwrap();
        let integrator = if omelyan { Integrator::Omelyan } else { Integrator::Leapfrog };
        let hmc = Hmc::new(Arc::new(action), tau, n_steps).unwrap().with_integrator(integrator);
        // As for balance: only trajectories a chain could accept.
        let check = hmc_balance(&hmc, &values, &momenta, n_steps).unwrap();
        prop_assume!(check.delta_h.abs() < 50.0);
        let log_det = hmc_log_jacobian(&hmc, &values, &momenta, n_steps, 1e-4).unwrap();
        // Fourth-order differences with h = 1e−4 leave O(h⁴) truncation and ~1e−16/h
        // rounding per entry: log|det| of an 18×18 Jacobian is zero to well below 1e−8.
        prop_assert!(log_det.abs() < 1e-8, "log|det J| = {log_det}");
    }
}
