//! Flow-level laws: invertibility, log-det consistency (inverse, exact and brute-force Jacobians),
//! Z2 equivariance, identity at zero network output, finiteness for large inputs, model files,
//! and the training gradient of `forward_backward` against finite differences.

mod common;

use common::{random_model, scratch};
use latflow::flow::transform::Rqs;
use latflow::flow::{
    BlockConfig, ChunkSeed, Flow, FlowConfig, FlowModel, FreeFieldConfig, LayerConfig, NetConfig,
    Partition, TransformKind, Workspace,
};
use latflow::testing::{
    LOG_DET_RTOL_F32, LOG_DET_RTOL_F64, assert_gradients_close, check_flow_invertible,
    check_flow_log_det_bruteforce, check_flow_log_det_exact, check_flow_z2_equivariant,
    finite_difference_gradient,
};
use latflow::{Error, Lattice, rng_from_seed};
use ndarray::{Array2, ArrayView2};
use rand::RngExt;

fn lattice(l: usize) -> Lattice {
    Lattice::new(&[l, l]).unwrap()
}

/// Every recipe family, small enough for brute-force checks.
fn configs() -> Vec<(&'static str, FlowConfig)> {
    vec![
        ("additive", FlowConfig::additive(2, &[8])),
        ("real_nvp", FlowConfig::real_nvp(2, &[8, 8])),
        ("z2_affine", FlowConfig::z2_affine(2, 16)),
        (
            "conv_affine",
            FlowConfig::convolutional(TransformKind::Affine, 2, &[3], 3),
        ),
        (
            "conv_z2_affine",
            FlowConfig::convolutional(TransformKind::Z2Affine, 1, &[2, 2], 3),
        ),
        ("mixed", mixed_config()),
        ("seed", FlowConfig::seed(16, 1, 4).unwrap()),
        (
            "conv_rqs",
            FlowConfig::convolutional(TransformKind::Rqs(Rqs::new(6, 3.0).unwrap()), 1, &[2], 3),
        ),
        (
            "free_field_classes",
            FlowConfig::convolutional(TransformKind::Z2Affine, 1, &[2], 3)
                .with_free_field(FreeFieldConfig::classes(None)),
        ),
        (
            "free_field_mass",
            FlowConfig::additive(1, &[4]).with_free_field(FreeFieldConfig::mass(0.5, 1.0)),
        ),
        ("multiscale", multiscale_config(false)),
        ("multiscale_free_field", multiscale_config(true)),
    ]
}

/// One coarse level: a convolutional Z2-affine block on the coarse lattice (after a
/// free-field layer there, if asked), then a refinement block of spline couplings.
fn multiscale_config(free_field: bool) -> FlowConfig {
    let conv = FlowConfig::convolutional(TransformKind::Z2Affine, 1, &[2], 3);
    let mut coarsest = conv.layers.clone();
    if free_field {
        coarsest.insert(
            0,
            LayerConfig::FreeField(FreeFieldConfig::classes(Some(0.8))),
        );
    }
    let refine = BlockConfig {
        transform: TransformKind::Rqs(Rqs::new(4, 3.0).unwrap()),
        net: NetConfig::Conv {
            channels: vec![3],
            kernel: 3,
            bias: true,
        },
        separate_nets: false,
        partition: Partition::Checkerboard,
    };
    FlowConfig::multiscale(1, &coarsest, &[refine])
}

/// One of each layer kind, with a custom partition.
fn mixed_config() -> FlowConfig {
    let mut config = FlowConfig::real_nvp(1, &[3]);
    config.layers.push(LayerConfig::Scale);
    config.layers.push(LayerConfig::Block(BlockConfig {
        transform: TransformKind::Z2Affine,
        net: NetConfig::Dense {
            hidden: vec![2],
            bias: false,
        },
        separate_nets: true,
        partition: Partition::Sites {
            first: vec![0, 1, 2, 3, 8, 9],
        },
    }));
    config.layers.push(LayerConfig::Block(BlockConfig {
        transform: TransformKind::Additive,
        net: NetConfig::Conv {
            channels: vec![2],
            kernel: 3,
            bias: true,
        },
        separate_nets: false,
        partition: Partition::Checkerboard,
    }));
    config
}

fn normal_batch(n: usize, v: usize, seed: u64) -> Array2<f32> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_fn((n, v), |_| {
        let u: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
        u as f32
    })
}

#[test]
fn inverse_undoes_forward_and_negates_the_log_det() {
    for (name, config) in configs() {
        let model = random_model(&config, 6, 0.3, 1);
        let z = normal_batch(64, 36, 2);
        let (phi, ld) = model.forward(z.view()).unwrap();
        let (back, ld_inv) = model.inverse(phi.view()).unwrap();
        // f32 round trip: |z' − z| ≤ 1e-5 (1 + |z|); log-dets of order 10 agree to 1e-4.
        for (a, b) in back.iter().zip(z.iter()) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{name}: z {b} came back as {a}"
            );
        }
        for (f, i) in ld.iter().zip(ld_inv.iter()) {
            assert!((f + i).abs() < 1e-4 * (1.0 + f.abs()), "{name}: {f} vs {i}");
        }
        assert!(ld.iter().any(|l| l.abs() > 0.1) || name.contains("additive"));
    }
}

#[test]
fn log_det_equals_the_exact_jacobian() {
    // The forward-mode Jacobian's log|det| (nalgebra LU) against the flow's own log-det in
    // f64 and in f32, to the relative tolerances the helper documents.
    for (name, config) in configs() {
        let model = random_model(&config, 4, 0.4, 3);
        let z = normal_batch(3, 16, 4);
        check_flow_log_det_exact::<f64>(&model, z.view(), LOG_DET_RTOL_F64)
            .unwrap_or_else(|e| panic!("{name} in f64: {e}"));
        check_flow_log_det_exact::<f32>(&model, z.view(), LOG_DET_RTOL_F32)
            .unwrap_or_else(|e| panic!("{name} in f32: {e}"));
    }
}

fn assert_odd(model: &FlowModel, z: ArrayView2<f32>) -> Result<(), String> {
    let (phi, ld) = model.forward(z).unwrap();
    let (phi_neg, ld_neg) = model.forward(z.mapv(|x| -x).view()).unwrap();
    for (a, b) in phi.iter().zip(phi_neg.iter()) {
        if (a + b).abs() > 1e-6 * (1.0 + a.abs()) {
            return Err(format!("f(−z) = {b} but −f(z) = {}", -a));
        }
    }
    for (a, b) in ld.iter().zip(ld_neg.iter()) {
        if (a - b).abs() > 1e-6 * (1.0 + a.abs()) {
            return Err(format!("log-det {a} at z but {b} at −z"));
        }
    }
    Ok(())
}

#[test]
fn z2_equivariant_recipes_commute_with_the_sign_flip() {
    let z = normal_batch(32, 36, 5);
    for config in [
        FlowConfig::z2_affine(3, 36),
        FlowConfig::convolutional(TransformKind::Z2Affine, 2, &[4], 3),
    ] {
        let model = random_model(&config, 6, 0.5, 6);
        assert_odd(&model, z.view()).unwrap();
    }
    // A flow with biases is not equivariant: the check can fail.
    let model = random_model(&FlowConfig::real_nvp(1, &[8]), 6, 0.5, 7);
    assert!(assert_odd(&model, z.view()).is_err());
}

#[test]
fn z2_affine_refuses_networks_with_bias() {
    let mut config = FlowConfig::z2_affine(1, 4);
    if let LayerConfig::Block(b) = &mut config.layers[0] {
        b.net = NetConfig::Dense {
            hidden: vec![4],
            bias: true,
        };
    }
    let err = FlowModel::new(&config, &lattice(4), 0).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { ref name, .. } if name == "bias"));
}

#[test]
fn zero_network_outputs_give_the_identity() {
    let z = normal_batch(16, 36, 8);
    for config in [
        FlowConfig::additive(2, &[8]),
        FlowConfig::real_nvp(2, &[8]),
        FlowConfig::z2_affine(2, 8),
        FlowConfig::convolutional(TransformKind::Affine, 1, &[2], 3),
    ] {
        let mut model = FlowModel::new(&config, &lattice(6), 9).unwrap();
        model.params_mut().fill(0.0);
        let (phi, ld) = model.forward(z.view()).unwrap();
        assert_eq!(phi, z);
        assert!(ld.iter().all(|&l| l == 0.0));
    }
}

#[test]
fn large_inputs_stay_finite() {
    let mut rng = rng_from_seed(10);
    let z = Array2::from_shape_fn((64, 36), |_| rng.random_range(-50.0f32..50.0));
    for (name, config) in configs() {
        let model = random_model(&config, 6, 0.3, 11);
        let (phi, ld) = model.forward(z.view()).unwrap();
        assert!(phi.iter().all(|x| x.is_finite()), "{name}: forward");
        assert!(ld.iter().all(|x| x.is_finite()), "{name}: log-det");
        let (back, ld_inv) = model.inverse(z.view()).unwrap();
        assert!(back.iter().all(|x| x.is_finite()), "{name}: inverse");
        assert!(
            ld_inv.iter().all(|x| x.is_finite()),
            "{name}: inverse log-det"
        );
    }
}

#[test]
fn sample_and_log_density_agree() {
    let model = random_model(&FlowConfig::real_nvp(2, &[16]), 4, 0.3, 12);
    let mut rng = rng_from_seed(13);
    let (phi, log_p) = model.sample(50, &mut rng).unwrap();
    let again = model.log_density(phi.view()).unwrap();
    for (a, b) in log_p.iter().zip(again.iter()) {
        assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    let wrong = Array2::<f32>::zeros((2, 15));
    assert!(matches!(
        model.log_density(wrong.view()),
        Err(Error::Shape(_))
    ));
}

#[test]
fn the_identity_flow_has_the_standard_normal_density() {
    let mut model = FlowModel::new(&FlowConfig::real_nvp(1, &[4]), &lattice(4), 0).unwrap();
    model.params_mut().fill(0.0);
    let phi = normal_batch(5, 16, 14);
    let log_p = model.log_density(phi.view()).unwrap();
    for (row, lp) in phi.outer_iter().zip(log_p.iter()) {
        let sq: f64 = row.iter().map(|&x| (x as f64).powi(2)).sum();
        let exact = -0.5 * sq - 8.0 * (2.0 * std::f64::consts::PI).ln();
        assert!((lp - exact).abs() < 1e-12);
    }
}

#[test]
fn model_files_round_trip_exactly_and_refuse_mismatches() {
    let dir = scratch("model-files");
    let path = dir.join("model.json");
    let mut model = random_model(&mixed_config(), 4, 0.7, 15);
    model
        .metadata_mut()
        .insert("action".into(), serde_json::json!({"beta": 0.5}));
    model.save(&path).unwrap();
    let loaded = FlowModel::load_for(&path, &lattice(4)).unwrap();
    assert_eq!(loaded.params(), model.params());
    assert_eq!(loaded.config(), model.config());
    assert_eq!(loaded.metadata(), model.metadata());
    let z = normal_batch(8, 16, 16);
    assert_eq!(
        loaded.forward(z.view()).unwrap(),
        model.forward(z.view()).unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "the temporary file was not renamed");

    assert!(matches!(
        FlowModel::load_for(&path, &lattice(6)),
        Err(Error::Incompatible(_))
    ));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bad = dir.join("bad.json");

    json["format_version"] = serde_json::json!(99);
    std::fs::write(&bad, json.to_string()).unwrap();
    assert!(matches!(FlowModel::load(&bad), Err(Error::Incompatible(_))));

    json["format_version"] = serde_json::json!(latflow::flow::MODEL_FORMAT_VERSION);
    json["params"].as_array_mut().unwrap().pop();
    std::fs::write(&bad, json.to_string()).unwrap();
    assert!(matches!(FlowModel::load(&bad), Err(Error::Incompatible(_))));

    json["lattice"] = serde_json::json!([4, 1]);
    std::fs::write(&bad, json.to_string()).unwrap();
    assert!(matches!(FlowModel::load(&bad), Err(Error::Format { .. })));

    std::fs::write(&bad, "not json").unwrap();
    assert!(matches!(FlowModel::load(&bad), Err(Error::Format { .. })));
    assert!(matches!(
        FlowModel::load(dir.join("missing.json")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// S(φ) = Σ_x (½ φ_x² + ¼ φ_x⁴ − 0.3 φ_x φ_{x+1}) on the flattened lattice (periodic).
fn toy_action(phi: &[f64]) -> f64 {
    let n = phi.len();
    (0..n)
        .map(|i| 0.5 * phi[i].powi(2) + 0.25 * phi[i].powi(4) - 0.3 * phi[i] * phi[(i + 1) % n])
        .sum()
}

fn toy_force(phi: &[f64], i: usize) -> f64 {
    let n = phi.len();
    phi[i] + phi[i].powi(3) - 0.3 * (phi[(i + 1) % n] + phi[(i + n - 1) % n])
}

/// L = mean over rows of S(φ) − log det: the reverse-KL loss up to a constant.
fn toy_loss(model: &FlowModel, params: &[f64], z: &Array2<f64>) -> f64 {
    let (phi, ld) = model.forward_with(params, z.view());
    let n = z.nrows() as f64;
    phi.outer_iter()
        .zip(ld.iter())
        .map(|(row, l)| toy_action(row.as_slice().unwrap()) - l)
        .sum::<f64>()
        / n
}

#[test]
fn forward_backward_gives_the_loss_gradient() {
    // Every layer kind except RQS, then the seed recipe (Z2-affine, scales, RQS).
    check_forward_backward(&random_model(&mixed_config(), 4, 0.4, 17));
    check_forward_backward(&random_model(
        &FlowConfig::seed(6, 1, 4).unwrap(),
        4,
        0.4,
        19,
    ));
}

fn check_forward_backward(model: &FlowModel) {
    let params: Vec<f64> = model.params().iter().map(|&p| p as f64).collect();
    let z = normal_batch(7, 16, 18).mapv(|x| x as f64);
    let n = z.nrows() as f64;
    let seed = |mut c: ChunkSeed<f64>| {
        for ((row, mut g), r) in c
            .phi
            .outer_iter()
            .zip(c.grad_phi.outer_iter_mut())
            .zip(c.record.iter_mut())
        {
            let row = row.as_slice().unwrap();
            for (i, gi) in g.iter_mut().enumerate() {
                *gi = toy_force(row, i) / n;
            }
            *r = toy_action(row);
        }
        c.grad_logdet.fill(-1.0 / n);
    };
    let mut ws = Workspace::<f64>::new(3);
    let mut grad = vec![0.0; params.len()];
    let out = model
        .forward_backward_with(&params, z.view(), &mut ws, seed, &mut grad)
        .unwrap();
    let (phi_ref, ld_ref) = model.forward_with(&params, z.view());
    assert_eq!(out.phi, phi_ref);
    // The training pass sums the log-det on the tape, the forward pass per layer in f64
    // from the same per-site terms: equal up to the rounding of the summation order.
    for (&a, &b) in out.logdet.iter().zip(ld_ref.iter()) {
        assert!(
            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
            "log-det {a} vs {b}"
        );
    }
    for (row, &r) in phi_ref.outer_iter().zip(out.record.iter()) {
        assert_eq!(r, toy_action(row.as_slice().unwrap()));
    }
    // Step 1e-5: the losses of these random models are O(30–300), so rounding in the
    // difference quotient, ε·|L|/h, stays below 7e-9, and the truncation error O(h² f''')
    // below about 1e-9 (checked by varying h).
    let numeric = finite_difference_gradient(|p| toy_loss(model, p, &z), &params, 1e-5);
    assert_gradients_close(&grad, &numeric, 1e-6, 1e-8).unwrap();

    // Another chunk count sums in another order: equal up to rounding.
    let mut ws1 = Workspace::<f64>::new(1);
    let mut grad1 = vec![0.0; params.len()];
    model
        .forward_backward_with(&params, z.view(), &mut ws1, seed, &mut grad1)
        .unwrap();
    assert_gradients_close(&grad1, &grad, 1e-12, 1e-14).unwrap();

    // The f32 path agrees with the f64 one to f32 accuracy, and repeats bit for bit.
    let z32 = z.mapv(|x| x as f32);
    let seed32 = |mut c: ChunkSeed<f32>| {
        for (row, mut g) in c.phi.outer_iter().zip(c.grad_phi.outer_iter_mut()) {
            let row: Vec<f64> = row.iter().map(|&x| x as f64).collect();
            for (i, gi) in g.iter_mut().enumerate() {
                *gi = (toy_force(&row, i) / n) as f32;
            }
        }
        c.grad_logdet.fill(-1.0 / n as f32);
    };
    let mut ws32 = Workspace::<f32>::new(2);
    let mut g32 = vec![0.0f32; params.len()];
    model
        .forward_backward(z32.view(), &mut ws32, seed32, &mut g32)
        .unwrap();
    let g32_f64: Vec<f64> = g32.iter().map(|&g| g as f64).collect();
    assert_gradients_close(&g32_f64, &grad, 1e-3, 1e-4).unwrap();
    let mut again = vec![0.0f32; params.len()];
    model
        .forward_backward(z32.view(), &mut ws32, seed32, &mut again)
        .unwrap();
    assert_eq!(again, g32);

    let mut g_short = vec![0.0f32; 3];
    assert!(matches!(
        model.forward_backward(z32.view(), &mut ws32, seed32, &mut g_short),
        Err(Error::Shape(_))
    ));
}

#[test]
fn configs_round_trip_through_json_and_initialisation_is_seeded() {
    for (name, config) in configs() {
        let text = serde_json::to_string(&config).unwrap();
        let back: FlowConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config, "{name}");
        let a = FlowModel::new(&config, &lattice(4), 21).unwrap();
        let b = FlowModel::new(&config, &lattice(4), 21).unwrap();
        let c = FlowModel::new(&config, &lattice(4), 22).unwrap();
        assert_eq!(a.params(), b.params());
        assert_ne!(a.params(), c.params());
    }
}

#[test]
fn seed_recipe_matches_the_reference_parameter_count() {
    // L = 6, H = 36, 2 affine blocks, K = 8, as torch_ref.py: per affine layer two bias-free
    // nets 18→36→18; per RQS layer one net 18→36→18·23 with biases; two scalar scales.
    let config = FlowConfig::seed(36, 2, 8).unwrap();
    let model = FlowModel::new(&config, &lattice(6), 0).unwrap();
    let affine_layer = 2 * (18 * 36 + 36 * 18);
    let rqs_layer = 18 * 36 + 36 + 36 * 18 * 23 + 18 * 23;
    assert_eq!(model.n_params(), 4 * affine_layer + 2 * rqs_layer + 2);
    assert_eq!(model.n_params(), 42374);
}

#[test]
fn shared_flow_checks_pass_on_the_seed_recipe() {
    let model = random_model(&FlowConfig::seed(16, 2, 8).unwrap(), 4, 0.3, 30);
    let z = normal_batch(64, 16, 31);
    check_flow_invertible(&model, z.view(), 1e-4).unwrap();
    for row in z.outer_iter().take(4) {
        check_flow_log_det_bruteforce(&model, row.as_slice().unwrap(), 1e-2, 1e-3).unwrap();
    }
    let z2 = random_model(&FlowConfig::z2_affine(2, 16), 4, 0.3, 32);
    check_flow_z2_equivariant(&z2, z.view(), 1e-5).unwrap();
    assert!(check_flow_z2_equivariant(&model, z.view(), 1e-5).is_err());
}

#[test]
fn free_field_prior_gives_exact_free_field_densities_and_samples() {
    use latflow::Action;
    use latflow::action::FreeField;
    use latflow::flow::PriorConfig;
    let m0sq = 0.5;
    let mut config = FlowConfig::real_nvp(1, &[8]);
    config.prior = PriorConfig::FreeField { m0sq };
    let mut model = FlowModel::new(&config, &lattice(4), 0).unwrap();
    model.params_mut().fill(0.0);
    let field = FreeField::new(lattice(4), m0sq).unwrap();
    let n = 4000;
    let (phi, log_p) = model.sample(n, &mut rng_from_seed(40)).unwrap();
    let mut actions = Vec::with_capacity(n);
    for (row, lp) in phi.outer_iter().zip(log_p.iter()) {
        let row: Vec<f64> = row.iter().map(|&x| x as f64).collect();
        // The identity flow's density is the free field's, exactly normalised.
        assert!((lp - field.log_density(&row)).abs() < 1e-9 * (1.0 + lp.abs()));
        actions.push(field.action(&row));
    }
    // ⟨S⟩ = |Λ|/2 = 8 and Var S = |Λ|/2 for independent exact samples: |Δ| < 4σ.
    let mean = actions.iter().sum::<f64>() / n as f64;
    let sigma = (8.0 / n as f64).sqrt();
    assert!((mean - 8.0).abs() < 4.0 * sigma, "⟨S⟩ = {mean} ± {sigma}");
    assert!(matches!(
        FlowModel::new(
            &FlowConfig {
                prior: PriorConfig::FreeField { m0sq: -1.0 },
                layers: vec![]
            },
            &lattice(4),
            0
        ),
        Err(Error::InvalidParameter { .. })
    ));
}

use latflow::testing::alloc::{CountingAllocator, allocations_on_this_thread};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// `with_gemm` allocations where the f32 matrix products run the `gemm` crate, none where
/// they run latflow's 512-bit kernel (x86-64 processors with AVX-512F).
fn product_allocations(with_gemm: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return 0;
    }
    with_gemm
}

#[test]
fn the_steady_state_training_step_does_not_allocate() {
    let model = random_model(&FlowConfig::seed(16, 1, 8).unwrap(), 4, 0.3, 50);
    let z = normal_batch(40, 16, 51);
    let seed = |mut c: ChunkSeed<f32>| {
        c.grad_phi.zip_mut_with(&c.phi, |g, &p| *g = p / 40.0);
        c.grad_logdet.fill(-1.0 / 40.0);
    };
    // One worker thread runs the whole step, so its own counter sees every allocation.
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
        (allocations_on_this_thread() - before) / 3
    });
    // The only allocations left are the matrix products' own where they run the `gemm`
    // crate (processors without AVX-512; the 512-bit kernel allocates nothing): it
    // allocates a small flag vector per product, and a packing buffer for the 12 weight
    // gradients (whose left operand is a transposed view). Per step: 12 products forward
    // (2 Z2 layers × 2 nets × 2 dense layers, 2 RQS layers × 2 dense layers) and 22
    // backward: 12 weight gradients, plus input gradients for the 6 second dense layers and
    // for the 4 first dense layers whose input is not the latent z. A tape that
    // reallocated its buffers would add about 60 a step (one per node).
    assert_eq!(per_step, product_allocations(12 + 22 + 12));
}

#[test]
fn the_steady_state_forward_pass_does_not_allocate_and_matches_forward() {
    let model = random_model(&FlowConfig::seed(16, 1, 8).unwrap(), 4, 0.3, 52);
    let z = normal_batch(40, 16, 53);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (per_call, phi, logdet) = pool.install(|| {
        let mut ws = Workspace::<f32>::new(1);
        model.forward_in(model.params(), z.view(), &mut ws).unwrap();
        let before = allocations_on_this_thread();
        for _ in 0..3 {
            model.forward_in(model.params(), z.view(), &mut ws).unwrap();
        }
        let per_call = (allocations_on_this_thread() - before) / 3;
        let (phi, logdet) = model.forward_in(model.params(), z.view(), &mut ws).unwrap();
        (per_call, phi.to_owned(), logdet.to_owned())
    });
    // Only the products' flag vectors remain: the 12 forward products of the step above.
    assert_eq!(per_call, product_allocations(12));
    let (phi_ref, logdet_ref) = model.forward(z.view()).unwrap();
    assert_eq!(phi, phi_ref);
    assert_eq!(logdet, logdet_ref);
}

/// `Flow::forward_into` with a scratch, as the flow proposal generates its batches: once the
/// scratch holds its workspace, a call allocates what `forward_in` does and nothing more.
#[test]
fn forward_into_with_a_scratch_allocates_like_forward_in() {
    use latflow::flow::FlowScratch;
    let model = random_model(&FlowConfig::seed(16, 1, 8).unwrap(), 4, 0.3, 62);
    let z = normal_batch(40, 16, 63);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (per_call, phi, log_det) = pool.install(|| {
        let mut scratch = FlowScratch::new();
        let mut phi = Array2::zeros((40, 16));
        let mut log_det = ndarray::Array1::zeros(40);
        model
            .forward_into(z.view(), phi.view_mut(), log_det.view_mut(), &mut scratch)
            .unwrap();
        let before = allocations_on_this_thread();
        for _ in 0..3 {
            model
                .forward_into(z.view(), phi.view_mut(), log_det.view_mut(), &mut scratch)
                .unwrap();
        }
        ((allocations_on_this_thread() - before) / 3, phi, log_det)
    });
    // The 12 forward products' flag vectors, as in `forward_in`.
    assert_eq!(per_call, product_allocations(12));
    let (phi_ref, log_det_ref) = model.forward(z.view()).unwrap();
    assert_eq!(phi, phi_ref);
    assert_eq!(log_det, log_det_ref);
}

#[test]
fn forward_in_refuses_a_batch_of_the_wrong_width_or_parameters_of_the_wrong_length() {
    let model = random_model(&FlowConfig::seed(16, 1, 8).unwrap(), 4, 0.3, 54);
    let mut ws = Workspace::<f32>::new(2);
    let narrow = normal_batch(5, 15, 55);
    assert!(matches!(
        model.forward_in(model.params(), narrow.view(), &mut ws),
        Err(Error::Shape(_))
    ));
    let z = normal_batch(5, 16, 56);
    let short = &model.params()[1..];
    assert!(matches!(
        model.forward_in(short, z.view(), &mut ws),
        Err(Error::Shape(_))
    ));
}

#[test]
fn the_steady_state_inverse_pass_does_not_allocate_and_matches_inverse() {
    let model = random_model(&FlowConfig::seed(16, 1, 8).unwrap(), 4, 0.3, 57);
    let phi = normal_batch(40, 16, 58);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (per_call, z, logdet, log_p) = pool.install(|| {
        let mut ws = Workspace::<f32>::new(1);
        let mut log_p = ndarray::Array1::zeros(40);
        model
            .inverse_in(model.params(), phi.view(), &mut ws)
            .unwrap();
        model
            .log_density_in(phi.view(), &mut ws, log_p.view_mut())
            .unwrap();
        let before = allocations_on_this_thread();
        for _ in 0..3 {
            model
                .inverse_in(model.params(), phi.view(), &mut ws)
                .unwrap();
            model
                .log_density_in(phi.view(), &mut ws, log_p.view_mut())
                .unwrap();
        }
        let per_call = (allocations_on_this_thread() - before) / 6;
        let (z, logdet) = model
            .inverse_in(model.params(), phi.view(), &mut ws)
            .unwrap();
        (per_call, z.to_owned(), logdet.to_owned(), log_p)
    });
    // Only the products' flag vectors remain: 12 products, as in the forward pass, although
    // the spline and affine layers alternate node shapes on the one tape.
    assert_eq!(per_call, product_allocations(12));
    let (z_ref, logdet_ref) = model.inverse(phi.view()).unwrap();
    assert_eq!(z, z_ref);
    assert_eq!(logdet, logdet_ref);
    assert_eq!(log_p, model.log_density(phi.view()).unwrap());
    // One row, as a flow proposal recomputes the current state's density: the one-row
    // products take gemm's vector path and nothing at all is allocated.
    let one_row = pool.install(|| {
        let row = phi.slice(ndarray::s![..1, ..]);
        let mut ws = Workspace::<f32>::new(1);
        let mut log_p = ndarray::Array1::zeros(1);
        model
            .log_density_in(row, &mut ws, log_p.view_mut())
            .unwrap();
        let before = allocations_on_this_thread();
        model
            .log_density_in(row, &mut ws, log_p.view_mut())
            .unwrap();
        allocations_on_this_thread() - before
    });
    assert_eq!(one_row, 0);
    let mut short = ndarray::Array1::zeros(39);
    assert!(matches!(
        model.log_density_in(phi.view(), &mut Workspace::new(1), short.view_mut()),
        Err(Error::Shape(_))
    ));
}

#[test]
fn a_flow_step_after_another_kernel_allocates_nothing() {
    use latflow::action::Phi4;
    use latflow::kernel::FlowProposal;
    use latflow::{Action, Proposal, State};
    use std::sync::Arc;

    let model = Arc::new(random_model(
        &FlowConfig::seed(16, 1, 8).unwrap(),
        4,
        0.3,
        59,
    ));
    let action = Arc::new(Phi4::hopping(lattice(4), 0.5, 0.5).unwrap());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (per_step, cached) = pool.install(|| {
        let mut proposal = FlowProposal::new(model.clone(), action.clone(), 1000).unwrap();
        let mut state = State::zero(&*action);
        let mut rng = rng_from_seed(60);
        let mut moves = Vec::with_capacity(16);
        // Another kernel moves the field before every flow step, so each step recomputes
        // log w of the current state through the inverse flow.
        let nudge = |state: &mut State, k: usize| {
            state.change(|phi, s| {
                phi[k % 16] += 0.01;
                *s = action.action(phi);
            });
        };
        nudge(&mut state, 0);
        proposal.step(&mut state, &mut rng, &mut moves);
        moves.clear();
        let before = allocations_on_this_thread();
        for k in 1..=5 {
            nudge(&mut state, k);
            proposal.step(&mut state, &mut rng, &mut moves);
        }
        let per_step = (allocations_on_this_thread() - before) / 5;
        let before = allocations_on_this_thread();
        proposal.step(&mut state, &mut rng, &mut moves);
        (per_step, allocations_on_this_thread() - before)
    });
    // That the recomputed log w is right is what the mixed-kernel exactness tests of
    // tests/flow_sampling.rs check (a stale one would bias flow + local sweeps).
    assert_eq!(
        per_step, 0,
        "a nudged state's log w is recomputed without allocating"
    );
    assert_eq!(cached, 0, "an unchanged state takes log w from the cache");
}

/// One log-weight per configuration: on a trained L = 8 φ⁴ flow (the seed recipe), log p̃ of
/// fresh samples from the forward (sampling) path and from the inverse (density) path, in
/// batches and one row at a time as the flow proposal evaluates a state, agree within the
/// bound stated on `FlowModel`: |Δ| ≤ 16 u (N_ℓ + |Λ|), u = 2⁻²⁴, N_ℓ the per-site
/// log-derivative terms (3 blocks × 64 sites here).
#[test]
fn forward_and_inverse_log_densities_agree_within_the_stated_bound() {
    use latflow::action::Phi4;
    use latflow::flow::FlowScratch;
    use latflow::train::{TrainConfig, Trainer};
    use std::sync::Arc;

    let lattice = lattice(8);
    let action = Arc::new(Phi4::hopping(lattice.clone(), 0.576, 0.5).unwrap());
    let model = FlowModel::new(&FlowConfig::seed(64, 2, 8).unwrap(), &lattice, 1).unwrap();
    let mut config = TrainConfig::new(500, 150, 0.01);
    config.seed = 3;
    config.chunks = 2;
    let mut trainer = Trainer::new(model, action, config).unwrap();
    let summary = trainer
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    // A real training run: the flow is far from the identity and a usable proposal.
    assert!(
        summary.eval.acceptance > 0.2,
        "trained acceptance {}",
        summary.eval.acceptance
    );
    let model = trainer.into_model();

    let n = 2000;
    let (phi, log_p_forward) = model.sample(n, &mut rng_from_seed(61)).unwrap();
    let log_p_inverse = model.log_density(phi.view()).unwrap();
    let mut scratch = FlowScratch::new();
    let mut one = ndarray::Array1::zeros(1);
    let u = f64::from(f32::EPSILON) / 2.0;
    let bound = 16.0 * u * (3.0 * 64.0 + 64.0);
    let (mut worst, mut worst_one) = (0.0f64, 0.0f64);
    for (i, (&f, &b)) in log_p_forward.iter().zip(&log_p_inverse).enumerate() {
        worst = worst.max((f - b).abs());
        model
            .log_density_into(
                phi.slice(ndarray::s![i..i + 1, ..]),
                one.view_mut(),
                &mut scratch,
            )
            .unwrap();
        worst_one = worst_one.max((f - one[0]).abs());
    }
    let (z, log_det) = model.inverse(phi.view()).unwrap();
    let mean_log_det = log_det.iter().map(|l| l.abs()).sum::<f64>() / n as f64;
    assert!(
        z.iter().all(|x| x.is_finite()) && mean_log_det > 1.0,
        "mean |log det| {mean_log_det}"
    );
    eprintln!("max |Δ log p̃| batched {worst:.2e}, one row {worst_one:.2e}, bound {bound:.2e}");
    assert!(worst <= bound, "batched: {worst:e} > {bound:e}");
    assert!(worst_one <= bound, "one row: {worst_one:e} > {bound:e}");
}

/// log p̃(φ) of one row by the inverse pass in f64: log r(f⁻¹(φ)) + log|det ∂f⁻¹/∂φ|, with
/// log r up to its constant (−½ Σ z², or −S₀(z) for a free-field prior).
fn inverse_log_density(model: &FlowModel, params: &[f64], phi: &[f64]) -> f64 {
    use latflow::Action;
    use latflow::action::FreeField;
    use latflow::flow::PriorConfig;
    let row = Array2::from_shape_vec((1, phi.len()), phi.to_vec()).unwrap();
    let (z, ld) = model.inverse_with(params, row.view());
    let z = z.row(0).to_vec();
    let log_r = match &model.config().prior {
        PriorConfig::StandardNormal => -0.5 * z.iter().map(|x| x * x).sum::<f64>(),
        PriorConfig::FreeField { m0sq } => {
            let l = (phi.len() as f64).sqrt() as usize;
            -FreeField::new(lattice(l), *m0sq).unwrap().action(&z)
        }
    };
    log_r + ld[0]
}

/// Every recipe family, and a free-field prior, at random parameters.
fn score_models() -> Vec<(String, FlowModel)> {
    use latflow::flow::PriorConfig;
    let mut models: Vec<(String, FlowModel)> = configs()
        .into_iter()
        .enumerate()
        .map(|(i, (name, config))| {
            (
                name.to_string(),
                random_model(&config, 4, 0.4, 60 + i as u64),
            )
        })
        .collect();
    let mut free = mixed_config();
    free.prior = PriorConfig::FreeField { m0sq: 0.7 };
    models.push(("free-field prior".into(), random_model(&free, 4, 0.4, 70)));
    models
}

#[test]
fn the_carried_score_is_the_gradient_of_the_log_density() {
    // ∇_φ log p̃(φ) from the forward recursion (no inverse) against central differences of
    // the inverse path's log p̃, in f64. Step 1e-6: log p̃ is O(10–100) here, so rounding
    // contributes ε·|log p̃|/h < 3e-8; these random flows are far from linear, and
    // truncation, O(h²·f‴), reaches 1e-5 relative at h = 1e-4 but stays below 1e-7 here
    // (checked by varying h). A missing log-det term or a wrong triangular solve is off
    // by O(0.1–1).
    for (name, model) in score_models() {
        let params: Vec<f64> = model.params().iter().map(|&p| p as f64).collect();
        let z = normal_batch(3, 16, 61).mapv(f64::from);
        let (phi, score) = model.forward_score_with(&params, z.view()).unwrap();
        let (phi_ref, _) = model.forward_with(&params, z.view());
        let worst = (&phi - &phi_ref)
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(
            worst <= 1e-13,
            "{name}: φ of the scored pass off by {worst}"
        );
        let h = 1e-6;
        for (row, w) in phi.outer_iter().zip(score.outer_iter()) {
            let mut x = row.to_vec();
            for site in 0..x.len() {
                let x0 = x[site];
                x[site] = x0 + h;
                let up = inverse_log_density(&model, &params, &x);
                x[site] = x0 - h;
                let down = inverse_log_density(&model, &params, &x);
                x[site] = x0;
                let numeric = (up - down) / (2.0 * h);
                assert!(
                    (w[site] - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "{name}, site {site}: score {} but ∂ log p̃/∂φ = {numeric}",
                    w[site]
                );
            }
        }
    }
}

#[test]
fn the_path_gradient_is_the_total_gradient_without_the_score_term() {
    // Per batch, exactly: G_total − G_path = (1/N) Σ_n ∂_θ log p̃_θ(φ_n) at fixed φ_n.
    // Checked along random directions d of parameter space, the right side by central
    // differences of the inverse path's log-density in θ ± hd, h = 1e-6 (as above).
    for (name, model) in score_models() {
        let params: Vec<f64> = model.params().iter().map(|&p| p as f64).collect();
        let z = normal_batch(5, 16, 62).mapv(f64::from);
        let n = z.nrows() as f64;
        let force_seed = |c: &mut ChunkSeed<f64>| {
            for (row, mut g) in c.phi.outer_iter().zip(c.grad_phi.outer_iter_mut()) {
                let row = row.as_slice().unwrap();
                for (i, gi) in g.iter_mut().enumerate() {
                    *gi = toy_force(row, i) / n;
                }
            }
        };
        let total_seed = |mut c: ChunkSeed<f64>| {
            force_seed(&mut c);
            c.grad_logdet.fill(-1.0 / n);
        };
        let path_seed = |mut c: ChunkSeed<f64>| {
            force_seed(&mut c);
            let score = c.score.expect("a scored pass gives the score");
            c.grad_phi.zip_mut_with(&score, |g, &w| *g += w / n);
        };
        let mut ws = Workspace::<f64>::new(2);
        let mut total = vec![0.0; params.len()];
        model
            .forward_backward_with(&params, z.view(), &mut ws, total_seed, &mut total)
            .unwrap();
        let mut path = vec![0.0; params.len()];
        let out = model
            .forward_backward_scored_with(&params, z.view(), &mut ws, path_seed, &mut path)
            .unwrap();
        let phi = out.phi.to_owned();
        let mut rng = rng_from_seed(63);
        for _ in 0..3 {
            let d: Vec<f64> = (0..params.len())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let h = 1e-6;
            let shifted =
                |e: f64| -> Vec<f64> { params.iter().zip(&d).map(|(p, d)| p + e * d).collect() };
            let (up, down) = (shifted(h), shifted(-h));
            let score_term: f64 = phi
                .outer_iter()
                .map(|row| {
                    let row = row.to_vec();
                    (inverse_log_density(&model, &up, &row)
                        - inverse_log_density(&model, &down, &row))
                        / (2.0 * h)
                })
                .sum::<f64>()
                / n;
            let along = |g: &[f64]| g.iter().zip(&d).map(|(g, d)| g * d).sum::<f64>();
            let difference = along(&total) - along(&path);
            assert!(
                (difference - score_term).abs() <= 1e-6 * (1.0 + score_term.abs()),
                "{name}: (G_total − G_path)·d = {difference}, score term {score_term}"
            );
        }
    }
}
