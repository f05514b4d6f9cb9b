//! Convolutional flows on the direct convolution kernels: a training step allocates nothing
//! once its buffers exist, and the f32 pass (the 512-bit kernels where the processor has
//! them) agrees with the f64 one.

use latflow::flow::{ChunkSeed, Flow, FlowConfig, FlowModel, TransformKind, Workspace};
use latflow::testing::alloc::{CountingAllocator, allocations_on_this_thread};
use latflow::{Lattice, rng_from_seed};
use ndarray::Array2;
use rand_distr::{Distribution, StandardNormal};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn normal_batch(n: usize, v: usize, seed: u64) -> Array2<f32> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_fn((n, v), |_| {
        let x: f64 = StandardNormal.sample(&mut rng);
        x as f32
    })
}

/// The curriculum's convolutional flow (Z2-affine blocks, two hidden layers of 16
/// channels, 3 × 3) with one block.
fn conv_model(l: usize) -> FlowModel {
    let config = FlowConfig::convolutional(TransformKind::Z2Affine, 1, &[16, 16], 3);
    FlowModel::new(&config, &Lattice::new(&[l, l]).unwrap(), 5).unwrap()
}

/// Where the processor runs the 512-bit kernels, a convolutional flow's training step
/// allocates nothing once its workspace and the kernels' thread-local buffers have seen a
/// batch of this size (elsewhere the portable kernels allocate nothing either).
#[test]
fn the_steady_state_training_step_of_a_convolutional_flow_does_not_allocate() {
    let model = conv_model(6);
    let z = normal_batch(24, 36, 1);
    let seed = |mut c: ChunkSeed<f32>| {
        c.grad_phi.zip_mut_with(&c.phi, |g, &p| *g = p / 24.0);
        c.grad_logdet.fill(-1.0 / 24.0);
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let per_step = pool.install(|| {
        let mut ws = Workspace::<f32>::new(1);
        let mut grad = vec![0.0f32; model.n_params()];
        model
            .forward_backward(z.view(), &mut ws, seed, &mut grad)
            .unwrap();
        let before = allocations_on_this_thread();
        for _ in 0..3 {
            model
                .forward_backward(z.view(), &mut ws, seed, &mut grad)
                .unwrap();
        }
        allocations_on_this_thread() - before
    });
    assert_eq!(per_step, 0);
}

/// The scalable family in full (free-field layer, convolutional Z2-affine blocks in one
/// coarse level, a convolutional spline block): the training step with the total and with
/// the path gradient, and the density of given configurations, allocate nothing in their
/// steady state (no dense layer, so no matrix product of the `gemm` crate either).
#[test]
fn the_steady_state_passes_of_the_scalable_family_do_not_allocate() {
    let lattice = Lattice::new(&[8, 8]).unwrap();
    let config = latflow::flow::ConvFamily {
        levels: 1,
        blocks: 1,
        refine_blocks: 1,
        channels: vec![4, 4],
        kernel: 3,
        spline: Some(4),
        free_field: Some(latflow::flow::FreeFieldConfig::classes(None)),
    }
    .config()
    .unwrap();
    let model = FlowModel::new(&config, &lattice, 3).unwrap();
    let z = normal_batch(16, 64, 4);
    let seed = |mut c: ChunkSeed<f32>| {
        c.grad_phi.zip_mut_with(&c.phi, |g, &p| *g = p / 16.0);
        if let Some(score) = c.score {
            c.grad_phi.zip_mut_with(&score, |g, &w| *g += w / 16.0);
        } else {
            c.grad_logdet.fill(-1.0 / 16.0);
        }
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let counts = pool.install(|| {
        let mut ws = Workspace::<f32>::new(1);
        let mut grad = vec![0.0f32; model.n_params()];
        let mut density = ndarray::Array1::zeros(16);
        let count = |f: &mut dyn FnMut()| {
            f();
            let before = allocations_on_this_thread();
            f();
            f();
            allocations_on_this_thread() - before
        };
        let total = count(&mut || {
            model
                .forward_backward(z.view(), &mut ws, seed, &mut grad)
                .unwrap();
        });
        let path = count(&mut || {
            model
                .forward_backward_scored(z.view(), &mut ws, seed, &mut grad)
                .unwrap();
        });
        let inverse = count(&mut || {
            model
                .log_density_in(z.view(), &mut ws, density.view_mut())
                .unwrap();
        });
        (total, path, inverse)
    });
    assert_eq!(counts, (0, 0, 0));
}

/// f32 sampling with the direct kernels against the same flow evaluated in f64 (the
/// portable kernels): φ to 1e-5 relative and log-dets to 1e-5 of the volume, on an
/// 8 × 8 lattice with parameters far from the identity.
#[test]
fn the_f32_convolutional_flow_agrees_with_f64() {
    let mut model = conv_model(8);
    let mut rng = rng_from_seed(9);
    for p in model.params_mut() {
        use rand::RngExt;
        *p = rng.random_range(-0.3f32..0.3);
    }
    let z = normal_batch(5, 64, 2);
    let (phi, ld) = model.forward(z.view()).unwrap();
    let params: Vec<f64> = model.params().iter().map(|&p| p.into()).collect();
    let (phi64, ld64) = model.forward_with(&params, z.mapv(f64::from).view());
    for (&a, &b) in phi.iter().zip(phi64.iter()) {
        assert!(
            (f64::from(a) - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{a} vs {b}"
        );
    }
    for (&a, &b) in ld.iter().zip(ld64.iter()) {
        assert!((a - b).abs() <= 1e-5 * 64.0, "{a} vs {b}");
    }
}
