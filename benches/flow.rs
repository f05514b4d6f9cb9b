//! Throughput (configurations/s) of the seed recipe at the sizes of the seed study and of the
//! convolutional flows (the curriculum's architecture and the scalable default method's
//! flow): forward pass alone, and forward + backward with a reverse-KL gradient seed (the
//! work of one training step apart from the optimiser update).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use latflow::flow::{ChunkSeed, Flow, FlowConfig, FlowModel, TransformKind, Workspace};
use latflow::{Lattice, rng_from_seed};
use ndarray::Array2;
use rand_distr::{Distribution, StandardNormal};

/// (L, batch, affine blocks) of the seed study; H = L².
const SIZES: [(usize, usize, usize); 4] = [(6, 300, 2), (8, 500, 2), (10, 1250, 3), (12, 4000, 3)];
const LAMBDA: f64 = 0.5;
const BETA: f64 = 0.6;

fn latent(n: usize, v: usize) -> Array2<f32> {
    let mut rng = rng_from_seed(1);
    Array2::from_shape_fn((n, v), |_| {
        let x: f64 = StandardNormal.sample(&mut rng);
        x as f32
    })
}

fn bench_flow(c: &mut Criterion) {
    for (l, batch, blocks) in SIZES {
        let lattice = Lattice::new(&[l, l]).unwrap();
        let v = lattice.volume();
        let config = FlowConfig::seed(v, blocks, 8).unwrap();
        let model = FlowModel::new(&config, &lattice, 0).unwrap();
        let z = latent(batch, v);
        let fwd = lattice.fwd_table().to_vec();
        let bwd = lattice.bwd_table().to_vec();
        let n = batch as f64;
        // ∂L/∂φ = ∂S/∂φ / N for the hopping φ⁴ action, ∂L/∂logdet = −1/N.
        let seed = |mut c: ChunkSeed<f32>| {
            for (row, mut g) in c.phi.outer_iter().zip(c.grad_phi.outer_iter_mut()) {
                for x in 0..v {
                    let p = row[x] as f64;
                    let nb: f64 = (0..2)
                        .map(|mu| (row[fwd[2 * x + mu]] + row[bwd[2 * x + mu]]) as f64)
                        .sum();
                    let force = -BETA * nb + 2.0 * p + 4.0 * LAMBDA * p * (p * p - 1.0);
                    g[x] = (force / n) as f32;
                }
            }
            c.grad_logdet.fill(-1.0 / n as f32);
        };

        let mut group = c.benchmark_group(format!("seed_L{l}_batch{batch}"));
        group.throughput(Throughput::Elements(batch as u64));
        group.sample_size(10);
        group.bench_function("forward", |b| {
            b.iter(|| black_box(model.forward(black_box(z.view()))))
        });
        let mut ws = Workspace::<f32>::per_thread();
        let mut grad = vec![0.0f32; model.n_params()];
        group.bench_function("forward_backward", |b| {
            b.iter(|| {
                model
                    .forward_backward(black_box(z.view()), &mut ws, seed, &mut grad)
                    .unwrap();
                black_box(&grad);
            })
        });
        group.finish();
    }
}

/// The convolutional flows: the curriculum's architecture (4 Z2-affine blocks, nets of two
/// hidden layers of 16 channels, 3 × 3 kernels; 41,472 parameters) at L = 10, and the
/// scalable default method's flow (free-field layer, 2 Z2-affine blocks, a spline block,
/// the same nets) at L = 10, 16 and 32, batches of 256.
fn bench_conv(c: &mut Criterion) {
    let curriculum = FlowConfig::convolutional(TransformKind::Z2Affine, 4, &[16, 16], 3);
    let mut cases = vec![("curriculum_conv", 10, curriculum)];
    for l in [10, 16, 32] {
        let lattice = Lattice::new(&[l, l]).unwrap();
        let (recipe, _) = latflow::run::scalable_method(&lattice);
        cases.push(("scalable_default", l, recipe.build(&lattice).unwrap()));
    }
    for (name, l, config) in cases {
        let lattice = Lattice::new(&[l, l]).unwrap();
        let v = lattice.volume();
        let model = FlowModel::new(&config, &lattice, 0).unwrap();
        let batch = 256;
        let z = latent(batch, v);
        let n = batch as f32;
        let seed = |mut c: ChunkSeed<f32>| {
            c.grad_phi.zip_mut_with(&c.phi, |g, &p| *g = p / n);
            c.grad_logdet.fill(-1.0 / n);
        };
        let mut group = c.benchmark_group(format!("{name}_L{l}_batch{batch}"));
        group.throughput(Throughput::Elements(batch as u64));
        group.sample_size(10);
        group.bench_function("forward", |b| {
            b.iter(|| black_box(model.forward(black_box(z.view()))))
        });
        let mut ws = Workspace::<f32>::per_thread();
        let mut grad = vec![0.0f32; model.n_params()];
        group.bench_function("forward_backward", |b| {
            b.iter(|| {
                model
                    .forward_backward(black_box(z.view()), &mut ws, seed, &mut grad)
                    .unwrap();
                black_box(&grad);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_flow, bench_conv);
criterion_main!(benches);
