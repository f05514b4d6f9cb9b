//! Classic samplers on 2D φ⁴ (β = 0.576, λ = 0.5) at L = 8, 16, 64: one local Metropolis
//! sweep in sequential and in checkerboard order (throughput in site updates), one HMC
//! trajectory and one bare leapfrog step (throughput in site·steps), and the force alone
//! (throughput in sites).
//!
//! `local_sweep/L`, `hmc_leapfrog/L` and `force/force/L` do the same work as the loops of
//! benches/c_reference/phi4.c, which prints its rates under these names
//! (benches/compare_c.sh puts the two side by side; `local_sweep_checkerboard/L` is
//! compared with the C program's `local_sweep/L`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use latflow::action::{Action, Phi4};
use latflow::kernel::{Chain, Hmc, LocalMetropolis, SweepOrder};
use latflow::{Lattice, Proposal, State, rng_from_seed};
use rand::RngExt;
use rand_distr::StandardNormal;

const SIZES: [usize; 3] = [8, 16, 64];
const HMC_STEPS: usize = 10;

fn phi4(l: usize) -> Arc<Phi4> {
    Arc::new(Phi4::hopping(Lattice::hypercubic(2, l).unwrap(), 0.576, 0.5).unwrap())
}

/// A configuration thermalised by local sweeps, so that acceptances are realistic.
fn thermalised(action: &Arc<Phi4>) -> State {
    let kernel = LocalMetropolis::new(action.clone(), 1.0).unwrap();
    let mut chain = Chain::new(kernel, State::zero(&**action), 1);
    chain.thermalise(200);
    chain.into_parts().1
}

fn local_sweep(c: &mut Criterion) {
    local_sweeps(c, "local_sweep", SweepOrder::Sequential);
}

/// One checkerboard sweep (the vectorised φ⁴ path), the same work as `local_sweep/L`.
fn local_sweep_checkerboard(c: &mut Criterion) {
    local_sweeps(c, "local_sweep_checkerboard", SweepOrder::Checkerboard);
}

/// One local Metropolis sweep in `order` from a thermalised configuration, as the group
/// `name`.
fn local_sweeps(c: &mut Criterion, name: &str, order: SweepOrder) {
    let mut group = c.benchmark_group(name);
    for l in SIZES {
        let action = phi4(l);
        let mut state = thermalised(&action);
        let mut kernel = LocalMetropolis::new(action.clone(), 1.0)
            .unwrap()
            .with_order(order)
            .unwrap();
        let mut rng = rng_from_seed(2);
        let mut moves = Vec::with_capacity(1);
        group.throughput(Throughput::Elements((l * l) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(l), &l, |b, _| {
            b.iter(|| {
                moves.clear();
                kernel.step(black_box(&mut state), &mut rng, &mut moves);
            })
        });
    }
    group.finish();
}

fn hmc_trajectory(c: &mut Criterion) {
    let mut group = c.benchmark_group("hmc_trajectory");
    for l in SIZES {
        let action = phi4(l);
        let mut state = thermalised(&action);
        let mut kernel = Hmc::new(action.clone(), 1.0, HMC_STEPS)
            .unwrap()
            .with_randomised_length(false);
        let mut rng = rng_from_seed(3);
        let mut moves = Vec::with_capacity(1);
        group.throughput(Throughput::Elements((l * l * HMC_STEPS) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(l), &l, |b, _| {
            b.iter(|| {
                moves.clear();
                kernel.step(black_box(&mut state), &mut rng, &mut moves);
            })
        });
    }
    group.finish();
}

fn hmc_leapfrog(c: &mut Criterion) {
    let mut group = c.benchmark_group("hmc_leapfrog");
    for l in SIZES {
        let action = phi4(l);
        let state = thermalised(&action);
        let kernel = Hmc::new(action.clone(), 1.0, HMC_STEPS).unwrap();
        let mut phi = state.phi().to_vec();
        let mut rng = rng_from_seed(4);
        let mut momentum: Vec<f64> = (0..l * l).map(|_| rng.sample(StandardNormal)).collect();
        let mut force = vec![0.0; l * l];
        group.throughput(Throughput::Elements((l * l) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(l), &l, |b, _| {
            b.iter(|| kernel.leapfrog_step(black_box(&mut phi), &mut momentum, &mut force))
        });
    }
    group.finish();
}

fn force(c: &mut Criterion) {
    let mut group = c.benchmark_group("force");
    for l in SIZES {
        let action = phi4(l);
        let state = thermalised(&action);
        let mut out = vec![0.0; l * l];
        group.throughput(Throughput::Elements((l * l) as u64));
        group.bench_with_input(BenchmarkId::new("force", l), &l, |b, _| {
            b.iter(|| action.force(black_box(state.phi()), &mut out))
        });
        group.bench_with_input(BenchmarkId::new("action_and_force", l), &l, |b, _| {
            b.iter(|| black_box(action.action_and_force(black_box(state.phi()), &mut out)))
        });
    }
    group.finish();
}

criterion_group!(
    samplers,
    local_sweep,
    local_sweep_checkerboard,
    hmc_trajectory,
    hmc_leapfrog,
    force
);
criterion_main!(samplers);
