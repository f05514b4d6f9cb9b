//! Per-configuration cost of the two-point function G(y) by FFT (expected O(|Λ| log |Λ|):
//! compare the time per site across L = 16..128), and of the zero-momentum correlator Ĝ(t)
//! on a 64×64 lattice.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use latflow::Lattice;
use latflow::observable::{Observable, TwoPoint, ZeroMomentumCorrelator};

fn field(volume: usize) -> Vec<f64> {
    (0..volume).map(|i| ((i as f64) * 0.618).sin()).collect()
}

fn two_point(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_point_fft");
    for l in [16usize, 32, 64, 128] {
        let lattice = Lattice::new(&[l, l]).expect("valid lattice");
        let phi = field(lattice.volume());
        let mut g = TwoPoint::position(&lattice);
        let mut out = vec![0.0; g.components()];
        group.throughput(Throughput::Elements(lattice.volume() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{l}x{l}")),
            &l,
            |b, _| b.iter(|| g.measure(black_box(&phi), black_box(&mut out))),
        );
    }
    group.finish();
}

fn zero_momentum(c: &mut Criterion) {
    let lattice = Lattice::new(&[64, 64]).expect("valid lattice");
    let phi = field(lattice.volume());
    let mut g = ZeroMomentumCorrelator::new(&lattice).expect("hypercubic lattice");
    let mut out = vec![0.0; g.components()];
    c.bench_function("zero_momentum_64x64", |b| {
        b.iter(|| g.measure(black_box(&phi), black_box(&mut out)))
    });
}

criterion_group!(benches, two_point, zero_momentum);
criterion_main!(benches);
