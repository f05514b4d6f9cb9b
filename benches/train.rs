//! Throughput (configurations/s) of one complete training step of the seed recipe
//! (docs/reference.md#training-recipes: H = |Λ|, K = 8, the study's batch and block counts)
//! at L = 6, 8, 10 on φ⁴ at the study's β: latent draw, forward + backward with the
//! action's force, loss statistics and the Adam update; once with the total gradient
//! (`train_step`) and once with the path gradient (`train_step_path`, which also carries
//! the score through every layer); and one step of the scalable default method at L = 12,
//! 16 and 32 (`train_step_scalable`).

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use latflow::action::Phi4;
use latflow::flow::{FlowConfig, FlowModel};
use latflow::train::{GradientEstimator, TrainConfig, Trainer};
use latflow::{Action, Lattice};

/// (L, β, batch, affine blocks, η0) of the seed study.
const SIZES: [(usize, f64, usize, usize, f64); 3] = [
    (6, 0.537, 300, 2, 0.02),
    (8, 0.576, 500, 2, 0.01),
    (10, 0.601, 1250, 3, 0.005),
];

fn bench_train_step(c: &mut Criterion) {
    for (name, gradient) in [
        ("train_step", GradientEstimator::Total),
        ("train_step_path", GradientEstimator::Path),
    ] {
        bench_steps(c, name, gradient);
    }
    bench_scalable_steps(c);
}

/// One training step of the scalable default method (`run::scalable_method`: free-field
/// layer, convolutional Z2-affine and spline blocks, path gradient, batch 256) at L = 12, 16
/// and 32 on the ξ ≈ L/4 line (docs/reference.md).
fn bench_scalable_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step_scalable");
    for (l, beta) in [(12, 0.616), (16, 0.634), (32, 0.6614)] {
        let lattice = Lattice::hypercubic(2, l).unwrap();
        let (recipe, mut train) = latflow::run::scalable_method(&lattice);
        let model = FlowModel::new(&recipe.build(&lattice).unwrap(), &lattice, 0).unwrap();
        let action = Arc::new(Phi4::hopping(lattice, beta, 0.5).unwrap());
        train.iterations = 1_000_000;
        train.until_acceptance = None;
        let batch = train.batch;
        let mut trainer = Trainer::new(model, action, train).unwrap();
        trainer.step().unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("L{l}_batch{batch}"), |b| {
            b.iter_batched(|| (), |()| trainer.step().unwrap(), BatchSize::SmallInput)
        });
    }
    group.finish();
}

fn bench_steps(c: &mut Criterion, name: &str, gradient: GradientEstimator) {
    let mut group = c.benchmark_group(name);
    for (l, beta, batch, blocks, lr) in SIZES {
        let action =
            Arc::new(Phi4::hopping(Lattice::hypercubic(2, l).unwrap(), beta, 0.5).unwrap());
        let config = FlowConfig::seed(action.lattice().volume(), blocks, 8).unwrap();
        let model = FlowModel::new(&config, action.lattice(), 0).unwrap();
        // Far more iterations than criterion runs (and within the trainer's work limit), so
        // every measured step is a real one.
        let mut train = TrainConfig::new(batch, 1_000_000, lr);
        train.gradient = gradient;
        let mut trainer = Trainer::new(model, action, train).unwrap();
        trainer.step().unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("L{l}_batch{batch}"), |b| {
            b.iter_batched(|| (), |()| trainer.step().unwrap(), BatchSize::SmallInput)
        });
    }
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
