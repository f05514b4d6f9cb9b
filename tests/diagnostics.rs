//! Chain diagnostics and Γ-method reliability: a chain that never moves (zero-acceptance HMC,
//! a flow that is never accepted) is Unreliable with undefined errors, never ± 0; a poorly
//! trained flow used alone is flagged while a well-trained one and a healthy HMC chain are
//! Reliable; the Γ-method flags constant series and chains short against τ_int; the Pareto
//! k̂ recovers known tail shapes; chain records of consecutive runs concatenate.

mod common;

use std::sync::Arc;

use common::run_from_zero;
use latflow::action::Phi4;
use latflow::diagnostics::{ChainDiagnostics, Verdict, diagnose};
use latflow::flow::{Flow, FlowConfig, FlowModel, LatentPrior, Prior};
use latflow::kernel::{Chain, ChainRecord, FlowProposal, Hmc, KernelExpr, LocalMetropolis};
use latflow::observable::{FieldSquared, Observable, Summary};
use latflow::run::{ActionSpec, KernelSpec, SampleReport, SampleSpec, sample};
use latflow::stats::{GammaCaveat, gamma_method, pareto_k_hat, pareto_k_threshold};
use latflow::train::{TrainConfig, Trainer};
use latflow::{Action, Error, Lattice, Result, State, rng_from_seed};
use ndarray::{Array1, Array2, ArrayView2};
use rand::RngExt;

const BETA: f64 = 0.537;
const LAMBDA: f64 = 0.5;

fn lattice() -> Lattice {
    Lattice::hypercubic(2, 6).unwrap()
}

fn action() -> Arc<Phi4> {
    Arc::new(Phi4::hopping(lattice(), BETA, LAMBDA).unwrap())
}

/// The diagnostics of a chain with its estimates checked, as a report makes them.
fn diagnostics_of(record: &ChainRecord, summary: &Summary) -> ChainDiagnostics {
    let mut d = diagnose(record);
    if !d.errors_undefined() {
        d.check_estimates(
            ["phi2", "abs_m", "chi"]
                .iter()
                .map(|&n| (n, summary.get(n).unwrap())),
        );
    }
    d
}

fn hmc_spec(beta: f64, tau: f64, md_steps: usize) -> SampleSpec {
    SampleSpec {
        lattice: lattice(),
        action: ActionSpec::Phi4 {
            beta,
            lambda: LAMBDA,
        },
        kernel: KernelSpec {
            kind: KernelExpr::parse("hmc").unwrap(),
            tau,
            md_steps,
            ..KernelSpec::default()
        },
        n: 2_000,
        therm: 100,
        thin: 1,
        seed: 3,
        model: None,
        chains: 1,
    }
}

fn assert_undefined_errors(report: &SampleReport) {
    assert_eq!(report.verdict(), Verdict::Unreliable, "{report:#?}");
    let d = &report.diagnostics;
    assert!(
        d.has("chain_frozen") || d.has("few_state_changes"),
        "{d:#?}"
    );
    assert!(!report.observables.is_empty());
    for (name, e) in &report.observables {
        assert!(
            e.err.is_nan() && e.tau_int.is_nan() && e.tau_int_err.is_nan(),
            "{name}: {e:?}"
        );
        assert!(
            e.caveat
                .as_deref()
                .is_some_and(|c| c.contains("unreliable"))
        );
    }
    let json = serde_json::to_value(report).unwrap();
    assert!(json["observables"]["phi2"]["err"].is_null(), "{json}");
    assert_eq!(json["verdict"], "unreliable");
    // The report reads back, NaN included.
    let back: SampleReport = serde_json::from_value(json).unwrap();
    assert!(back.observables["phi2"].err.is_nan());
}

#[test]
fn zero_acceptance_hmc_run_is_unreliable_not_zero_error() {
    // At β = 100 nearly every trajectory has an enormous ΔH (the odd one is accepted);
    // a single MD step of length 100 at β = 0.537 is never accepted.
    for spec in [hmc_spec(100.0, 1.0, 10), hmc_spec(BETA, 100.0, 1)] {
        let report = sample(&spec, &mut (), &latflow::StopToken::never()).unwrap();
        assert!(report.acceptance < 0.01, "{}", report.acceptance);
        assert_undefined_errors(&report);
        assert!(report.diagnostics.state_changes < 20);
        assert!(report.diagnostics.longest_stuck_fraction > 0.1);
        let hmc = &report.diagnostics.hmc[0];
        assert!(hmc.divergences > spec.n / 2, "{hmc:?}");
        assert!(report.diagnostics.has("hmc_divergences"));
    }
}

#[test]
fn zero_acceptance_hmc_chain_is_unreliable() {
    let action = action();
    let hmc = Hmc::new(action.clone(), 100.0, 1).unwrap();
    let mut chain = Chain::new(hmc, State::zero(&*action), 8);
    let mut observables: Vec<Box<dyn Observable>> = vec![Box::new(FieldSquared)];
    let record = chain.run_observables(500, 1, &mut observables).unwrap();
    let d = diagnose(&record);
    assert_eq!(d.verdict, Verdict::Unreliable);
    assert!(d.has("chain_frozen") && d.has("hmc_energy_violation"));
    let phi2 = gamma_method(&record.series(observables[0].name(), 0).unwrap()).unwrap();
    assert!(phi2.err.is_nan() && phi2.tau_int.is_nan());
    assert!(phi2.caveat().is_some());
    let (qualified, caveat) = d.qualify(&phi2);
    assert!(qualified.err.is_nan());
    assert!(caveat.unwrap().contains("chain_frozen"));
}

/// A user's flow: φ = a z + b, far from the target when b is large.
struct ShiftedGaussian {
    lattice: Lattice,
    prior: Prior,
    a: f32,
    b: f32,
}

impl ShiftedGaussian {
    fn check(&self, x: &ArrayView2<f32>) -> Result<()> {
        if x.ncols() == self.lattice.volume() {
            Ok(())
        } else {
            Err(Error::Shape("columns".into()))
        }
    }

    fn log_det(&self) -> f64 {
        self.lattice.volume() as f64 * f64::from(self.a).ln()
    }
}

impl Flow for ShiftedGaussian {
    fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    fn prior(&self) -> &dyn LatentPrior {
        &self.prior
    }

    fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        self.check(&z)?;
        Ok((
            z.mapv(|x| self.a * x + self.b),
            Array1::from_elem(z.nrows(), self.log_det()),
        ))
    }

    fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        self.check(&phi)?;
        Ok((
            phi.mapv(|x| (x - self.b) / self.a),
            Array1::from_elem(phi.nrows(), -self.log_det()),
        ))
    }
}

#[test]
fn frozen_flow_chain_is_unreliable() {
    // Proposals near φ = 4 have an action far above the cold start's: none is accepted.
    let flow = Arc::new(ShiftedGaussian {
        lattice: lattice(),
        prior: Prior::StandardNormal,
        a: 0.3,
        b: 4.0,
    });
    let proposal = FlowProposal::new(flow, action(), 100).unwrap();
    let (record, summary) = run_from_zero(proposal, &*action(), 1, 0, 1_000);
    let d = diagnostics_of(&record, &summary);
    assert_eq!(d.verdict, Verdict::Unreliable, "{d:#?}");
    assert!(d.has("chain_frozen") && d.has("low_acceptance"));
    let flow = &d.flows[0];
    assert!(flow.tau_rej.is_nan() && flow.tau_rej_caveat.is_some());
    assert_eq!(flow.longest_rejection_run, 1_000);
    let frozen = d
        .findings
        .iter()
        .find(|f| f.code == "chain_frozen")
        .unwrap();
    assert!(frozen.message.contains("flow+local"), "{}", frozen.message);
    let phi2 = summary.get("phi2").unwrap();
    assert_eq!(phi2.caveats(), [GammaCaveat::ZeroVariance]);
}

/// The seed recipe (H 36, 2 affine blocks, K 8) at L = 6 trained for `iterations` of
/// `batch`.
fn seed_flow(iterations: usize, batch: usize, seed: u64) -> Arc<FlowModel> {
    let action = action();
    let config = FlowConfig::seed(36, 2, 8).unwrap();
    let model = FlowModel::new(&config, action.lattice(), seed).unwrap();
    let mut train = TrainConfig::new(batch, iterations, 0.02);
    train.seed = seed + 1;
    train.chunks = 2;
    let mut trainer = Trainer::new(model, action, train).unwrap();
    trainer
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    Arc::new(trainer.into_model())
}

#[test]
fn poor_flow_alone_is_flagged_and_well_trained_flow_is_not() {
    // A flow trained for 5 iterations of 100 accepts a fraction of a percent: alone it
    // leaves the chain standing still for long stretches and its importance weights are
    // dominated by a few samples. 10⁴ steps are enough for a trained flow (acceptance
    // above 0.5) to give well over 100 effective samples and a light weight tail, so
    // both assertions below can fail.
    let poor = seed_flow(5, 100, 20);
    let proposal = FlowProposal::new(poor.clone(), action(), 1000).unwrap();
    let (record, summary) = run_from_zero(proposal, &*action(), 21, 200, 10_000);
    let d = diagnostics_of(&record, &summary);
    assert_eq!(d.verdict, Verdict::Unreliable, "{d:#?}");
    assert!(
        d.has("long_stuck_run") && d.has("flow_weight_tail"),
        "{d:#?}"
    );
    assert!(d.flows[0].pareto_k > 1.0 && d.flows[0].tau_rej.is_finite());

    // The same poor flow inside flow+local is only a warning (the chain is exact).
    let local = LocalMetropolis::new(action(), 1.0).unwrap();
    let proposal = FlowProposal::new(poor, action(), 1000).unwrap();
    let (record, summary) = run_from_zero(
        latflow::kernel::Cycle::new(proposal, local),
        &*action(),
        22,
        200,
        5_000,
    );
    let d = diagnostics_of(&record, &summary);
    assert_eq!(d.verdict, Verdict::Warning, "{d:#?}");
    assert!(
        d.has("low_acceptance") && !d.has("long_stuck_run"),
        "{d:#?}"
    );

    let trained = seed_flow(300, 200, 30);
    let proposal = FlowProposal::new(trained, action(), 1000).unwrap();
    let (record, summary) = run_from_zero(proposal, &*action(), 31, 200, 10_000);
    let d = diagnostics_of(&record, &summary);
    assert_eq!(d.verdict, Verdict::Reliable, "{d:#?}");
    let flow = &d.flows[0];
    assert!(flow.tau_rej.is_finite() && flow.pareto_k < flow.pareto_k_threshold);
}

#[test]
fn healthy_hmc_run_is_reliable() {
    // 10⁴ trajectories at acceptance ≈ 0.9 and τ_int of a few: every check passes by a wide
    // margin, yet a stuck run or a τ_int above N/100 would fail it.
    let mut spec = hmc_spec(BETA, 1.0, 8);
    spec.n = 10_000;
    spec.therm = 500;
    let report = sample(&spec, &mut (), &latflow::StopToken::never()).unwrap();
    assert_eq!(
        report.verdict(),
        Verdict::Reliable,
        "{:#?}",
        report.diagnostics
    );
    for (name, e) in &report.observables {
        assert!(e.err > 0.0 && e.caveat.is_none(), "{name}: {e:?}");
    }
    let e = report.exp_minus_delta_h.as_ref().unwrap();
    assert!((e.mean - 1.0).abs() < 4.0 * e.err);
    assert_eq!(report.diagnostics.hmc[0].divergences, 0);
}

#[test]
fn gamma_method_flags_constant_short_and_not_long_white_noise() {
    let constant = gamma_method(&[1.5; 200]).unwrap();
    assert_eq!(constant.mean, 1.5);
    assert!(constant.err.is_nan() && constant.tau_int.is_nan());
    assert_eq!(constant.verdict(), Verdict::Unreliable);

    // AR(1) with ρ = 0.995 (τ_int ≈ (1 + ρ)/(2(1 − ρ)) ≈ 200) on N = 1000: only ~5 τ_int.
    let mut rng = rng_from_seed(4);
    let mut x = 0.0;
    let ar: Vec<f64> = (0..1000)
        .map(|_| {
            x = 0.995 * x + rng.random::<f64>() - 0.5;
            x
        })
        .collect();
    // The Γ-method underestimates so long a τ_int on so short a chain (τ_int ≈ 46 here),
    // so the check is that it is flagged at all.
    let e = gamma_method(&ar).unwrap();
    assert!(e.verdict() >= Verdict::Warning, "{e}");
    assert!(e.caveat().is_some());

    // White noise, N = 10⁵ (τ_int = ½): reliable.
    let noise: Vec<f64> = (0..100_000).map(|_| rng.random::<f64>()).collect();
    let e = gamma_method(&noise).unwrap();
    assert_eq!(e.verdict(), Verdict::Reliable, "{e}");
    assert!(e.caveat().is_none());
}

#[test]
fn pareto_k_hat_recovers_known_tail_shapes() {
    // Weights w = u^(−ξ), u uniform: a Pareto tail of shape ξ. With N = 10⁶ the fit uses the
    // M = 3000 largest weights; the estimator's standard error is about (1 + ξ)/√M, and
    // the tolerance is 4 of those. ξ = 0.4 and 1.0 lie on both sides of the 0.7 threshold.
    let n = 1_000_000;
    let m = 3000.0f64;
    for (xi, seed) in [(0.4, 1), (1.0, 2)] {
        let mut rng = rng_from_seed(seed);
        let log_w: Vec<f64> = (0..n)
            .map(|_| -xi * (1.0 - rng.random::<f64>()).ln())
            .collect();
        let k = pareto_k_hat(&log_w).unwrap();
        let sigma = (1.0 + xi) / m.sqrt();
        assert!((k - xi).abs() < 4.0 * sigma, "ξ {xi}: k̂ {k} ± {sigma}");
        assert_eq!(k > pareto_k_threshold(n), xi > 0.7);
    }
    // Light tails: normal log-weights of small spread are far below the threshold.
    let mut rng = rng_from_seed(3);
    let log_w: Vec<f64> = (0..10_000)
        .map(|_| 0.1 * (rng.random::<f64>() - 0.5))
        .collect();
    assert!(pareto_k_hat(&log_w).unwrap() < 0.5);
}

#[test]
fn records_of_consecutive_runs_append() {
    let action = action();
    let kernel = || {
        KernelSpec {
            kind: KernelExpr::parse("local+hmc").unwrap(),
            md_steps: 4,
            ..KernelSpec::default()
        }
        .build(&action, None)
        .unwrap()
    };
    let observables = || -> Vec<Box<dyn Observable>> { vec![Box::new(FieldSquared)] };
    // One run of 300 steps against runs of 100 and 200 of the same chain.
    let mut whole = Chain::new(kernel(), State::zero(&*action), 5);
    let all = whole.run_observables(300, 2, &mut observables()).unwrap();
    let mut split = Chain::new(kernel(), State::zero(&*action), 5);
    let mut first = split.run_observables(100, 2, &mut observables()).unwrap();
    let second = split.run_observables(200, 2, &mut observables()).unwrap();
    first.append(second).unwrap();
    assert_eq!(first.steps, 300);
    assert_eq!(first.moves, all.moves);
    assert_eq!(first.moves_per_step, all.moves_per_step);
    assert_eq!(first.measurements, all.measurements);
    assert_eq!(first.n_measurements(), 150);
    assert_eq!(first.state_changes(), all.state_changes());
    assert!(first.moves_per_step.iter().all(|&k| k == 2));
    // Records of other observables do not append.
    let mut other = Chain::new(kernel(), State::zero(&*action), 5);
    let bare = other.run_with(10, 1, |_| Ok(())).unwrap();
    assert!(matches!(first.append(bare), Err(Error::Incompatible(_))));
    assert_eq!(first.steps, 300);
}
