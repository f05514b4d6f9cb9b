//! Flow proposals against HMC on interacting φ⁴ (L = 6, β = 0.537, λ = 0.5): a trained
//! flow chain, mixed kernels (flow + local, flow + HMC) and HMC agree on ⟨φ²⟩, χ and ⟨|m|⟩;
//! a poor flow is still exact (only slower); τ_rej and τ_int(|m|) of a trained flow chain
//! agree; a kernel expression composing all three kernels agrees and records its moves in
//! the expression's order; the recycled flow chain agrees, for a trained and a poor flow,
//! and its errors match the spread of independent runs. Errors are Γ-method errors;
//! tolerances are 4σ of the combined error.

mod common;

use std::sync::{Arc, OnceLock};

use common::run_from_zero;
use latflow::action::Phi4;
use latflow::flow::{FlowConfig, FlowModel};
use latflow::kernel::{
    Cycle, FlowProposal, Hmc, KernelExpr, LocalMetropolis, MoveDetail, RecycledPlan, RecycledRun,
    recycled_sampling,
};
use latflow::observable::Summary;
use latflow::run::KernelSpec;
use latflow::stats::{GammaEstimate, rejection_autocorrelation};
use latflow::train::{TrainConfig, TrainSummary, Trainer};
use latflow::{Action, Lattice};

const BETA: f64 = 0.537;
const LAMBDA: f64 = 0.5;
/// Training iterations of the poor flow.
const POOR_ITERATIONS: usize = 100;

fn action() -> Arc<Phi4> {
    Arc::new(Phi4::hopping(Lattice::hypercubic(2, 6).unwrap(), BETA, LAMBDA).unwrap())
}

/// The seed recipe of docs/reference.md#training-recipes at L = 6 (H 36, 2 affine blocks, K
/// 8, batch 300, 350 iterations, η0 0.02, cosine), trained once and shared by the tests.
fn trained() -> Arc<FlowModel> {
    static MODEL: OnceLock<Arc<FlowModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut train = TrainConfig::new(300, 350, 0.02);
            train.seed = 5;
            let (model, summary) = train_seed_recipe(11, train);
            assert!(
                summary.eval.acceptance > 0.5,
                "trained acceptance {}",
                summary.eval.acceptance
            );
            // Both Z2 modes kept: M > 0 in half of 2000 samples (binomial σ ≈ 0.011).
            let positive = summary.eval.fraction_positive_m;
            assert!((positive - 0.5).abs() < 4.0 * 0.0112, "M > 0 in {positive}");
            Arc::new(model)
        })
        .clone()
}

/// The seed recipe (H 36, 2 affine blocks, K 8) on the L = 6 lattice, initialised with seed
/// `init` and trained by `train` over two chunks: the model and the training summary.
fn train_seed_recipe(init: u64, mut train: TrainConfig) -> (FlowModel, TrainSummary) {
    let action = action();
    let config = FlowConfig::seed(36, 2, 8).unwrap();
    let model = FlowModel::new(&config, action.lattice(), init).unwrap();
    train.chunks = 2;
    let mut trainer = Trainer::new(model, action, train).unwrap();
    let summary = trainer
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    (trainer.into_model(), summary)
}

fn hmc_reference() -> &'static Summary {
    static HMC: OnceLock<Summary> = OnceLock::new();
    HMC.get_or_init(|| {
        let hmc = Hmc::new(action(), 1.0, 8).unwrap();
        run_from_zero(hmc, &*action(), 101, 500, 20_000).1
    })
}

fn agree(name: &str, a: &GammaEstimate, b: &GammaEstimate, label: &str) {
    let sigma = (a.err * a.err + b.err * b.err).sqrt();
    assert!(
        (a.mean - b.mean).abs() < 4.0 * sigma,
        "{label} {name}: {} ± {} vs HMC {} ± {}",
        a.mean,
        a.err,
        b.mean,
        b.err
    );
    // The test can fail: the combined error is small compared with the values.
    assert!(
        sigma < 0.05 * b.mean.abs(),
        "{label} {name}: error {sigma} too large"
    );
}

fn agree_with_hmc(summary: &Summary, label: &str) {
    let hmc = hmc_reference();
    for name in ["phi2", "chi", "abs_m"] {
        agree(
            name,
            summary.get(name).unwrap(),
            hmc.get(name).unwrap(),
            label,
        );
    }
}

#[test]
fn trained_flow_chain_and_mixed_kernels_agree_with_hmc() {
    let model = trained();
    let action = action();
    let flow = |b| FlowProposal::new(model.clone(), action.clone(), b).unwrap();

    let (record, summary) = run_from_zero(flow(500), &*action, 1, 100, 20_000);
    let acceptance = record.acceptance_of("flow");
    assert!(acceptance > 0.5, "flow acceptance {acceptance}");
    agree_with_hmc(&summary, "flow");

    let local = LocalMetropolis::new(action.clone(), 1.0).unwrap();
    let (record, summary) = run_from_zero(Cycle::new(flow(256), local), &*action, 2, 200, 10_000);
    assert!(record.acceptance_of("flow") > 0.4);
    agree_with_hmc(&summary, "flow+local");

    let hmc = Hmc::new(action.clone(), 1.0, 8).unwrap();
    let (record, summary) = run_from_zero(Cycle::new(flow(256), hmc), &*action, 3, 200, 10_000);
    assert!(record.acceptance_of("flow") > 0.4);
    agree_with_hmc(&summary, "flow+hmc");
}

#[test]
fn kernel_expression_of_flow_local_and_hmc_agrees_with_hmc() {
    let spec = KernelSpec {
        kind: KernelExpr::parse("flow+local*2+hmc").unwrap(),
        md_steps: 8,
        flow_batch: 256,
        ..KernelSpec::default()
    };
    let kernel = spec.build(&action(), Some(&trained())).unwrap();
    let steps = 8_000;
    let (record, summary) = run_from_zero(kernel, &*action(), 4, 200, steps);
    agree_with_hmc(&summary, "flow+local*2+hmc");

    // Per step: one flow proposal, two local sweeps of 36 sites, one HMC trajectory.
    assert_eq!(record.moves.len(), 4 * steps);
    for (i, group) in record.moves.chunks(4).enumerate() {
        let labels: Vec<&str> = group.iter().map(|m| m.kernel.as_str()).collect();
        assert_eq!(labels, ["flow", "local", "local", "hmc"], "step {i}");
        assert!(matches!(group[0].detail, MoveDetail::Flow { .. }));
        assert!(matches!(
            group[1].detail,
            MoveDetail::LocalSweep { step_size, .. } if step_size > 0.0
        ));
        assert_eq!((group[1].proposed, group[2].proposed), (36, 36));
        assert!(matches!(
            group[3].detail,
            MoveDetail::Hmc {
                md_steps: 4..=12,
                ..
            }
        ));
        // Moves whose ratio favours the proposal are always accepted.
        for m in [&group[0], &group[3]] {
            let log_ratio = m.log_acceptance_ratio().unwrap();
            assert!(log_ratio < 0.0 || m.accepted == 1, "step {i}: {m:?}");
        }
    }
    assert_eq!(record.accept_history("flow").len(), steps);
    assert_eq!(record.log_weight_ratios("flow").len(), steps);
    assert_eq!(record.delta_h().len(), steps);
    for label in ["flow", "local", "hmc"] {
        let acceptance = record.acceptance_of(label);
        assert!(
            acceptance > 0.3 && acceptance < 1.0,
            "{label}: {acceptance}"
        );
    }
}

/// The seed recipe trained for a few iterations: a deliberately poor flow, shared by the tests.
fn poor() -> Arc<FlowModel> {
    static MODEL: OnceLock<Arc<FlowModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let train = TrainConfig::new(200, POOR_ITERATIONS, 0.02);
            Arc::new(train_seed_recipe(3, train).0)
        })
        .clone()
}

/// A deliberately poor flow proposes badly, yet its chain is exact: it agrees with HMC,
/// only slower.
#[test]
fn poor_flow_chain_is_exact_but_slow() {
    let action = action();
    let flow = FlowProposal::new(poor(), action.clone(), 1000).unwrap();
    let (record, summary) = run_from_zero(flow, &*action, 7, 500, 120_000);
    let acceptance = record.acceptance_of("flow");
    let rejection = rejection_autocorrelation(&record.accept_history("flow")).unwrap();
    eprintln!(
        "poor flow: acceptance {acceptance}, τ_rej {}, longest rejection run {}",
        rejection.tau_rej, rejection.longest_rejection_run
    );
    assert!(acceptance < 0.4, "poor-flow acceptance {acceptance}");
    agree_with_hmc(&summary, "poor flow");
}

#[test]
fn rejection_and_magnetisation_autocorrelation_times_agree() {
    let model = trained();
    let action = action();
    let flow = FlowProposal::new(model, action.clone(), 1000).unwrap();
    let (record, summary) = run_from_zero(flow, &*action, 9, 100, 40_000);
    let rejection = rejection_autocorrelation(&record.accept_history("flow")).unwrap();
    let abs_m = summary.get("abs_m").unwrap();
    let sigma = (rejection.tau_rej_err.powi(2) + abs_m.tau_int_err.powi(2)).sqrt();
    assert!(
        (rejection.tau_rej - abs_m.tau_int).abs() < 4.0 * sigma,
        "τ_rej {} ± {} vs τ_int(|m|) {} ± {}",
        rejection.tau_rej,
        rejection.tau_rej_err,
        abs_m.tau_int,
        abs_m.tau_int_err
    );
    // Resolution: the errors are small against the difference from independent sampling.
    assert!(sigma < 0.25 * (rejection.tau_rej - 0.5), "σ {sigma}");
}

#[test]
fn proposal_refuses_a_flow_for_another_lattice() {
    let config = FlowConfig::seed(16, 1, 4).unwrap();
    let model = Arc::new(FlowModel::new(&config, &Lattice::hypercubic(2, 4).unwrap(), 0).unwrap());
    assert!(FlowProposal::new(model.clone(), action(), 10).is_err());
    let small = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4).unwrap(), BETA, LAMBDA).unwrap());
    assert!(FlowProposal::new(model, small, 0).is_err());
}

/// A recycled run of `model` with (block, blocks, therm) blocks, its diagnostics printed
/// under `label`.
fn recycled(
    model: &FlowModel,
    (block, blocks, therm): (usize, usize, usize),
    seed: u64,
    label: &str,
) -> RecycledRun {
    let plan = RecycledPlan {
        block,
        blocks,
        therm,
    };
    let stop = latflow::StopToken::never();
    let run = recycled_sampling(model, &*action(), &plan, seed, &mut (), &stop).unwrap();
    eprintln!(
        "recycled, {label}: moved {}, ESS {}, τ_eff {:?}",
        run.moved, run.ess, run.taus
    );
    run
}

/// The recycled chain (blocks of proposals plus the current state, every measurement the
/// block's weighted average) agrees with HMC for the trained flow and for the poor one (it
/// is exact for any flow), and moves its state in most blocks.
#[test]
fn recycled_flow_chain_agrees_with_hmc_for_good_and_poor_flows() {
    let run = recycled(&trained(), (200, 100, 5), 21, "trained flow");
    assert_eq!(run.measured_blocks, 100);
    assert!(run.moved > 0.9, "moved in {} of the blocks", run.moved);
    agree_with_hmc(&run.summary, "recycled trained flow");
    let positive = run.summary.get("m_positive").unwrap();
    assert!((positive.mean - 0.5).abs() < 4.0 * positive.err);

    let run = recycled(&poor(), (1000, 120, 2), 22, "poor flow");
    assert!(run.ess < 0.3, "the poor flow's ESS {}", run.ess);
    agree_with_hmc(&run.summary, "recycled poor flow");
}

/// The Γ-method error of a recycled run is honest: over 16 independent runs the spread of
/// the means matches the mean squared error (the ratio follows χ²₁₅/15, whose 0.1 % and
/// 99.9 % points are 0.25 and 2.5), for ⟨φ²⟩ and ⟨|m|⟩.
#[test]
fn recycled_errors_match_the_spread_of_independent_runs() {
    let action = action();
    let model = trained();
    let plan = RecycledPlan {
        block: 50,
        blocks: 60,
        therm: 4,
    };
    let runs: Vec<_> = (0..16)
        .map(|seed| {
            recycled_sampling(
                &*model,
                &*action,
                &plan,
                300 + seed,
                &mut (),
                &latflow::StopToken::never(),
            )
            .unwrap()
        })
        .collect();
    for name in ["phi2", "abs_m"] {
        let estimates: Vec<&GammaEstimate> =
            runs.iter().map(|r| r.summary.get(name).unwrap()).collect();
        let k = estimates.len() as f64;
        let mean = estimates.iter().map(|e| e.mean).sum::<f64>() / k;
        let spread = estimates
            .iter()
            .map(|e| (e.mean - mean).powi(2))
            .sum::<f64>()
            / (k - 1.0);
        let error2 = estimates.iter().map(|e| e.err * e.err).sum::<f64>() / k;
        let ratio = spread / error2;
        eprintln!("{name}: spread² / error² = {ratio}");
        assert!(
            (0.25..2.5).contains(&ratio),
            "{name}: spread² / error² = {ratio}"
        );
    }
}

/// A block without proposals, or too few blocks for an error, is refused up front.
#[test]
fn recycled_run_refuses_empty_blocks_and_too_few_blocks() {
    let action = action();
    let stop = latflow::StopToken::never();
    let plan = |block, blocks| RecycledPlan {
        block,
        blocks,
        therm: 0,
    };
    let err = recycled_sampling(&*poor(), &*action, &plan(0, 10), 1, &mut (), &stop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("block"), "{err}");
    let err = recycled_sampling(&*poor(), &*action, &plan(10, 1), 1, &mut (), &stop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 2"), "{err}");
}
