//! The checkerboard sweep order of local Metropolis: the vectorised φ⁴ sweep against the
//! reference sweep through `delta_local` (same field, decisions and random stream), the free
//! field's exact ⟨φ²⟩, χ and ⟨S⟩/|Λ|, agreement with the sequential order on interacting φ⁴,
//! stationarity on the 2×2 free field, and odd extents refused (the cached action is checked
//! with the other orders' in tests/kernels.rs).
//! Statistical tolerances are 4σ of Γ-method errors.

mod common;

use std::sync::Arc;

use common::{assert_agree, assert_within, field_estimates, run_measured};
use latflow::action::{Action, Checkerboard, FreeField, Phi4, SweepTally};
use latflow::kernel::{LocalMetropolis, SweepOrder};
use latflow::rng::splitmix64;
use latflow::testing::balance::kernel_balance;
use latflow::{Lattice, SimRng, rng_from_seed};
use rand::{Rng, RngExt};

/// φ⁴ seen only through the required methods of `Action`, so that its checkerboard sweep
/// is the reference sweep.
struct ThroughDeltaLocal(Phi4);

impl Action for ThroughDeltaLocal {
    fn lattice(&self) -> &Lattice {
        self.0.lattice()
    }
    fn action(&self, phi: &[f64]) -> f64 {
        self.0.action(phi)
    }
    fn force(&self, phi: &[f64], out: &mut [f64]) {
        self.0.force(phi, out)
    }
    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        self.0.delta_local(phi, site, new)
    }
}

/// One checkerboard sweep of `action` from `phi0` with generator seed 7: the field, the
/// tally and the generator after it.
fn sweep<A: Action + ?Sized>(
    action: &A,
    phi0: &[f64],
    step_size: f64,
    hits: u32,
) -> (Vec<f64>, SweepTally, SimRng) {
    let mut board = Checkerboard::new(action.lattice()).unwrap();
    let mut phi = phi0.to_vec();
    let mut rng = rng_from_seed(7);
    let tally = action.checkerboard_sweep(&mut phi, &mut board, step_size, hits, &mut rng);
    (phi, tally, rng)
}

/// The fast sweep of `fast` and the reference sweep of `reference` (the same action) agree:
/// the same field to the bit, the same acceptances and random numbers used, and a summed ΔS
/// equal to the change of S to rounding.
fn assert_same_sweep<A: Action + ?Sized, B: Action>(
    fast: &A,
    reference: &B,
    phi0: &[f64],
    step_size: f64,
    hits: u32,
) -> SweepTally {
    let (phi_fast, tally_fast, mut rng_fast) = sweep(fast, phi0, step_size, hits);
    let (phi_ref, tally_ref, mut rng_ref) = sweep(reference, phi0, step_size, hits);
    let what = format!("{} with δ = {step_size}, {hits} hits", fast.lattice());
    assert_eq!(phi_fast, phi_ref, "{what}");
    assert_eq!(tally_fast.accepted, tally_ref.accepted, "{what}");
    assert_eq!(rng_fast.next_u64(), rng_ref.next_u64(), "{what}");
    let exact = fast.action(&phi_fast) - fast.action(phi0);
    let scale = 1e-11 * (fast.action(phi0).abs() + phi0.len() as f64);
    assert!(
        (tally_fast.delta_action - exact).abs() < scale
            && (tally_ref.delta_action - exact).abs() < scale,
        "{what}: ΔS summed {} (fast) and {} (reference), exact {exact}",
        tally_fast.delta_action,
        tally_ref.delta_action
    );
    tally_fast
}

fn random_field(volume: usize, seed: u64) -> Vec<f64> {
    let mut rng = rng_from_seed(seed);
    (0..volume)
        .map(|_| 2.4 * rng.random::<f64>() - 1.2)
        .collect()
}

#[test]
fn the_vectorised_phi4_sweep_is_the_reference_sweep() {
    // Half rows of 1, 2, 3, 4, 5, 9, 12 and 32 sites: chunks of 8, of 4, and padded ones.
    let shapes: [&[usize]; 9] = [
        &[2, 2],
        &[4, 2],
        &[4, 4],
        &[2, 6],
        &[8, 8],
        &[6, 10],
        &[16, 18],
        &[10, 24],
        &[64, 64],
    ];
    for (i, extents) in shapes.into_iter().enumerate() {
        let lattice = Lattice::new(extents).unwrap();
        let phi4 = Phi4::hopping(lattice.clone(), 0.576, 0.5).unwrap();
        let reference = ThroughDeltaLocal(phi4.clone());
        let phi0 = random_field(lattice.volume(), i as u64);
        for (step_size, hits) in [(1.0, 1), (0.7, 3), (3.0, 1)] {
            let tally = assert_same_sweep(&phi4, &reference, &phi0, step_size, hits);
            let total = hits * lattice.volume() as u32;
            if lattice.volume() >= 64 {
                assert!(
                    tally.accepted > total / 10 && tally.accepted < total * 9 / 10,
                    "{lattice}: {tally:?}"
                );
            }
        }
        // Through Arc<dyn Action> the pointee's vectorised sweep runs.
        let shared: Arc<dyn Action> = Arc::new(phi4.clone());
        assert_same_sweep(&*shared, &reference, &phi0, 1.0, 1);
    }
}

/// Proposals so wide that ΔS passes 708 at many sites, and a field with a NaN: the lanes the
/// vectorised test leaves to the library's exponential are decided as the reference does.
#[test]
fn lanes_beyond_the_vectorised_exponential_are_decided_exactly() {
    let lattice = Lattice::new(&[8, 16]).unwrap();
    let phi4 = Phi4::hopping(lattice.clone(), 0.5, 0.5).unwrap();
    let reference = ThroughDeltaLocal(phi4.clone());
    let phi0 = random_field(lattice.volume(), 11);
    let tally = assert_same_sweep(&phi4, &reference, &phi0, 40.0, 2);
    assert!(tally.accepted > 0, "{tally:?}");
    let mut with_nan = phi0.clone();
    with_nan[37] = f64::NAN;
    let (fast, _, _) = sweep(&phi4, &with_nan, 1.0, 1);
    let (slow, _, _) = sweep(&reference, &with_nan, 1.0, 1);
    let bits = |phi: &[f64]| phi.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&fast), bits(&slow));
}

#[test]
fn other_dimensions_and_the_free_field_use_the_same_stream() {
    let cube = Lattice::new(&[4, 2, 6]).unwrap();
    let phi4 = Phi4::hopping(cube.clone(), 0.3, 0.7).unwrap();
    assert_same_sweep(
        &phi4,
        &ThroughDeltaLocal(phi4.clone()),
        &random_field(cube.volume(), 3),
        1.0,
        2,
    );
    let square = Lattice::new(&[6, 8]).unwrap();
    let free = FreeField::new(square.clone(), 0.4).unwrap();
    assert_same_sweep(
        &free,
        &ThroughDeltaLocal(free.as_phi4().clone()),
        &random_field(square.volume(), 4),
        1.0,
        1,
    );
}

/// The reference sweep is itself the order the documentation describes: 32 draws of the
/// chain's generator seed eight xoshiro256++ lanes (SplitMix64 of each draw, state word i of
/// lane j from draw 8i + j); then even sites, line by line, a block of eight uniforms (one
/// word per lane, its top 52 bits as a mantissa in [1, 2), minus 1) for a line's proposals
/// before a block for its tests.
#[test]
fn the_reference_sweep_follows_the_documented_order() {
    let lattice = Lattice::new(&[4, 6]).unwrap();
    let action = ThroughDeltaLocal(Phi4::hopping(lattice.clone(), 0.4, 0.6).unwrap());
    let phi0 = random_field(24, 5);
    let (phi, tally, mut rng_after) = sweep(&action, &phi0, 1.0, 1);
    let mut expected = phi0.clone();
    let mut rng = rng_from_seed(7);
    let mut lanes: Vec<[u64; 4]> = vec![[0; 4]; 8];
    for i in 0..4 {
        for lane in lanes.iter_mut() {
            lane[i] = splitmix64(rng.next_u64());
        }
    }
    let mut block = || -> Vec<f64> {
        lanes
            .iter_mut()
            .map(|s| {
                let word = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
                let t = s[1] << 17;
                s[2] ^= s[0];
                s[3] ^= s[1];
                s[1] ^= s[2];
                s[0] ^= s[3];
                s[2] ^= t;
                s[3] = s[3].rotate_left(45);
                f64::from_bits((word >> 12) | 0x3FF0_0000_0000_0000) - 1.0
            })
            .collect()
    };
    let mut accepted = 0;
    for parity in 0..2 {
        for row in 0..4 {
            let u = block();
            let v = block();
            for k in 0..3 {
                let column = 2 * k + (row + parity) % 2;
                let site = row * 6 + column;
                let new = expected[site] + (2.0 * u[k] - 1.0);
                let delta = action.delta_local(&expected, site, new);
                if v[k] < (-delta).exp() {
                    expected[site] = new;
                    accepted += 1;
                }
            }
        }
    }
    assert_eq!(phi, expected);
    assert_eq!(tally.accepted, accepted);
    assert_eq!(rng_after.next_u64(), rng.next_u64());
}

fn checkerboard<A: Action>(action: &Arc<A>, hits: u32) -> LocalMetropolis<A> {
    LocalMetropolis::new(action.clone(), 1.0)
        .unwrap()
        .with_order(SweepOrder::Checkerboard)
        .unwrap()
        .with_hits(hits)
        .unwrap()
}

#[test]
fn checkerboard_sweeps_reproduce_the_free_field() {
    for (extents, m0sq, hits, seed) in [(&[8, 8][..], 0.5, 1, 1), (&[6, 10][..], 0.2, 2, 2)] {
        let field = Arc::new(FreeField::new(Lattice::new(extents).unwrap(), m0sq).unwrap());
        let record = run_measured(checkerboard(&field, hits), &field, seed, 1_000, 60_000);
        assert_eq!(
            record.moves[0].proposed,
            hits * field.lattice().volume() as u32
        );
        let [phi2, chi, action_density] = field_estimates(&record, field.lattice().volume());
        let what = format!("{extents:?} m0² = {m0sq}");
        assert_within(&phi2, field.propagator()[0], &format!("{what} ⟨φ²⟩"));
        assert_within(&chi, field.susceptibility(), &format!("{what} χ"));
        assert_within(&action_density, 0.5, &format!("{what} S/|Λ|"));
    }
}

/// Interacting φ⁴ at the L = 8 reference coupling: the checkerboard and the sequential
/// order give the same ⟨φ²⟩, χ and S/|Λ|.
#[test]
fn checkerboard_and_sequential_sweeps_agree_on_phi4() {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 8).unwrap(), 0.576, 0.5).unwrap());
    let sequential = LocalMetropolis::new(action.clone(), 1.0).unwrap();
    let a = field_estimates(&run_measured(sequential, &action, 3, 1_000, 100_000), 64);
    let b = field_estimates(
        &run_measured(checkerboard(&action, 1), &action, 4, 1_000, 100_000),
        64,
    );
    for ((x, y), name) in a.iter().zip(&b).zip(["⟨φ²⟩", "χ", "S/|Λ|"]) {
        assert_agree(x, y, name);
    }
    // Not trivially equal: the two chains are different.
    assert_ne!(a[0].mean, b[0].mean);
}

/// Stationarity of the real step on the 2×2 free field: after one checkerboard sweep from
/// exact samples, the magnetisation is distributed as in exact samples. (A checkerboard
/// sweep is not reversible, so only stationarity is tested; a sweep aimed at another mass
/// fails it.)
#[test]
fn a_checkerboard_sweep_leaves_the_free_field_invariant() {
    let field =
        |m0sq: f64| Arc::new(FreeField::new(Lattice::hypercubic(2, 2).unwrap(), m0sq).unwrap());
    let edges: Vec<f64> = (-6..=6).map(|k| 0.25 * k as f64).collect();
    let magnetisation = |phi: &[f64]| phi.iter().sum::<f64>() / phi.len() as f64;
    let check = |kernel_mass: f64, seed| {
        let target = field(0.5);
        let mut sampler = target.sampler();
        kernel_balance(
            &mut checkerboard(&field(kernel_mass), 1),
            &*target,
            &mut |rng, phi| sampler.sample_into(rng, phi),
            &magnetisation,
            &edges,
            20_000,
            seed,
        )
        .unwrap()
    };
    let right = check(0.5, 1);
    assert!(right.moved > 0.3, "{right:?}");
    assert!(right.stationarity.dof >= 10, "{right:?}");
    assert!(right.stationarity.z() < 4.0, "{right:?}");
    let wrong = check(1.5, 2);
    assert!(wrong.stationarity.z() > 4.0, "{wrong:?}");
}

#[test]
fn odd_extents_are_refused_naming_the_extents() {
    let action = Arc::new(Phi4::hopping(Lattice::new(&[7, 8]).unwrap(), 0.5, 0.5).unwrap());
    let err = LocalMetropolis::new(action, 1.0)
        .unwrap()
        .with_order(SweepOrder::Checkerboard)
        .err()
        .expect("7x8 cannot be checkerboarded");
    let text = err.to_string();
    assert!(
        text.contains("sweep_order") && text.contains("7x8"),
        "{text}"
    );
}
