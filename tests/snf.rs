//! Flows as the start of non-equilibrium evolutions, and stochastic normalizing flows:
//! log Z of the free field (exact) from an exact free-field flow of another mass; the work
//! of a protocol without action change equals the flow's importance log-weight; φ⁴ from a
//! flow trained at a smaller β, reweighted and as an independence proposal, against HMC;
//! the pathwise SNF gradient against finite differences of the work at fixed random
//! numbers (f64); end-to-end SNF training lowering E[W], and its sampler against HMC;
//! refusals. Tolerances are 4σ of standard errors (delta method, Γ method).

mod common;

use std::sync::Arc;

use common::{assert_agree, assert_within, field_estimates, random_model};

use latflow::action::{Action, FreeField, Phi4};
use latflow::control::StopToken;
use latflow::flow::{Flow, FlowConfig, FlowModel, FreeFieldConfig, LayerConfig, PriorConfig};
use latflow::kernel::{
    ChainRecord, Hmc, NoneqEvolution, NoneqPath, NoneqProposal, NoneqProtocol, NoneqUpdate,
    noneq_estimate,
};
use latflow::train::{Snf, TrainConfig, Trainer, evaluate_snf};
use latflow::{Lattice, Proposal, rng_from_seed};
use ndarray::Array2;
use rand_distr::{Distribution, StandardNormal};

fn lattice(l: usize) -> Lattice {
    Lattice::hypercubic(2, l).unwrap()
}

fn phi4(l: usize, beta: f64) -> Arc<Phi4> {
    Arc::new(Phi4::hopping(lattice(l), beta, 0.5).unwrap())
}

fn local(steps: usize, step_size: f64) -> NoneqProtocol {
    NoneqProtocol {
        steps,
        update: NoneqUpdate::Local { step_size },
    }
}

fn phi2(phi: &[f64]) -> f64 {
    phi.iter().map(|x| x * x).sum::<f64>() / phi.len() as f64
}

/// The exact flow of the free field of mass² `m0sq` (a free-field layer at its optimum).
fn free_field_flow(l: usize, m0sq: f64) -> Arc<dyn Flow> {
    let config = FlowConfig {
        prior: PriorConfig::StandardNormal,
        layers: vec![LayerConfig::FreeField(FreeFieldConfig::mass(m0sq, 1.0))],
    };
    Arc::new(FlowModel::new(&config, &lattice(l), 1).unwrap())
}

/// ⟨φ²⟩, χ and S/|Λ| of φ⁴ from HMC, the reference the samplers are checked against.
fn hmc_reference(action: &Arc<Phi4>, seed: u64) -> [latflow::stats::GammaEstimate; 3] {
    let record = run(
        Hmc::new(action.clone(), 1.0, 8).unwrap(),
        action,
        seed,
        30_000,
    );
    field_estimates(&record, action.lattice().volume())
}

fn run<K: Proposal, A: Action + 'static>(
    kernel: K,
    action: &Arc<A>,
    seed: u64,
    n: usize,
) -> ChainRecord {
    common::run_measured(kernel, action, seed, 100, n)
}

#[test]
fn an_exact_flow_of_another_mass_gives_the_free_fields_log_z() {
    let l = 6;
    let target = Arc::new(FreeField::new(lattice(l), 0.5).unwrap());
    let start = Arc::new(FreeField::new(lattice(l), 0.2).unwrap());
    let exact = target.log_z();
    let mut evolution = NoneqEvolution::from_flow(
        target.clone(),
        free_field_flow(l, 0.2),
        start.clone(),
        local(16, 1.0),
        100,
    )
    .unwrap();
    assert!(evolution.starts_from_flow());
    assert_eq!(evolution.log_z_start(), 0.0);
    let f = target.clone();
    let mut action_density = |phi: &[f64]| f.action(phi) / phi.len() as f64;
    let est = noneq_estimate(
        &mut evolution,
        2_000,
        1,
        &mut [&mut phi2, &mut action_density],
    )
    .unwrap();
    assert!(est.reliable, "{:?}", est.caveats);
    // The start's log Z is far from the target's, and the error a small fraction of that.
    assert!((exact - start.log_z()).abs() > 1.0);
    assert!(est.log_z_err < 0.05, "error {}", est.log_z_err);
    assert!(
        (est.log_z - exact).abs() < 4.0 * est.log_z_err,
        "log Z {} ± {} vs exact {exact}",
        est.log_z,
        est.log_z_err
    );
    // Jarzynski's inequality: ⟨W⟩ ≥ −log Z.
    assert!(est.mean_work >= -exact - 4.0 * est.log_z_err);
    assert_within(&est.observables[0], target.propagator()[0], "G(0)");
    assert_within(&est.observables[1], 0.5, "S/|Λ|");
}

/// log w = −S(φ) − log p̃(φ) of one configuration, log p̃ through the flow's inverse.
fn log_weight(flow: &dyn Flow, action: &dyn Action, phi: &[f64]) -> f64 {
    let row = Array2::from_shape_fn((1, phi.len()), |(_, j)| phi[j] as f32);
    -action.action(phi) - flow.log_density(row.view()).unwrap()[0]
}

#[test]
fn without_action_change_the_work_is_the_flows_log_weight() {
    // A flow far from the target, started at S₀ = S: the protocol's sum vanishes and
    // W = S(φ₀) + log q(φ₀) = −log w(φ₀), with log q from the forward pass here and from
    // the inverse pass in the check (they agree to f32 rounding); the updates do move φ.
    let l = 4;
    let action = phi4(l, 0.537);
    let flow: Arc<dyn Flow> = Arc::new(random_model(
        &FlowConfig::seed(16, 1, 4).unwrap(),
        l,
        0.2,
        3,
    ));
    let mut evolution = NoneqEvolution::from_flow(
        action.clone(),
        flow.clone(),
        action.clone(),
        local(5, 1.0),
        7,
    )
    .unwrap();
    let mut rng = rng_from_seed(4);
    let mut spread = (f64::INFINITY, f64::NEG_INFINITY);
    for _ in 0..20 {
        let work = evolution.forward(&mut rng).unwrap();
        let expected = -log_weight(&*flow, &*action, evolution.start_field());
        assert!(
            (work - expected).abs() < 1e-3 * (1.0 + expected.abs()),
            "W {work} vs −log w {expected}"
        );
        assert!(evolution.field() != evolution.start_field());
        spread = (spread.0.min(work), spread.1.max(work));
        // The backward path from φ_n ends at some φ₀′ with W′ = −log w(φ₀′) just as well.
        let end = evolution.field().to_vec();
        let back = evolution.backward(&end, &mut rng);
        let expected = -log_weight(&*flow, &*action, evolution.field());
        assert!((back - expected).abs() < 1e-3 * (1.0 + expected.abs()));
    }
    // The works vary from start to start: the check compares numbers, not a constant.
    assert!(spread.1 - spread.0 > 1.0, "{spread:?}");
}

/// A seed-recipe flow trained briefly by reverse KL on `action`.
fn trained_flow(action: &Arc<Phi4>, snf: Option<Snf>, iterations: usize) -> FlowModel {
    let l = action.lattice().extents()[0];
    let model =
        FlowModel::new(&FlowConfig::seed(l * l, 1, 4).unwrap(), action.lattice(), 5).unwrap();
    trained(model, action, snf, iterations)
}

/// `model` trained briefly by reverse KL on `action`, as the SNF `snf` when given.
fn trained(model: FlowModel, action: &Arc<Phi4>, snf: Option<Snf>, iterations: usize) -> FlowModel {
    let mut config = TrainConfig::new(128, iterations, 0.01);
    config.seed = 6;
    config.chunks = 2;
    config.eval_samples = 500;
    let mut trainer = Trainer::new(model, action.clone(), config).unwrap();
    if let Some(snf) = snf {
        trainer = trainer.with_snf(snf).unwrap();
    }
    trainer.train(&mut (), &StopToken::never()).unwrap();
    trainer.into_model()
}

#[test]
fn a_flow_trained_at_a_smaller_beta_samples_phi4() {
    let l = 6;
    let action = phi4(l, 0.537);
    let start = phi4(l, 0.45);
    let flow: Arc<dyn Flow> = Arc::new(trained_flow(&start, None, 150));
    let reference = hmc_reference(&action, 1);
    let evolution = || {
        NoneqEvolution::from_flow(
            action.clone(),
            flow.clone(),
            start.clone(),
            local(8, 1.0),
            64,
        )
        .unwrap()
    };
    let est = noneq_estimate(&mut evolution(), 3_000, 2, &mut [&mut phi2]).unwrap();
    assert!(est.reliable, "{:?}", est.caveats);
    assert_agree(&est.observables[0], &reference[0], "reweighted ⟨φ²⟩");
    let record = run(NoneqProposal::new(evolution()), &action, 3, 6_000);
    let acc = record.acceptance_of("noneq");
    assert!(acc > 0.2, "acceptance {acc}");
    common::assert_agrees_with(&record, &reference, l * l, "noneq");
}

/// W(φ₀) = S₀(φ₀) + W_path(φ₀) with the protocol's random numbers from `seed`, and its
/// gradient.
fn work_and_gradient(
    start: &Phi4,
    target: &Phi4,
    path: &mut NoneqPath,
    phi0: &[f64],
    seed: u64,
) -> (f64, Vec<f64>) {
    let mut phi = phi0.to_vec();
    let mut grad = vec![0.0; phi.len()];
    let mut force = vec![0.0; phi.len()];
    let s0 = start.action_and_force(phi0, &mut force);
    let w = path
        .forward_with_gradient(start, target, &mut phi, &mut rng_from_seed(seed), &mut grad)
        .unwrap();
    grad.iter_mut().zip(&force).for_each(|(g, f)| *g += f);
    (s0 + w, grad)
}

#[test]
fn the_snf_gradient_matches_finite_differences_of_the_work() {
    // f64 throughout, 4 × 4: E[W] over 6 starts with the protocol's random numbers fixed,
    // differentiated along every site and along random directions by central differences.
    // Accept tests flip on a set of measure zero: with h = 1e-6 none does here.
    let (start, target) = (phi4(4, 0.3), phi4(4, 0.537));
    let mut path = NoneqPath::new(local(6, 0.8), 16).unwrap();
    let mut rng = rng_from_seed(11);
    let starts: Vec<Vec<f64>> = (0..6)
        .map(|_| {
            (0..16)
                .map(|_| 0.7 * Distribution::<f64>::sample(&StandardNormal, &mut rng))
                .collect()
        })
        .collect();
    let mean_work = |path: &mut NoneqPath, shift: &[f64], h: f64| -> f64 {
        starts
            .iter()
            .enumerate()
            .map(|(k, phi0)| {
                let moved: Vec<f64> = phi0.iter().zip(shift).map(|(a, d)| a + h * d).collect();
                work_and_gradient(&start, &target, path, &moved, k as u64).0
            })
            .sum::<f64>()
            / starts.len() as f64
    };
    let mut grad = [0.0; 16];
    let mut moved_somewhere = false;
    for (k, phi0) in starts.iter().enumerate() {
        let (_, g) = work_and_gradient(&start, &target, &mut path, phi0, k as u64);
        grad.iter_mut()
            .zip(&g)
            .for_each(|(a, b)| *a += b / starts.len() as f64);
        let mut end = phi0.clone();
        path.forward(&*start, &*target, &mut end, &mut rng_from_seed(k as u64));
        moved_somewhere |= end != *phi0;
    }
    assert!(moved_somewhere);
    let mut directions: Vec<Vec<f64>> = (0..16)
        .map(|i| (0..16).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    directions.extend((0..4).map(|_| (0..16).map(|_| StandardNormal.sample(&mut rng)).collect()));
    assert_matches_finite_differences(&grad, &directions, |d, h| mean_work(&mut path, d, h));
}

/// Checks `grad` against central differences, step h = 10⁻⁶, of `f(d, h)` (the function
/// at the point moved by h·d) along every direction d of `directions`: |Δ| below
/// 10⁻⁵ (1 + |∇f·d|).
fn assert_matches_finite_differences(
    grad: &[f64],
    directions: &[Vec<f64>],
    mut f: impl FnMut(&[f64], f64) -> f64,
) {
    let h = 1e-6;
    for d in directions {
        let fd = (f(d, h) - f(d, -h)) / (2.0 * h);
        let exact: f64 = grad.iter().zip(d).map(|(g, x)| g * x).sum();
        assert!(
            (fd - exact).abs() < 1e-5 * (1.0 + exact.abs()),
            "finite difference {fd} vs gradient {exact}"
        );
    }
}

#[test]
fn training_an_snf_lowers_the_work_and_its_sampler_is_exact() {
    let snf = Snf {
        protocol: local(6, 1.0),
        start: phi4(4, 0.3),
        layers_after: Vec::new(),
    };
    check_snf_training(
        &FlowConfig::seed(16, 1, 4).unwrap(),
        &snf,
        "noneq(flow start, 6 steps)",
    );
}

/// Trains the flow of `config` as the SNF `snf` on 4 × 4 φ⁴ at β = 0.537 (200 iterations)
/// and checks that E[W] falls by more than 4σ and the ESS grows, and that the trained SNF's
/// sampler (named `name`) agrees with HMC within 4σ.
fn check_snf_training(config: &FlowConfig, snf: &Snf, name: &str) {
    let l = 4;
    let action = phi4(l, 0.537);
    let untrained = FlowModel::new(config, action.lattice(), 5).unwrap();
    let before = evaluate_snf(&untrained, &*action, snf, 4_000, &mut rng_from_seed(7)).unwrap();
    let model = trained(untrained, &action, Some(snf.clone()), 200);
    let after = evaluate_snf(&model, &*action, snf, 4_000, &mut rng_from_seed(8)).unwrap();
    // mean log w = −E[W] (up to the latent's constant in neither: W includes log q).
    let sigma = ((before.var_log_w + after.var_log_w) / 4_000.0).sqrt();
    assert!(
        after.mean_log_w - before.mean_log_w > 4.0 * sigma,
        "E[W] from {} to {} (σ {sigma})",
        -before.mean_log_w,
        -after.mean_log_w
    );
    assert!(after.ess > before.ess, "ESS {} → {}", before.ess, after.ess);
    let reference = hmc_reference(&action, 9);
    let kernel = NoneqProposal::new(
        NoneqEvolution::from_interleaved(
            action.clone(),
            model.interleave(snf.interleaved()).unwrap(),
            snf.start.clone(),
            snf.protocol,
            &snf.layers_after,
            64,
        )
        .unwrap(),
    );
    assert_eq!(kernel.name(), name);
    let record = run(kernel, &action, 10, 8_000);
    assert!(record.acceptance_of("noneq") > 0.3);
    common::assert_agrees_with(&record, &reference, l * l, "noneq");
}

#[test]
fn bad_flow_starts_and_snfs_are_refused() {
    let action = phi4(4, 0.537);
    let flow = free_field_flow(4, 0.5);
    let err = NoneqEvolution::from_flow(
        action.clone(),
        flow.clone(),
        action.clone(),
        local(4, 1.0),
        0,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("flow_batch"), "{err}");
    let err = NoneqEvolution::from_flow(
        action.clone(),
        flow.clone(),
        action.clone(),
        local(0, 1.0),
        8,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("noneq_steps"), "{err}");
    let err =
        NoneqEvolution::from_flow(phi4(6, 0.537), flow.clone(), phi4(6, 0.4), local(4, 1.0), 8)
            .err()
            .unwrap();
    assert!(matches!(err, latflow::Error::Incompatible(_)), "{err}");
    let err = NoneqEvolution::from_flow(action.clone(), flow, phi4(6, 0.4), local(4, 1.0), 8)
        .err()
        .unwrap();
    assert!(matches!(err, latflow::Error::Incompatible(_)), "{err}");
    let model = FlowModel::new(&FlowConfig::seed(16, 1, 4).unwrap(), action.lattice(), 5).unwrap();
    let trainer =
        || Trainer::new(model.clone(), action.clone(), TrainConfig::new(8, 2, 0.01)).unwrap();
    let hmc = NoneqProtocol {
        steps: 4,
        update: NoneqUpdate::Hmc {
            tau: 1.0,
            md_steps: 4,
        },
    };
    for (protocol, start, needle) in [
        (hmc, phi4(4, 0.3), "local updates only"),
        (local(0, 1.0), phi4(4, 0.3), "noneq_steps"),
        (local(4, 1.0), phi4(6, 0.3), "lattice"),
    ] {
        let snf = Snf {
            protocol,
            start,
            layers_after: Vec::new(),
        };
        let err = trainer().with_snf(snf).err().unwrap();
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// A 4 × 4 φ⁴ training run of `iterations` steps, as a stochastic normalizing flow when
/// `snf` is given.
fn train_run(out: &std::path::Path, snf: Option<latflow::run::SnfSpec>) -> latflow::run::TrainSpec {
    use latflow::run::{ActionSpec, RecipeSpec, TrainSpec};
    let mut train = TrainConfig::new(64, 30, 0.01);
    train.eval_samples = 300;
    train.chunks = 1;
    TrainSpec {
        lattice: lattice(4),
        action: ActionSpec::Phi4 {
            beta: 0.537,
            lambda: 0.5,
        },
        recipe: RecipeSpec::default(),
        train,
        anneal: None,
        snf,
        init: None,
        out: out.to_path_buf(),
    }
}

#[test]
fn a_trained_snf_brings_its_protocol_to_the_noneq_kernel() {
    use latflow::run::{
        ActionSpec, KernelSpec, NoneqStart, Registry, SampleSpec, SnfSpec, Typed, parse_kernel,
    };
    let start = ActionSpec::Phi4 {
        beta: 0.3,
        lambda: 0.5,
    };
    let snf = SnfSpec {
        steps: 3,
        step_size: 0.7,
        start: start.clone(),
        layers_every: None,
    };
    let path = common::scratch_file("snf.json");
    let spec = train_run(&path, Some(snf.clone()));
    let report = common::train_to_the_end(&spec, &mut ());
    // The evaluation ran whole paths: log w = −W ≤ log Z, with W including the sweeps.
    assert!(report.acceptance > 0.0 && report.ess > 0.0);
    let model = Arc::new(FlowModel::load(&path).unwrap());
    assert_eq!(SnfSpec::recorded(&model).unwrap(), Some(snf));
    let action = phi4(4, 0.537);
    let kernel = |kernel: KernelSpec| {
        kernel
            .build_with(&Typed(action.clone()), Some(&model), Registry::builtin())
            .unwrap()
            .name()
    };
    let noneq = KernelSpec {
        kind: parse_kernel("noneq").unwrap(),
        ..KernelSpec::default()
    };
    assert_eq!(kernel(noneq.clone()), "noneq(flow start, 3 steps)");
    let own = KernelSpec {
        noneq_steps: Some(5),
        ..noneq.clone()
    };
    assert_eq!(kernel(own), "noneq(flow start, 5 steps)");
    let gaussian = KernelSpec {
        noneq_start: Some(NoneqStart::Gaussian),
        ..noneq.clone()
    };
    assert_eq!(kernel(gaussian), "noneq(gaussian start, 10 steps)");

    // A plain flow trained at β = 0.3 starts evolutions to β = 0.537; a `flow` kernel
    // would propose from it for β = 0.3 only.
    let plain = common::scratch_file("plain.json");
    let mut spec = train_run(&plain, None);
    spec.action = start;
    common::train_to_the_end(&spec, &mut ());
    let mut sample = SampleSpec {
        lattice: lattice(4),
        action: ActionSpec::Phi4 {
            beta: 0.537,
            lambda: 0.5,
        },
        kernel: noneq,
        n: 200,
        therm: 10,
        thin: 1,
        seed: 1,
        model: Some(plain.to_path_buf()),
        chains: 1,
    };
    let report = latflow::run::sample(&sample, &mut (), &StopToken::never()).unwrap();
    assert!(report.n == 200);
    sample.kernel.kind = parse_kernel("flow").unwrap();
    let err = latflow::run::sample(&sample, &mut (), &StopToken::never())
        .err()
        .unwrap();
    assert!(matches!(err, latflow::Error::Incompatible(_)), "{err}");
    sample.kernel = KernelSpec {
        kind: parse_kernel("noneq").unwrap(),
        noneq_start: Some(NoneqStart::Flow),
        ..KernelSpec::default()
    };
    sample.model = None;
    let err = sample.validate().err().unwrap();
    assert!(err.to_string().contains("model"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Flow layers between the stochastic steps.

/// The seed recipe's flow on an l × l lattice with `extra` copies of its spline block
/// appended (the groups an SNF places between its steps), every parameter drawn uniformly
/// in (−`scale`, `scale`) so that each layer moves φ.
fn flow_with_blocks(l: usize, extra: usize, scale: f32, seed: u64) -> FlowModel {
    let mut config = FlowConfig::seed(l * l, 1, 4).unwrap();
    let block = config
        .layers
        .iter()
        .rev()
        .find(|layer| matches!(layer, LayerConfig::Block(_)))
        .unwrap()
        .clone();
    config.layers.extend(std::iter::repeat_n(block, extra));
    random_model(&config, l, scale, seed)
}

#[test]
fn flow_layers_between_the_steps_keep_the_free_fields_log_z_exact() {
    // An exact free-field start of another mass, then 16 sweeps with a scale layer after
    // sweep 5 and a random (untrained) affine block after sweep 10: Jarzynski's log Z
    // stays exact whatever θ. Each layer's log-determinant is many standard errors of
    // log Z, so a wrong term of W would show.
    let l = 6;
    let target = Arc::new(FreeField::new(lattice(l), 0.5).unwrap());
    let start = Arc::new(FreeField::new(lattice(l), 0.2).unwrap());
    let exact = target.log_z();
    let affine = FlowConfig::real_nvp(1, &[l * l]).layers[0].clone();
    let config = FlowConfig {
        prior: PriorConfig::StandardNormal,
        layers: vec![
            LayerConfig::FreeField(FreeFieldConfig::mass(0.2, 1.0)),
            LayerConfig::Scale,
            affine,
        ],
    };
    let mut model = FlowModel::new(&config, &lattice(l), 1).unwrap();
    let (scale, block) = (
        model.layer_params()[1].clone(),
        model.layer_params()[2].clone(),
    );
    let mut rng = rng_from_seed(21);
    model.params_mut()[scale].fill(0.04);
    for p in &mut model.params_mut()[block] {
        *p = 0.05 * Distribution::<f32>::sample(&StandardNormal, &mut rng);
    }
    assert_eq!(model.layer_groups(), 3);
    let mut maps = model.interleave(2).unwrap().maps;
    let mut field = vec![0.0; l * l];
    start.sampler().sample_into(&mut rng, &mut field).unwrap();
    let before = field.clone();
    for map in &mut maps {
        let log_det = map.forward(&mut field).unwrap();
        let moved = field
            .iter()
            .zip(&before)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(moved > 0.02, "the layer moves φ by {moved}");
        let back = map.inverse(&mut field).unwrap();
        assert!((log_det + back).abs() < 1e-9, "{log_det} vs {back}");
        assert!(field.iter().zip(&before).all(|(a, b)| (a - b).abs() < 1e-9));
    }

    let evolution = |k: usize, after: &[usize]| {
        NoneqEvolution::from_interleaved(
            target.clone(),
            model.interleave(k).unwrap(),
            start.clone(),
            local(16, 1.0),
            after,
            100,
        )
        .unwrap()
    };
    let mut interleaved = evolution(2, &[5, 10]);
    let est = noneq_estimate(&mut interleaved, 3_000, 1, &mut [&mut phi2]).unwrap();
    assert!(est.reliable, "{:?}", est.caveats);
    assert!(est.log_z_err < 0.05, "error {}", est.log_z_err);
    assert!(
        (est.log_z - exact).abs() < 4.0 * est.log_z_err,
        "log Z {} ± {} vs exact {exact}",
        est.log_z,
        est.log_z_err
    );
    assert_within(&est.observables[0], target.propagator()[0], "G(0)");

    // Without layers between the steps the evolution is the plain flow start's, bit for bit.
    let mut plain = NoneqEvolution::from_flow(
        target.clone(),
        Arc::new(model.interleave(0).unwrap().start),
        start.clone(),
        local(16, 1.0),
        100,
    )
    .unwrap();
    let mut none = evolution(0, &[]);
    let (mut a, mut b) = (rng_from_seed(5), rng_from_seed(5));
    for _ in 0..5 {
        assert_eq!(
            plain.forward(&mut a).unwrap(),
            none.forward(&mut b).unwrap()
        );
    }
}

/// The stochastic normalizing flow of `flow_with_blocks(_, 2, ..)`: 6 sweeps from φ⁴ at
/// β = 0.3 to the target, the two extra blocks after the sweeps `after`.
fn interleaved_snf(l: usize, after: &[usize]) -> Snf {
    Snf {
        protocol: local(6, 0.8),
        start: phi4(l, 0.3),
        layers_after: after.to_vec(),
    }
}

#[test]
fn the_gradient_through_layers_between_the_steps_matches_finite_differences() {
    // f64 throughout, 4 × 4, 5 rows with the protocol's random numbers fixed: the loss
    // (1/N) Σ (W − log r(z)) of the training pass, differentiated with respect to θ by
    // central differences along parameters of every layer group and random directions.
    // Two placements: blocks after sweeps 2 and 6 (the last after the final sweep), and
    // before the first sweep and after sweep 4.
    use latflow::flow::{ChunkSeed, Workspace};
    use latflow::train::SnfSeeds;
    let l = 4;
    let target = phi4(l, 0.537);
    let model = flow_with_blocks(l, 2, 0.3, 31);
    let params: Vec<f64> = model.params().iter().map(|&p| f64::from(p)).collect();
    let n = 5;
    let mut rng = rng_from_seed(32);
    let z = Array2::from_shape_fn((n, l * l), |_| StandardNormal.sample(&mut rng));
    for after in [[2, 6], [0, 4]] {
        let snf = interleaved_snf(l, &after);
        let loss = |params: &[f64]| -> (f64, Vec<f64>) {
            let seeds = SnfSeeds::new(&snf, &*target, 17, 3, n);
            let mut ws = Workspace::<f64>::new(1);
            let mut grad = vec![0.0; params.len()];
            let out = model
                .forward_backward_interleaved_with(
                    params,
                    z.view(),
                    &mut ws,
                    (2, |cut| seeds.between(cut)),
                    |mut chunk: ChunkSeed<'_, f64>| {
                        seeds.end(&mut chunk);
                        chunk.grad_logdet.fill(-1.0 / n as f64);
                    },
                    &mut grad,
                )
                .unwrap();
            (out.record.sum() / n as f64, grad)
        };
        let (_, grad) = loss(&params);
        let groups = model.layer_params();
        let mut directions: Vec<Vec<f64>> = Vec::new();
        for range in groups.iter().filter(|r| !r.is_empty()) {
            for k in [range.start, (range.start + range.end) / 2, range.end - 1] {
                directions.push(
                    (0..params.len())
                        .map(|i| f64::from(u8::from(i == k)))
                        .collect(),
                );
            }
        }
        directions.extend((0..3).map(|_| {
            (0..params.len())
                .map(|_| StandardNormal.sample(&mut rng))
                .collect()
        }));
        // The interleaved groups' parameters do get a gradient.
        let last = groups.last().unwrap().clone();
        assert!(grad[last].iter().any(|g| g.abs() > 1e-3));
        assert_matches_finite_differences(&grad, &directions, |d, h| {
            let moved: Vec<f64> = params.iter().zip(d).map(|(p, x)| p + h * x).collect();
            loss(&moved).0
        });
    }
}

#[test]
fn the_training_pass_and_the_evaluation_agree_on_the_work() {
    // The records of the f32 training pass are W − log r(z); their mean plus E[log r]
    // estimates E[W], which the evaluation (whole paths in f64, layers through LayerMap)
    // estimates independently.
    use latflow::flow::{ChunkSeed, TrainableFlow};
    use latflow::train::SnfSeeds;
    let l = 4;
    let target = phi4(l, 0.537);
    let model = flow_with_blocks(l, 2, 0.05, 41);
    let snf = interleaved_snf(l, &[3, 6]);
    let n = 8_000;
    let mut rng = rng_from_seed(42);
    let z = Array2::from_shape_fn((n, l * l), |_| StandardNormal.sample(&mut rng));
    let seeds = SnfSeeds::new(&snf, &*target, 1, 0, n);
    let mut ws = model.workspace(2);
    let mut grad = vec![0.0; model.n_params()];
    let out = model
        .forward_backward_interleaved(
            z.view(),
            &mut ws,
            (2, |cut| seeds.between(cut)),
            |mut chunk: ChunkSeed<'_, f32>| seeds.end(&mut chunk),
            &mut grad,
        )
        .unwrap();
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let works: Vec<f64> = out
        .record
        .iter()
        .zip(z.outer_iter())
        .map(|(r, row)| {
            let log_r: f64 = row
                .iter()
                .map(|x| -0.5 * f64::from(*x).powi(2) - half_log_2pi)
                .sum();
            r + log_r
        })
        .collect();
    let mean = works.iter().sum::<f64>() / n as f64;
    let var = works.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let eval = evaluate_snf(&model, &*target, &snf, n, &mut rng_from_seed(43)).unwrap();
    let sigma = ((var + eval.var_log_w) / n as f64).sqrt();
    assert!(
        (mean + eval.mean_log_w).abs() < 4.0 * sigma,
        "training E[W] {mean} vs evaluation {} (σ {sigma})",
        -eval.mean_log_w
    );
    // The comparison can fail: each layer's log-determinant, a term of W, is far larger
    // than σ.
    for mut map in model.interleave(2).unwrap().maps {
        let mut field: Vec<f64> = (0..l * l)
            .map(|_| 0.5 * Distribution::<f64>::sample(&StandardNormal, &mut rng))
            .collect();
        let log_det = map.forward(&mut field).unwrap();
        assert!(log_det.abs() > 8.0 * sigma, "log|det| {log_det}, σ {sigma}");
    }
}

#[test]
fn training_with_layers_between_the_steps_lowers_the_work_and_samples_exactly() {
    let snf = Snf {
        protocol: local(6, 1.0),
        start: phi4(4, 0.3),
        layers_after: Snf::every(3, 6),
    };
    assert_eq!(snf.layers_after, [3, 6]);
    let mut config = FlowConfig::seed(16, 1, 4).unwrap();
    let spline = config.layers[2].clone();
    config.layers.extend([spline.clone(), spline]);
    check_snf_training(
        &config,
        &snf,
        "noneq(flow start, 6 steps, 2 flow layers between)",
    );
}

#[test]
fn a_model_with_layers_between_the_steps_round_trips_to_the_noneq_kernel() {
    use latflow::run::{
        ActionSpec, KernelSpec, Registry, SampleSpec, SnfSpec, Typed, parse_kernel,
    };
    let snf = SnfSpec {
        steps: 3,
        step_size: 0.7,
        start: ActionSpec::Phi4 {
            beta: 0.3,
            lambda: 0.5,
        },
        layers_every: Some(1),
    };
    assert_eq!(snf.layers_after(), [1, 2, 3]);
    let path = common::scratch_file("snf-layers.json");
    let spec = train_run(&path, Some(snf.clone()));
    let report = common::train_to_the_end(&spec, &mut ());
    assert!(report.acceptance > 0.0 && report.ess > 0.0);
    let model = Arc::new(FlowModel::load(&path).unwrap());
    assert_eq!(SnfSpec::recorded(&model).unwrap(), Some(snf.clone()));
    let recipe = spec.recipe.build(&lattice(4)).unwrap();
    assert_eq!(model.layer_groups(), recipe.layers.len() + 3);
    let spline = recipe
        .layers
        .iter()
        .rev()
        .find(|layer| matches!(layer, LayerConfig::Block(_)))
        .unwrap();
    assert!(
        model.config().layers[recipe.layers.len()..]
            .iter()
            .all(|layer| layer == spline)
    );
    let action = phi4(4, 0.537);
    let noneq = KernelSpec {
        kind: parse_kernel("noneq").unwrap(),
        ..KernelSpec::default()
    };
    let build = |kernel: &KernelSpec| {
        kernel.build_with(&Typed(action.clone()), Some(&model), Registry::builtin())
    };
    assert_eq!(
        build(&noneq).unwrap().name(),
        "noneq(flow start, 3 steps, 3 flow layers between)"
    );
    // The spec's own protocol is used when it has the model's number of steps.
    let step_size = KernelSpec {
        noneq_steps: Some(3),
        noneq_step_size: Some(0.3),
        ..noneq.clone()
    };
    assert_eq!(
        build(&step_size).unwrap().name(),
        "noneq(flow start, 3 steps, 3 flow layers between)"
    );
    // Given, a setting counts whatever its value: 10 is the default number of steps.
    for steps in [5, 10] {
        let err = build(&KernelSpec {
            noneq_steps: Some(steps),
            ..noneq.clone()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("noneq_steps"), "{err}");
    }
    // The sampler of the model, in one chain and in an ensemble of two.
    for chains in [1, 2] {
        let sample = SampleSpec {
            lattice: lattice(4),
            action: ActionSpec::Phi4 {
                beta: 0.537,
                lambda: 0.5,
            },
            kernel: noneq.clone(),
            n: 200,
            therm: 10,
            thin: 1,
            seed: 1,
            model: Some(path.to_path_buf()),
            chains,
        };
        let report = latflow::run::sample(&sample, &mut (), &StopToken::never()).unwrap();
        assert_eq!(report.n, 200);
    }
}

#[test]
fn bad_placements_of_layers_between_the_steps_are_refused() {
    use latflow::run::{ActionSpec, SnfSpec};
    use latflow::train::GradientEstimator;
    let l = 4;
    let action = phi4(l, 0.537);
    let model = flow_with_blocks(l, 2, 0.05, 3);
    let trainer = |gradient: GradientEstimator| {
        let mut config = TrainConfig::new(8, 2, 0.01);
        config.gradient = gradient;
        Trainer::new(model.clone(), action.clone(), config).unwrap()
    };
    for (after, gradient, needle) in [
        (vec![4, 2], GradientEstimator::Total, "layers_after"),
        (vec![2, 7], GradientEstimator::Total, "layers_after"),
        (vec![2, 4], GradientEstimator::Path, "gradient"),
        (vec![1; 7], GradientEstimator::Total, "the flow has 6"),
    ] {
        let err = trainer(gradient)
            .with_snf(interleaved_snf(l, &after))
            .err()
            .unwrap();
        assert!(err.to_string().contains(needle), "{after:?}: {err}");
    }
    let err = NoneqEvolution::from_interleaved(
        action.clone(),
        model.interleave(2).unwrap(),
        phi4(l, 0.3),
        local(6, 0.8),
        &[3],
        8,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("layers_after"), "{err}");
    assert!(model.interleave(7).is_err());

    let spec = |every| SnfSpec {
        steps: 3,
        step_size: 0.5,
        start: ActionSpec::Phi4 {
            beta: 0.3,
            lambda: 0.5,
        },
        layers_every: Some(every),
    };
    for every in [0, 4] {
        let err = spec(every).validate().err().unwrap();
        assert!(err.to_string().contains("snf.layers_every"), "{err}");
    }
    let free_only = FlowConfig {
        prior: PriorConfig::StandardNormal,
        layers: vec![LayerConfig::FreeField(FreeFieldConfig::mass(0.2, 1.0))],
    };
    let err = spec(1).extend(free_only).err().unwrap();
    assert!(err.to_string().contains("snf.layers_every"), "{err}");

    let out = common::scratch_file("refused.json");
    let out = out.to_str().unwrap();
    let flags = ["train", "--beta", "0.5", "--lambda", "0.5", "--out", out];
    for extra in [
        &["--snf-layers-every", "2"][..],
        &["--snf-steps", "2", "--snf-layers-every", "3"],
    ] {
        let run = common::run_latflow(&[&flags[..], extra].concat());
        assert!(!run.status.success());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("--snf-layers-every"), "{stderr}");
    }
    assert!(!std::path::Path::new(out).exists());
}
