//! Trains a small flow (seed recipe, L = 6, β = 0.537, λ = 0.5) with the library API and
//! compares its independence-Metropolis chain with HMC: ⟨φ²⟩, χ, ⟨|m|⟩, acceptance, τ_int
//! of |m|, τ_rej of the flow chain, and wall-clock seconds.
//!
//! Run with `cargo run --release --example compare_samplers`.

use std::sync::Arc;
use std::time::Instant;

use latflow::action::Phi4;
use latflow::flow::{FlowConfig, FlowModel};
use latflow::kernel::{Chain, ChainRecord, FlowProposal, Hmc};
use latflow::observable::{Measurements, Summary};
use latflow::stats::rejection_autocorrelation;
use latflow::train::{TrainConfig, Trainer};
use latflow::{Action, Lattice, Proposal, State};

const STEPS: usize = 20_000;

fn sample<K: Proposal>(
    kernel: K,
    action: &Phi4,
    seed: u64,
) -> latflow::Result<(ChainRecord, Summary)> {
    let mut chain = Chain::new(kernel, State::zero(action), seed);
    chain.thermalise(500);
    let mut measurements = Measurements::new(action.lattice());
    let record = chain.run_with(STEPS, 1, |s| measurements.record(s.phi()))?;
    Ok((record, measurements.summary()?))
}

fn report(label: &str, record: &ChainRecord, summary: &Summary, kernel: &str, extra: &str) {
    let get = |name: &str| summary.get(name).expect("always estimated");
    let (phi2, chi, abs_m) = (get("phi2"), get("chi"), get("abs_m"));
    println!(
        "{label:<5} ⟨φ²⟩ {:.4}({:.0})  χ {:.3}({:.0})  ⟨|m|⟩ {:.4}({:.0})  acc {:.3}  τ_int(|m|) {:.2}{extra}  {:.2} s",
        phi2.mean,
        phi2.err * 1e4,
        chi.mean,
        chi.err * 1e3,
        abs_m.mean,
        abs_m.err * 1e4,
        record.acceptance_of(kernel),
        abs_m.tau_int,
        record.wall_seconds,
    );
}

fn main() -> latflow::Result<()> {
    let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 6)?, 0.537, 0.5)?);

    let start = Instant::now();
    let model = FlowModel::new(&FlowConfig::seed(36, 2, 8)?, action.lattice(), 1)?;
    let mut trainer = Trainer::new(model, action.clone(), TrainConfig::new(300, 350, 0.02))?;
    while !trainer.is_finished() {
        let m = trainer.step()?;
        if m.iteration % 50 == 0 {
            println!(
                "iteration {:>4}  loss {:8.4}  var {:7.4}  lr {:.4}",
                m.iteration, m.loss, m.loss_var, m.lr
            );
        }
    }
    let summary = trainer.train(&mut (), &latflow::StopToken::never())?;
    println!(
        "trained on {} configurations in {:.2} s ({:.2} s with evaluation): acceptance {:.3}, ESS {:.3}, M > 0 in {:.3}",
        summary.configs_seen,
        summary.seconds,
        start.elapsed().as_secs_f64(),
        summary.eval.acceptance,
        summary.eval.ess,
        summary.eval.fraction_positive_m
    );

    let model = Arc::new(trainer.into_model());
    let (record, flow) = sample(FlowProposal::new(model, action.clone(), 1000)?, &action, 1)?;
    let tau_rej = rejection_autocorrelation(&record.accept_history("flow"))?;
    let extra = format!(
        "  τ_rej {:.2}({:.0})",
        tau_rej.tau_rej,
        tau_rej.tau_rej_err * 100.0
    );
    report("flow", &record, &flow, "flow", &extra);

    let (record, hmc) = sample(Hmc::new(action.clone(), 1.0, 8)?, &action, 2)?;
    report("hmc", &record, &hmc, "hmc", "");
    Ok(())
}
