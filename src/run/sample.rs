//! Sampling runs: a [`SampleSpec`] in, a [`SampleReport`] out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ActionSpec, model_target};
use crate::action::{Action, Phi4};
use crate::error::{Error, Result};
use crate::flow::FlowModel;
use crate::kernel::{
    Chain, ChainRecord, Cycle, FlowProposal, Hmc, Integrator, LocalMetropolis, Proposal, State,
};
use crate::lattice::Lattice;
use crate::observable::{ActionDensity, Measurements, Summary};

/// Which kernel drives the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelKind {
    /// Local Metropolis sweeps.
    Local,
    /// Hybrid Monte Carlo trajectories.
    Hmc,
    /// A cycle: one local sweep, then one HMC trajectory.
    #[serde(rename = "local+hmc")]
    LocalHmc,
    /// Independence proposals from a trained flow.
    Flow,
    /// A cycle: one flow proposal, then one local sweep.
    #[serde(rename = "flow+local")]
    FlowLocal,
    /// A cycle: one flow proposal, then one HMC trajectory.
    #[serde(rename = "flow+hmc")]
    FlowHmc,
}

impl KernelKind {
    /// The name used in reports and on the command line.
    pub fn label(&self) -> &'static str {
        match self {
            KernelKind::Local => "local",
            KernelKind::Hmc => "hmc",
            KernelKind::LocalHmc => "local+hmc",
            KernelKind::Flow => "flow",
            KernelKind::FlowLocal => "flow+local",
            KernelKind::FlowHmc => "flow+hmc",
        }
    }

    /// True for the kernels that need a trained flow.
    pub fn uses_flow(&self) -> bool {
        matches!(
            self,
            KernelKind::Flow | KernelKind::FlowLocal | KernelKind::FlowHmc
        )
    }
}

/// Kernel parameters; only those of the chosen kind are used.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelSpec {
    /// The kernel.
    pub kind: KernelKind,
    /// Initial local step size δ (tuned during thermalisation).
    pub step_size: f64,
    /// HMC trajectory length τ.
    pub tau: f64,
    /// HMC molecular-dynamics steps per trajectory.
    pub md_steps: usize,
    /// HMC integrator.
    pub integrator: Integrator,
    /// Keep the HMC trajectory length fixed instead of randomising it (not recommended).
    pub fixed_length: bool,
    /// Flow proposals generated per batch.
    pub flow_batch: usize,
}

impl Default for KernelSpec {
    fn default() -> Self {
        KernelSpec {
            kind: KernelKind::Hmc,
            step_size: 1.0,
            tau: 1.0,
            md_steps: 10,
            integrator: Integrator::Leapfrog,
            fixed_length: false,
            flow_batch: 1000,
        }
    }
}

/// A complete sampling run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSpec {
    /// The lattice.
    pub lattice: Lattice,
    /// The action.
    pub action: ActionSpec,
    /// The kernel.
    #[serde(default)]
    pub kernel: KernelSpec,
    /// Measured steps (trajectories for HMC, sweeps for local updates).
    pub n: usize,
    /// Thermalisation steps before measuring.
    #[serde(default)]
    pub therm: usize,
    /// Measure every `thin`-th step.
    #[serde(default = "one")]
    pub thin: usize,
    /// Seed of the chain's random stream.
    #[serde(default)]
    pub seed: u64,
    /// Trained model file, for the flow kernels; it must have been trained for this lattice
    /// and action.
    #[serde(default)]
    pub model: Option<PathBuf>,
}

fn one() -> usize {
    1
}

impl SampleSpec {
    /// Reads a TOML runcard.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let spec: SampleSpec = toml::from_str(&text)
            .map_err(|e| Error::format(format!("runcard {}", path.display()), e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks counts and parameters that do not depend on the action.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::param("n", "must be at least 1"));
        }
        if self.thin == 0 {
            return Err(Error::param("thin", "must be at least 1"));
        }
        if self.kernel.kind.uses_flow() && self.model.is_none() {
            return Err(Error::param(
                "model",
                format!(
                    "kernel {} needs a trained model file",
                    self.kernel.kind.label()
                ),
            ));
        }
        if self.n / self.thin < 2 {
            return Err(Error::param(
                "n",
                format!(
                    "n / thin = {} measurements: at least 2 are needed",
                    self.n / self.thin
                ),
            ));
        }
        Ok(())
    }
}

/// A Γ-method estimate as reported: mean, error, τ_int and its error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The mean.
    pub mean: f64,
    /// Its statistical error.
    pub err: f64,
    /// Integrated autocorrelation time (in measurements).
    pub tau_int: f64,
    /// Error of τ_int.
    pub tau_int_err: f64,
}

/// What a sampling run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleReport {
    /// Lattice extents.
    pub lattice: Vec<usize>,
    /// The action as specified.
    pub action: ActionSpec,
    /// The kernel's name.
    pub kernel: String,
    /// Measured steps.
    pub n: usize,
    /// Thermalisation steps.
    pub therm: usize,
    /// Measurement interval.
    pub thin: usize,
    /// Seed.
    pub seed: u64,
    /// Overall acceptance (accepted / proposed over all moves).
    pub acceptance: f64,
    /// Acceptance per kind of move (`"local"`, `"hmc"`, ...).
    pub acceptance_by_move: BTreeMap<String, f64>,
    /// Wall seconds of thermalisation and measurement.
    pub seconds: f64,
    /// Named estimates: phi2, m, abs_m, m2, energy, action_density, chi, binder, xi_2nd,
    /// xi_eff, xi_fit.
    pub observables: BTreeMap<String, Estimate>,
    /// Quantities whose analysis failed, with the reason.
    pub failures: BTreeMap<String, String>,
    /// ⟨e^{−ΔH}⟩ of the HMC trajectories (1 for an exact integrator), when HMC ran.
    pub exp_minus_delta_h: Option<Estimate>,
    /// Exact values where known (free field).
    pub exact: Option<BTreeMap<String, f64>>,
    /// The local step size after thermalisation, when local updates ran.
    pub local_step_size: Option<f64>,
    /// Rejection-based autocorrelation time of the flow proposals (SPEC 5.3), when they ran.
    pub tau_rej: Option<f64>,
    /// Error of `tau_rej`.
    pub tau_rej_err: Option<f64>,
    /// Longest run of consecutive rejected flow proposals.
    pub longest_rejection_run: Option<usize>,
}

/// Reported quantities; the per-t `xi_eff[t]` values stay in the library's [`Summary`].
const REPORTED: [&str; 11] = [
    "phi2",
    "m",
    "abs_m",
    "m2",
    "energy",
    "action_density",
    "chi",
    "binder",
    "xi_2nd",
    "xi_eff",
    "xi_fit",
];

/// Runs `spec`, calling `progress(done, total)` as steps complete (thermalisation included).
pub fn sample(spec: &SampleSpec, progress: &mut dyn FnMut(usize, usize)) -> Result<SampleReport> {
    spec.validate()?;
    let action = Arc::new(spec.action.build(&spec.lattice)?);
    let exact = spec.action.exact_values(&spec.lattice)?;
    let k = spec.kernel;
    let local = || LocalMetropolis::new(action.clone(), k.step_size);
    let hmc = || {
        Hmc::new(action.clone(), k.tau, k.md_steps).map(|h| {
            h.with_integrator(k.integrator)
                .with_randomised_length(!k.fixed_length)
        })
    };
    let (record, summary, seconds, local_step) = match k.kind {
        KernelKind::Local => {
            let (chain, rec, summ, secs) = run_chain(local()?, &action, spec, progress)?;
            (rec, summ, secs, Some(chain.kernel().step_size()))
        }
        KernelKind::Hmc => {
            let (_, rec, summ, secs) = run_chain(hmc()?, &action, spec, progress)?;
            (rec, summ, secs, None)
        }
        KernelKind::LocalHmc => {
            let (chain, rec, summ, secs) =
                run_chain(Cycle::new(local()?, hmc()?), &action, spec, progress)?;
            let step = chain.kernel().first.step_size();
            (rec, summ, secs, Some(step))
        }
        KernelKind::Flow | KernelKind::FlowLocal | KernelKind::FlowHmc => {
            let model = Arc::new(load_model_for(spec)?);
            let flow = || FlowProposal::new(model.clone(), action.clone(), k.flow_batch);
            match k.kind {
                KernelKind::Flow => {
                    let (_, rec, summ, secs) = run_chain(flow()?, &action, spec, progress)?;
                    (rec, summ, secs, None)
                }
                KernelKind::FlowLocal => {
                    let (chain, rec, summ, secs) =
                        run_chain(Cycle::new(flow()?, local()?), &action, spec, progress)?;
                    let step = chain.kernel().second.step_size();
                    (rec, summ, secs, Some(step))
                }
                _ => {
                    let kernel = Cycle::new(flow()?, hmc()?);
                    let (_, rec, summ, secs) = run_chain(kernel, &action, spec, progress)?;
                    (rec, summ, secs, None)
                }
            }
        }
    };
    Ok(build_report(
        spec, &record, &summary, seconds, exact, local_step,
    ))
}

/// Loads the spec's model, refusing one trained for another lattice or action.
fn load_model_for(spec: &SampleSpec) -> Result<FlowModel> {
    let path = spec
        .model
        .as_deref()
        .ok_or_else(|| Error::param("model", "the flow kernels need a trained model file"))?;
    let (lattice, action) = model_target(path)?;
    if lattice != spec.lattice {
        return Err(Error::Incompatible(format!(
            "model {} was trained on a {lattice} lattice, the run is on {}",
            path.display(),
            spec.lattice
        )));
    }
    if action != spec.action {
        return Err(Error::Incompatible(format!(
            "model {} was trained for {action:?}, the run asks for {:?}",
            path.display(),
            spec.action
        )));
    }
    FlowModel::load_for(path, &spec.lattice)
}

type ChainRun<K> = (Chain<K>, ChainRecord, Summary, f64);

fn run_chain<K: Proposal>(
    kernel: K,
    action: &Arc<Phi4>,
    spec: &SampleSpec,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ChainRun<K>> {
    let start = std::time::Instant::now();
    let total = spec.therm + spec.n;
    let mut chain = Chain::new(kernel, State::zero(action.as_ref()), spec.seed);
    let chunk = (spec.therm / 100).max(1);
    let mut done = 0;
    while done < spec.therm {
        let k = chunk.min(spec.therm - done);
        chain.thermalise(k);
        done += k;
        progress(done, total);
    }
    let mut measurements = Measurements::new(&spec.lattice);
    let dyn_action: Arc<dyn Action> = action.clone();
    measurements.add(Box::new(ActionDensity::new(dyn_action)))?;
    let mut measured = 0usize;
    let record = chain.run_with(spec.n, spec.thin, |state| {
        measured += spec.thin;
        progress(spec.therm + measured, total);
        measurements.record(&state.phi)
    })?;
    progress(total, total);
    let summary = measurements.summary()?;
    Ok((chain, record, summary, start.elapsed().as_secs_f64()))
}

fn build_report(
    spec: &SampleSpec,
    record: &ChainRecord,
    summary: &Summary,
    seconds: f64,
    exact: Option<BTreeMap<String, f64>>,
    local_step_size: Option<f64>,
) -> SampleReport {
    let as_estimate = |g: &crate::stats::GammaEstimate| Estimate {
        mean: g.mean,
        err: g.err,
        tau_int: g.tau_int,
        tau_int_err: g.tau_int_err,
    };
    let observables = REPORTED
        .iter()
        .filter_map(|&name| {
            summary
                .get(name)
                .map(|g| (name.to_string(), as_estimate(g)))
        })
        .collect();
    let failures = summary
        .failures
        .iter()
        .filter(|f| REPORTED.contains(&f.name.as_str()))
        .map(|f| (f.name.clone(), f.reason.clone()))
        .collect();
    let mut labels: Vec<&'static str> = record.moves.iter().map(|m| m.kernel).collect();
    labels.sort_unstable();
    labels.dedup();
    let acceptance_by_move = labels
        .iter()
        .map(|&l| (l.to_string(), record.acceptance_of(l)))
        .collect();
    let exp_dh: Vec<f64> = record.deltas("hmc").iter().map(|d| (-d).exp()).collect();
    let flow_history = record.accept_history("flow");
    let rejection = crate::stats::rejection_autocorrelation(&flow_history).ok();
    let exp_minus_delta_h = crate::stats::gamma_method(&exp_dh)
        .ok()
        .map(|g| as_estimate(&g));
    SampleReport {
        lattice: spec.lattice.extents().to_vec(),
        action: spec.action,
        kernel: spec.kernel.kind.label().to_string(),
        n: spec.n,
        therm: spec.therm,
        thin: spec.thin,
        seed: spec.seed,
        acceptance: record.acceptance(),
        acceptance_by_move,
        seconds,
        observables,
        failures,
        exp_minus_delta_h,
        exact,
        local_step_size,
        tau_rej: rejection.as_ref().map(|r| r.tau_rej),
        tau_rej_err: rejection.as_ref().map(|r| r.tau_rej_err),
        longest_rejection_run: rejection.as_ref().map(|r| r.longest_rejection_run),
    }
}
