//! A user-defined coupling layer, from property tests to a trained proposal, through the
//! public API only:
//!
//! 1. a pointwise transform written by hand, `TanhAffine`: C(v; s, t) = v e^{b tanh s} + t,
//!    whose log-scale is bounded by b (a JSON setting), checked with the `latflow::testing`
//!    transform checks (invertibility in f64 and f32, log-derivative and backward pass
//!    against finite differences, finite outputs);
//! 2. a conditioner net, `SkipNet`: θ = W₂ tanh(W₁ x + b₁) + b₂ + W_s x (a hidden layer plus a
//!    linear skip connection from the passive values), with parameters from the flow's
//!    `ParamBuilder`;
//! 3. both registered by name in a `LayerRegistry` and named in a `FlowConfig` next to a
//!    built-in Z2-affine block; the user layer is checked inside a flow (invertibility,
//!    log-det against a brute-force Jacobian, parameter gradients against finite
//!    differences), then the flow is trained by reverse KL on L = 6 φ⁴ (β = 0.537,
//!    λ = 0.5), saved and loaded back through the registry;
//! 4. the loaded flow proposes in a flow + local Metropolis chain whose ⟨φ²⟩ and χ must
//!    agree with an HMC chain within 4σ (Γ-method errors).
//!
//! The program prints what it finds and exits with status 1 if any check fails.
//! Run with `cargo run --release --example custom_layer`.

use std::sync::Arc;

use latflow::action::Phi4;
use latflow::flow::{
    BlockConfig, ChunkSeed, ConditionerNet, Flow, FlowConfig, FlowFloat, FlowModel, LayerConfig,
    LayerRegistry, NetConfig, NetContext, ParamBuilder, Partition, PointwiseTransform, PriorConfig,
    Real, TransformKind, Workspace,
};
use latflow::kernel::{Chain, Cycle, FlowProposal, Hmc, LocalMetropolis};
use latflow::observable::{Measurements, Summary};
use latflow::stats::GammaEstimate;
use latflow::tape::{ParamSlice, Tape, Var};
use latflow::testing::{
    GradCheck, LOG_DET_RTOL_F64, assert_gradients_close, check_flow_invertible,
    check_flow_log_det_exact, check_transform_finite, check_transform_gradients,
    check_transform_invertible, check_transform_log_derivative, finite_difference_gradient, to_f32,
};
use latflow::train::{TrainConfig, Trainer};
use latflow::{Action, Error, Lattice, Proposal, State, rng_from_seed};
use ndarray::Array2;
use rand::RngExt;
use serde::Deserialize;

const BETA: f64 = 0.537;
const LAMBDA: f64 = 0.5;
const EXTENT: usize = 6;

// ---------------------------------------------------------------------------------------
// The user's transform.

/// C(v; s, t) = v e^{b tanh s} + t with parameters `[s, t]` per site: an affine map whose
/// log-scale stays within ±b, so that no site can be stretched without bound.
#[derive(Clone, Copy, Debug)]
struct TanhAffine {
    bound: f64,
}

/// The JSON configuration of [`TanhAffine`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TanhAffineConfig {
    /// b: the largest |log-scale| (positive).
    max_log_scale: f64,
}

impl TanhAffine {
    fn new(config: TanhAffineConfig) -> latflow::Result<Self> {
        let bound = config.max_log_scale;
        if !(bound.is_finite() && bound > 0.0) {
            return Err(Error::param(
                "max_log_scale",
                format!("must be positive and finite, got {bound}"),
            ));
        }
        Ok(TanhAffine { bound })
    }

    /// b tanh s and its derivative with respect to s.
    fn log_scale<T: Real>(&self, s: T) -> (T, T) {
        let b = T::from_f64(self.bound).unwrap_or_else(T::nan);
        let tanh = s.tanh();
        (b * tanh, b * (T::one() - tanh * tanh))
    }
}

impl<T: Real> PointwiseTransform<T> for TanhAffine {
    fn params_per_site(&self) -> usize {
        2
    }

    fn forward(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T]) {
        for (((yi, li), &vi), p) in y.iter_mut().zip(ld.iter_mut()).zip(v).zip(theta.chunks(2)) {
            let (log_scale, _) = self.log_scale(p[0]);
            *yi = vi * log_scale.exp() + p[1];
            *li = log_scale;
        }
    }

    fn inverse(&self, y: &[T], theta: &[T], v: &mut [T], ld: &mut [T]) {
        for (((vi, li), &yi), p) in v.iter_mut().zip(ld.iter_mut()).zip(y).zip(theta.chunks(2)) {
            let (log_scale, _) = self.log_scale(p[0]);
            *vi = (yi - p[1]) * (-log_scale).exp();
            *li = -log_scale;
        }
    }

    fn backward(&self, v: &[T], theta: &[T], gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]) {
        for (i, (&vi, p)) in v.iter().zip(theta.chunks(2)).enumerate() {
            let (log_scale, slope) = self.log_scale(p[0]);
            let scale = log_scale.exp();
            // y = v e^ℓ + t, ld = ℓ, with ℓ = b tanh s.
            gv[i] = gv[i] + gy[i] * scale;
            gtheta[2 * i] = gtheta[2 * i] + (gy[i] * vi * scale + gld[i]) * slope;
            gtheta[2 * i + 1] = gtheta[2 * i + 1] + gy[i];
        }
    }
}

// ---------------------------------------------------------------------------------------
// The user's conditioner net.

/// θ = W₂ tanh(W₁ x + b₁) + b₂ + W_s x over the passive values x.
struct SkipNet {
    hidden: (ParamSlice, ParamSlice),
    output: (ParamSlice, ParamSlice),
    skip: ParamSlice,
}

/// The JSON configuration of [`SkipNet`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipNetConfig {
    /// Width of the hidden layer (positive).
    hidden: usize,
}

impl SkipNet {
    fn new(
        config: SkipNetConfig,
        context: &NetContext<'_>,
        params: &mut ParamBuilder,
    ) -> latflow::Result<Self> {
        if config.hidden == 0 {
            return Err(Error::param("hidden", "the skip net needs a hidden unit"));
        }
        let (inputs, outputs) = (context.passive().len(), context.outputs());
        // Small output and skip weights: a fresh layer is close to the identity.
        Ok(SkipNet {
            hidden: (
                params.glorot_uniform(inputs, config.hidden, 1.0),
                params.zeros(1, config.hidden),
            ),
            output: (
                params.glorot_uniform(config.hidden, outputs, 0.1),
                params.zeros(1, outputs),
            ),
            skip: params.glorot_uniform(inputs, outputs, 0.1),
        })
    }
}

impl ConditionerNet for SkipNet {
    fn build<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var {
        let h = tape.linear(params, input, self.hidden.0, Some(self.hidden.1));
        let h = tape.tanh(h);
        let deep = tape.linear(params, h, self.output.0, Some(self.output.1));
        let skip = tape.linear(params, input, self.skip, None);
        tape.add(deep, skip)
    }
}

// ---------------------------------------------------------------------------------------
// Registry and flow configuration.

/// The user's layers by name: what both building and loading the flow need.
fn registry() -> LayerRegistry {
    LayerRegistry::new()
        .with_transform("tanh_affine", TanhAffine::new)
        .with_net("skip_net", SkipNet::new)
}

/// A block of the user's transform and net.
fn custom_block(hidden: usize) -> LayerConfig {
    LayerConfig::Block(BlockConfig {
        transform: TransformKind::Custom {
            name: "tanh_affine".into(),
            config: serde_json::json!({ "max_log_scale": 2.0 }),
        },
        net: NetConfig::Custom {
            name: "skip_net".into(),
            config: serde_json::json!({ "hidden": hidden }),
        },
        separate_nets: false,
        partition: Partition::Checkerboard,
    })
}

/// A built-in Z2-affine block, a learnable scale, the user's block and another scale.
fn mixed_flow(hidden: usize) -> FlowConfig {
    let mut config = FlowConfig::z2_affine(1, hidden);
    config.layers.push(custom_block(hidden));
    config.layers.push(LayerConfig::Scale);
    config
}

type Failure = Box<dyn std::error::Error>;

fn check(name: &str, outcome: Result<(), String>) -> Result<(), Failure> {
    match outcome {
        Ok(()) => {
            println!("  pass  {name}");
            Ok(())
        }
        Err(message) => Err(format!("{name}: {message}").into()),
    }
}

// ---------------------------------------------------------------------------------------
// 1. The transform's laws.

fn check_transform() -> Result<(), Failure> {
    let transform = TanhAffine::new(TanhAffineConfig { max_log_scale: 2.0 })?;
    let (cases, sites) = (100, 16);
    let mut rng = rng_from_seed(2024);
    println!("transform tanh_affine: {cases} random cases of {sites} sites");
    for case in 0..cases {
        let v: Vec<f64> = (0..sites).map(|_| rng.random_range(-10.0..10.0)).collect();
        let theta: Vec<f64> = (0..2 * sites)
            .map(|_| rng.random_range(-3.0..3.0))
            .collect();
        let grad = GradCheck {
            seed: case,
            ..GradCheck::default()
        };
        let outcomes = [
            (
                "invertible in f64 (tol 1e-10)",
                check_transform_invertible::<f64>(&transform, &v, &theta, 1e-10),
            ),
            (
                "invertible in f32 (tol 1e-5)",
                check_transform_invertible::<f32>(&transform, &to_f32(&v), &to_f32(&theta), 1e-5),
            ),
            (
                "log-derivative vs finite differences (h 1e-6, tol 1e-6)",
                check_transform_log_derivative(&transform, &v, &theta, 1e-6, 1e-6),
            ),
            (
                "backward vs finite differences",
                check_transform_gradients(&transform, &v, &theta, &grad),
            ),
            (
                "finite outputs",
                check_transform_finite::<f64>(&transform, &v, &theta),
            ),
        ];
        for (name, outcome) in outcomes {
            if let Err(message) = outcome {
                return Err(format!("{name}, case {case}: {message}").into());
            }
        }
    }
    println!("  pass  invertibility (f64, f32), log-derivative, backward, finiteness");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. The user's layer inside a flow.

/// Gradient of L = Σ a φ + Σ b log|det| with respect to every parameter, by the tape in f64,
/// against central finite differences of the f64 forward pass.
fn check_parameter_gradients(model: &FlowModel) -> Result<(), String> {
    let (rows, volume) = (3, model.lattice().volume());
    let mut rng = rng_from_seed(7);
    let z = Array2::from_shape_fn((rows, volume), |_| rng.random_range(-2.0..2.0f64));
    let a = Array2::from_shape_fn((rows, volume), |_| rng.random_range(-1.0..1.0f64));
    let b: Vec<f64> = (0..rows).map(|_| rng.random_range(-1.0..1.0)).collect();
    let params: Vec<f64> = model.params().iter().map(|&p| f64::from(p)).collect();
    let loss = |p: &[f64]| {
        let (phi, logdet) = model.forward_with(p, z.view());
        (&phi * &a).sum() + logdet.iter().zip(&b).map(|(l, w)| l * w).sum::<f64>()
    };
    let mut analytic = vec![0.0; params.len()];
    // One chunk: the seed sees the whole batch.
    let mut workspace = Workspace::<f64>::new(1);
    model
        .forward_backward_with(
            &params,
            z.view(),
            &mut workspace,
            |mut seed: ChunkSeed<'_, f64>| {
                seed.grad_phi.assign(&a);
                seed.grad_logdet
                    .iter_mut()
                    .zip(&b)
                    .for_each(|(g, &w)| *g = w);
            },
            &mut analytic,
        )
        .map_err(|e| e.to_string())?;
    let numeric = finite_difference_gradient(loss, &params, 1e-5);
    assert_gradients_close(&analytic, &numeric, 1e-6, 1e-7)
}

fn check_layer(lattice: &Lattice, registry: &LayerRegistry) -> Result<(), Failure> {
    let config = FlowConfig {
        prior: PriorConfig::StandardNormal,
        layers: vec![custom_block(16)],
    };
    let mut model = FlowModel::new_with(&config, lattice, 3, registry)?;
    // Parameters away from the near-identity start, so that every term matters.
    let mut rng = rng_from_seed(5);
    for p in model.params_mut() {
        *p += rng.random_range(-0.3..0.3f32);
    }
    println!(
        "user block alone on {lattice}: {} parameters",
        model.n_params()
    );
    let z = Array2::from_shape_fn((8, lattice.volume()), |_| rng.random_range(-2.5..2.5f32));
    check(
        "flow invertible (tol 1e-4)",
        check_flow_invertible(&model, z.view(), 1e-4),
    )?;
    check(
        "log-det vs the exact forward-mode Jacobian's LU in f64 (rtol 1e-9)",
        check_flow_log_det_exact::<f64>(&model, z.view(), LOG_DET_RTOL_F64),
    )?;
    check(
        "parameter gradients vs finite differences in f64 (h 1e-5, rtol 1e-6, atol 1e-7)",
        check_parameter_gradients(&model),
    )
}

// ---------------------------------------------------------------------------------------
// 3. Training, saving and loading.

fn train(action: &Arc<Phi4>, registry: &LayerRegistry) -> Result<FlowModel, Failure> {
    let config = mixed_flow(36);
    let model = FlowModel::new_with(&config, action.lattice(), 11, registry)?;
    let mut train = TrainConfig::new(500, 600, 0.01);
    train.seed = 5;
    train.chunks = 2;
    let mut trainer = Trainer::new(model, action.clone(), train)?;
    let summary = trainer.train(&mut (), &latflow::StopToken::never())?;
    println!(
        "trained Z2-affine + tanh_affine/skip_net flow ({} parameters) in {:.1} s: \
         acceptance {:.3}, ESS fraction {:.3}, final loss {:.3}",
        trainer.model().n_params(),
        summary.seconds,
        summary.eval.acceptance,
        summary.eval.ess,
        summary.final_loss
    );
    Ok(trainer.into_model())
}

fn save_and_load(model: &FlowModel, registry: &LayerRegistry) -> Result<FlowModel, Failure> {
    let path =
        std::env::temp_dir().join(format!("latflow-custom-layer-{}.json", std::process::id()));
    model.save(&path)?;
    let without = FlowModel::load(&path);
    let loaded = FlowModel::load_with(&path, registry);
    std::fs::remove_file(&path)?;
    match without {
        Err(e @ Error::Unregistered { .. }) => println!("loading without the registry: {e}"),
        Err(e) => return Err(format!("loading without the registry: unexpected error {e}").into()),
        Ok(_) => return Err("a model with user layers loaded without its registry".into()),
    }
    let loaded = loaded?;
    let (phi, _) = model.sample(64, &mut rng_from_seed(3))?;
    let identical = loaded.params() == model.params()
        && loaded.log_density(phi.view())? == model.log_density(phi.view())?;
    if !identical {
        return Err("the loaded model differs from the saved one".into());
    }
    println!(
        "  pass  saved and loaded back through the registry: identical parameters and log-densities"
    );
    Ok(loaded)
}

// ---------------------------------------------------------------------------------------
// 4. Sampling.

fn run_chain<K: Proposal>(
    kernel: K,
    action: &Phi4,
    seed: u64,
    therm: usize,
    n: usize,
) -> Result<(latflow::kernel::ChainRecord, Summary), Failure> {
    let mut chain = Chain::new(kernel, State::zero(action), seed);
    chain.thermalise(therm);
    let mut measurements = Measurements::new(action.lattice());
    let record = chain.run_with(n, 1, |s| measurements.record(s.phi()))?;
    Ok((record, measurements.summary()?))
}

/// |Δ| < 4σ of the combined Γ-method error, which must itself resolve 5% of the value.
fn agree(name: &str, flow: &GammaEstimate, hmc: &GammaEstimate) -> Result<(), Failure> {
    let sigma = flow.err.hypot(hmc.err);
    let pulls = (flow.mean - hmc.mean).abs() / sigma;
    println!(
        "  {name:5} flow+local {:.4} ± {:.4}   HMC {:.4} ± {:.4}   |Δ| = {pulls:.2}σ",
        flow.mean, flow.err, hmc.mean, hmc.err
    );
    if pulls >= 4.0 {
        return Err(format!("{name}: flow+local and HMC differ by {pulls:.2}σ").into());
    }
    if sigma >= 0.05 * hmc.mean.abs() {
        return Err(
            format!("{name}: combined error {sigma} does not resolve 5% of the value").into(),
        );
    }
    Ok(())
}

fn compare_with_hmc(model: FlowModel, action: &Arc<Phi4>) -> Result<(), Failure> {
    let flow = FlowProposal::new(Arc::new(model), action.clone(), 256)?;
    let local = LocalMetropolis::new(action.clone(), 1.0)?;
    let (record, flow_local) = run_chain(Cycle::new(flow, local), action, 2, 200, 10_000)?;
    let hmc = Hmc::new(action.clone(), 1.0, 8)?;
    let (_, hmc) = run_chain(hmc, action, 101, 500, 20_000)?;
    println!(
        "flow+local chain (10 000 steps, flow acceptance {:.3}) against HMC (20 000 trajectories):",
        record.acceptance_of("flow")
    );
    for name in ["phi2", "chi"] {
        let missing = || format!("observable {name} not measured");
        agree(
            name,
            flow_local.get(name).ok_or_else(missing)?,
            hmc.get(name).ok_or_else(missing)?,
        )?;
    }
    Ok(())
}

/// The whole example; an error describes the first check that failed.
pub fn run() -> Result<(), Failure> {
    let action = Arc::new(Phi4::hopping(
        Lattice::hypercubic(2, EXTENT)?,
        BETA,
        LAMBDA,
    )?);
    let registry = registry();
    check_transform()?;
    check_layer(action.lattice(), &registry)?;
    let model = train(&action, &registry)?;
    let loaded = save_and_load(&model, &registry)?;
    compare_with_hmc(loaded, &action)?;
    println!("all checks passed");
    Ok(())
}

#[allow(dead_code)]
fn main() {
    if let Err(e) = run() {
        eprintln!("custom_layer: FAILED: {e}");
        std::process::exit(1);
    }
}
