//! Throughput of the pointwise transforms on a flow-sized batch (f32, 256 configurations
//! × 32 active sites): forward, inverse and backward of the affine family and the spline.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use latflow::flow::PointwiseTransform;
use latflow::flow::transform::{Additive, Affine, Rqs, Z2Affine};
use latflow::rng::rng_from_seed;
use rand::RngExt;

const SITES: usize = 256 * 32;

fn bench_transform(c: &mut Criterion, name: &str, t: &dyn PointwiseTransform<f32>) {
    let k = t.params_per_site();
    let mut rng = rng_from_seed(1);
    let v: Vec<f32> = (0..SITES).map(|_| rng.random_range(-4.0..4.0)).collect();
    let theta: Vec<f32> = (0..SITES * k)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let (mut y, mut ld) = (vec![0.0f32; SITES], vec![0.0f32; SITES]);
    let (mut back, mut ld_back) = (vec![0.0f32; SITES], vec![0.0f32; SITES]);
    let (gy, gld) = (vec![1.0f32; SITES], vec![0.5f32; SITES]);
    let (mut gv, mut gtheta) = (vec![0.0f32; SITES], vec![0.0f32; SITES * k]);
    t.forward(&v, &theta, &mut y, &mut ld);

    let mut group = c.benchmark_group(name);
    group.throughput(criterion::Throughput::Elements(SITES as u64));
    group.bench_function("forward", |b| {
        b.iter(|| t.forward(black_box(&v), black_box(&theta), &mut y, &mut ld))
    });
    group.bench_function("inverse", |b| {
        b.iter(|| t.inverse(black_box(&y), black_box(&theta), &mut back, &mut ld_back))
    });
    group.bench_function("backward", |b| {
        b.iter(|| {
            t.backward(
                black_box(&v),
                black_box(&theta),
                &gy,
                &gld,
                &mut gv,
                &mut gtheta,
            )
        })
    });
    group.finish();
}

fn transforms(c: &mut Criterion) {
    bench_transform(c, "additive", &Additive);
    bench_transform(c, "affine", &Affine);
    bench_transform(c, "z2_affine", &Z2Affine);
    bench_transform(c, "rqs_k8", &Rqs::default());
}

criterion_group!(benches, transforms);
criterion_main!(benches);
