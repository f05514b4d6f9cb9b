//! Sampling runs: a [`SampleSpec`] in, a [`SampleReport`] (and, for callers that store
//! and re-analyse runs, the [`SampleData`]) out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::kernel_spec::{check_kernel_names, kernel_table_or_expression};
use super::replicas::{ReplicaChain, combine_replicas, replica_seed};
use super::report::stopped_report;
use super::train::recorded_action;
use super::{ActionSpec, KernelSpec, Registry, SampleReport};
use crate::action::{Action, Checkerboard};
use crate::control::{Observer, StopToken};
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowModel};
use crate::kernel::{
    Ensemble, Member, RecycledPlan, RecycledRun, RunPlan, State, SweepOrder, recycled_sampling,
};
use crate::lattice::Lattice;
use crate::observable::{ActionDensity, Measurements};
use crate::rng::rng_from_seed;

/// A complete sampling run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSpec {
    /// The lattice.
    pub lattice: Lattice,
    /// The action.
    pub action: ActionSpec,
    /// The kernel.
    #[serde(default, deserialize_with = "kernel_table_or_expression")]
    pub kernel: KernelSpec,
    /// Measured steps, each one step of the whole kernel expression.
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
    /// Trained model file, for expressions with `flow`; it must have been trained for this lattice
    /// and action.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Independent chains advanced in lockstep (chain j from seed
    /// [`replica_seed`]`(seed, j)`), analysed together as replicas; their flow passes are
    /// batched over the chains.
    #[serde(default = "one")]
    pub chains: usize,
}

fn one() -> usize {
    1
}

impl SampleSpec {
    /// Reads a TOML runcard and validates it; a refused key is reported with its line. A
    /// kernel-table key no kernel of the expression reads is refused whatever its value.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        crate::study::runcard::read_checked(
            path,
            |spec: &SampleSpec, doc| {
                spec.kernel
                    .refuse_unread_settings(crate::study::runcard::table_keys(doc, "kernel"))?;
                spec.validate()
            },
            |name| vec![name.to_string(), format!("kernel.{name}")],
        )
    }

    /// Checks counts and parameters that do not depend on the action: counts at least 1,
    /// the settings of the kernels the expression uses, at least 2 measurements, no
    /// overflow in the step counts, the memory of the stored series, move records and flow
    /// batches against the memory available, and the run's work (site updates, see
    /// [`crate::limits::MAX_SITE_UPDATES`]). Errors name the runcard key. Kernel names are
    /// the built-in ones; see [`SampleSpec::validate_with`] for a registry's.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(Registry::builtin())
    }

    /// [`SampleSpec::validate`] with the kernels (and custom actions) of `registry`.
    pub fn validate_with(&self, registry: &Registry) -> Result<()> {
        if self.n == 0 {
            return Err(Error::param("n", "must be at least 1"));
        }
        if self.thin == 0 {
            return Err(Error::param("thin", "must be at least 1"));
        }
        if self.chains == 0 {
            return Err(Error::param(
                "chains",
                "must be at least 1 (the number of chains advanced together)",
            ));
        }
        check_kernel_names(&self.kernel.kind, registry)?;
        if let ActionSpec::Custom { name, .. } = &self.action
            && !registry.action_names().any(|n| n == name)
        {
            registry.action(&self.action, &self.lattice)?;
        }
        if self.kernel.uses_flow() && self.model.is_none() {
            return Err(Error::param(
                "model",
                format!(
                    "kernel {} needs a trained model file",
                    self.kernel.kind.abbreviated()
                ),
            ));
        }
        if self.model.is_some() && !self.kernel.uses_flow() && !self.kernel.noneq_from_flow(true) {
            return Err(Error::param(
                "model",
                format!(
                    "has no effect: the kernel `{}` has no `flow`, `flowhmc` or flow-started \
                     `noneq`",
                    self.kernel.kind.abbreviated()
                ),
            ));
        }
        if self.kernel.noneq_from_flow(self.model.is_some()) && self.model.is_none() {
            return Err(Error::param(
                "model",
                "noneq_start = \"flow\" needs a trained model file",
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
        self.kernel.validate_settings()?;
        if self.kernel.kind.contains("local") && self.kernel.sweep_order == SweepOrder::Checkerboard
        {
            Checkerboard::check(&self.lattice)?;
        }
        self.check_size()
    }

    /// The memory and work checks of [`SampleSpec::validate`].
    fn check_size(&self) -> Result<()> {
        let volume = self.lattice.volume() as u128;
        let cost = self.kernel.step_cost(self.lattice.volume());
        // The stored series: the fixed observables, the lowest-momentum correlator per
        // direction, the zero-momentum correlator per time slice and the action density, in
        // f64, and the Γ-method's transforms of one series at a time (≈ 64 bytes per value).
        let extent = self.lattice.extents().iter().copied().max().unwrap_or(1) as u128;
        let per_measurement = 8 * (6 + self.lattice.dim() as u128 + extent + 1) + 64;
        let chains = self.chains as u128;
        let measurements = ((self.n / self.thin) as u128).saturating_mul(chains);
        let move_bytes = std::mem::size_of::<crate::MoveInfo>() as u128;
        // A chain's flow batch: latent and generated fields in f32, the proposed ones in f64,
        // four f64 per proposal (log-prior, log-det, log-weight, action). The flow's pass
        // buffers are one set per flow kernel, whatever the number of chains (they draw one
        // after the other).
        let flow_bytes = if self.kernel.uses_flow() {
            (self.kernel.flow_batch as u128)
                .saturating_mul((4 + 4 + 8) * volume + 4 * 8)
                .saturating_mul(chains)
        } else {
            0
        };
        let many_chains = chains > 1 && chains >= self.n as u128 / 10_000;
        crate::limits::check_memory_parts(&[
            (
                "n",
                "the stored measurement series",
                measurements.saturating_mul(per_measurement),
            ),
            (
                if many_chains {
                    "chains"
                } else if cost.moves > self.n as u128 {
                    "kernel"
                } else {
                    "n"
                },
                "the move records",
                (self.n as u128)
                    .saturating_mul(cost.moves)
                    .saturating_mul(move_bytes)
                    .saturating_mul(chains),
            ),
            (
                if many_chains { "chains" } else { "flow_batch" },
                "the flow proposal batches",
                flow_bytes,
            ),
        ])?;
        let steps = self.therm.checked_add(self.n).ok_or_else(|| {
            Error::param(
                if self.therm >= self.n { "therm" } else { "n" },
                format!(
                    "therm + n = {} + {} steps does not fit in a {}-bit integer",
                    self.therm,
                    self.n,
                    usize::BITS
                ),
            )
        })?;
        let site_updates = (steps as u128)
            .saturating_mul(cost.site_updates)
            .saturating_mul(chains);
        // The parameter named is the one furthest above its usual size.
        let mut suspects = vec![
            ("n", self.n as f64 / 10_000.0),
            ("therm", self.therm as f64 / 1_000.0),
            ("kernel", cost.moves as f64),
            ("lattice", volume as f64 / 4096.0),
            ("chains", self.chains as f64 / 8.0),
        ];
        if self.kernel.kind.contains("hmc") {
            suspects.push(("md_steps", self.kernel.md_steps as f64 / 10.0));
        }
        let name = suspects
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("n", |s| s.0);
        crate::limits::check_site_updates(name, site_updates)
    }
}

/// Runs `spec`, reporting progress to `observer` (the stages `thermalise` and `measure`,
/// see [`Chain::run`](crate::kernel::Chain::run)) and checking `stop` between blocks of steps.
///
/// A stop ends the run early with what it did kept: the report then has `interrupted` set
/// and `n` the measured steps made; stopped before two measurements were made, it has no
/// observables and an unreliable verdict saying how far the run got. The output file, when
/// the caller writes one, is best checked before with [`crate::io::check_output_path`].
pub fn sample(
    spec: &SampleSpec,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<SampleReport> {
    Ok(sample_data(spec, Registry::builtin(), observer, stop, 0)?.report)
}

/// [`sample`] with the user's actions, kernels and flow layers of `registry`.
pub fn sample_with(
    spec: &SampleSpec,
    registry: &Registry,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<SampleReport> {
    Ok(sample_data(spec, registry, observer, stop, 0)?.report)
}

/// Runs the `flow` kernel of `spec` as a recycled chain ([`recycled_sampling`]): blocks of
/// `flow_batch` proposals whose measurements average every proposal with its conditional
/// weight; `n` and `therm` count proposals (rounded up to whole blocks). Only a single
/// chain of the kernel `flow`, measured at every block (`thin` 1), is recycled: any other
/// spec is refused.
pub fn sample_recycled(
    spec: &SampleSpec,
    registry: &Registry,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<RecycledRun> {
    spec.validate_with(registry)?;
    if spec.kernel.kind != crate::kernel::KernelExpr::Kernel("flow".into()) {
        return Err(Error::param(
            "kernel",
            format!(
                "recycling averages the proposals of the kernel `flow` alone, not of `{}`",
                spec.kernel.kind.abbreviated()
            ),
        ));
    }
    if spec.chains != 1 || spec.thin != 1 {
        return Err(Error::param(
            if spec.chains != 1 { "chains" } else { "thin" },
            "a recycled run is one chain measured at every block (chains 1, thin 1)",
        ));
    }
    let target = registry.action(&spec.action, &spec.lattice)?;
    let model = load_model_for(spec, registry)?;
    let block = spec.kernel.flow_batch;
    let plan = RecycledPlan {
        block,
        blocks: spec.n.div_ceil(block.max(1)),
        therm: spec.therm.div_ceil(block.max(1)),
    };
    recycled_sampling(&model, &*target.action(), &plan, spec.seed, observer, stop)
}

/// Everything a sampling run produced, for callers that store and re-analyse it: the report,
/// each chain's move history and measured series, and a thinned set of configurations.
pub struct SampleData {
    /// The report, as [`sample`] returns it.
    pub report: SampleReport,
    /// Each chain's move history and measured series (the set of [`Measurements`] plus
    /// `action_density`): one entry, or `chains` of them.
    pub chains: Vec<ReplicaChain>,
    /// Saved configurations of the first chain, evenly spaced over its measurements.
    pub configs: Vec<Vec<f64>>,
    /// The measurement index of each saved configuration.
    pub config_indices: Vec<usize>,
    /// Wall seconds of the measured steps alone (thermalisation excluded), of all chains.
    pub sampling_seconds: f64,
}

/// Runs `spec` like [`sample`] and keeps the raw output: the series, the move records and
/// about `saved_configs` configurations evenly spaced over the measurements of the first
/// chain (every ⌈(n/thin)/saved_configs⌉-th; none when 0).
pub fn sample_data(
    spec: &SampleSpec,
    registry: &Registry,
    observer: &mut dyn Observer,
    stop: &StopToken,
    saved_configs: usize,
) -> Result<SampleData> {
    spec.validate_with(registry)?;
    let target = registry.action(&spec.action, &spec.lattice)?;
    let action = target.action();
    let model = if spec.kernel.uses_flow() || spec.kernel.noneq_from_flow(spec.model.is_some()) {
        Some(Arc::new(load_model_for(spec, registry)?))
    } else {
        None
    };
    let kernel = spec
        .kernel
        .build_ensemble(&*target, model.as_ref(), registry, spec.chains)?;
    let members = (0..spec.chains)
        .map(|j| {
            let seed = replica_seed(spec.seed, j);
            Ok(Member {
                state: initial_state(&*action, model.as_deref().zip(spec.model.as_deref()), seed)?,
                rng: rng_from_seed(seed),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let start = std::time::Instant::now();
    let mut ensemble = Ensemble::new(kernel, members)?;
    let mut measurements = (0..spec.chains)
        .map(|_| {
            let mut m = Measurements::new(&spec.lattice);
            m.add(Box::new(ActionDensity::new(action.clone())))?;
            Ok(m)
        })
        .collect::<Result<Vec<_>>>()?;
    let stride = match saved_configs {
        0 => usize::MAX,
        k => (spec.n / spec.thin).div_ceil(k).max(1),
    };
    let mut saved: Vec<(usize, Vec<f64>)> = Vec::new();
    let plan = RunPlan::new(spec.n).therm(spec.therm).thin(spec.thin);
    let records = ensemble.run(
        &plan,
        &mut |i, state: &State| {
            let series = &mut measurements[i];
            if i == 0 && series.len().is_multiple_of(stride) {
                saved.push((series.len(), state.phi().to_vec()));
            }
            series.record(state.phi())
        },
        observer,
        stop,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let sampling_seconds = records.first().map_or(0.0, |r| r.wall_seconds);
    let chains: Vec<ReplicaChain> = records
        .into_iter()
        .zip(measurements)
        .map(|(record, measurements)| ReplicaChain {
            interrupted: record.interrupted,
            record,
            measurements,
            seconds,
        })
        .collect();
    let mut report = if chains[0].measurements.len() < 2 {
        stopped_report(spec, &chains[0].record, seconds)
    } else {
        combine_replicas(spec, &chains)?
    };
    report.n = chains[0].record.steps;
    report.interrupted = chains[0].record.interrupted;
    report.chains = spec.chains;
    let (config_indices, configs) = saved.into_iter().unzip();
    Ok(SampleData {
        sampling_seconds,
        report,
        chains,
        configs,
        config_indices,
    })
}

/// Loads the spec's model, refusing one trained for another lattice, or for another action
/// when a `flow` or `flowhmc` kernel proposes from it (a `noneq` flow start may come from a
/// flow trained for any action on the lattice: the protocol leads from it to the target).
fn load_model_for(spec: &SampleSpec, registry: &Registry) -> Result<FlowModel> {
    let path = spec
        .model
        .as_deref()
        .ok_or_else(|| Error::param("model", "the flow kernels need a trained model file"))?;
    let model = FlowModel::load_with(path, registry.layers())?;
    if model.lattice() != &spec.lattice {
        return Err(Error::Incompatible(format!(
            "model {} was trained on a {} lattice, the run is on {}",
            path.display(),
            model.lattice(),
            spec.lattice
        )));
    }
    let action = recorded_action(&model, path)?;
    if action != spec.action && spec.kernel.uses_flow() {
        return Err(Error::Incompatible(format!(
            "model {} was trained for {}, the run asks for {}",
            path.display(),
            action.describe(),
            spec.action.describe()
        )));
    }
    // Every chain of an ensemble keeps a batch of proposals and the workspace that drew it.
    let f32_bytes = std::mem::size_of::<f32>() as u128;
    let batch = format!(
        "a batch of {} flow proposals ({} values each on the tape)",
        spec.kernel.flow_batch,
        model.tape_values_per_row()
    );
    let what = if spec.chains > 1 {
        format!("{batch} for each of {} chains", spec.chains)
    } else {
        batch
    };
    crate::limits::check_memory(
        "flow_batch",
        &what,
        (spec.kernel.flow_batch as u128)
            .saturating_mul(model.tape_values_per_row() as u128)
            .saturating_mul(f32_bytes)
            .saturating_mul(spec.chains as u128),
    )?;
    Ok(model)
}

/// Index of the random stream that draws a flow chain's initial configuration (apart from
/// the chain's own stream).
const INITIAL_STATE_STREAM: u64 = 1 << 40;
/// The chain's first configuration: φ = 0, or, for a kernel with flow proposals, one sample
/// of the flow (from a stream of its own derived from the seed). An independence sampler
/// started where the flow puts almost no mass — φ = 0 is such a place for a poorly trained
/// flow of a double-well action — has an enormous weight w = e^{−S}/p̃ there and may reject
/// every proposal; a flow sample is a typical state of the proposal instead.
fn initial_state(
    action: &dyn Action,
    model: Option<(&FlowModel, &Path)>,
    seed: u64,
) -> Result<State> {
    let Some((model, path)) = model else {
        return Ok(State::zero(action));
    };
    let mut rng = crate::rng::stream(seed, INITIAL_STATE_STREAM);
    let (phi, _) = crate::flow::Flow::sample(model, 1, &mut rng)?;
    State::new(action, phi.iter().map(|&x| x as f64).collect()).map_err(|e| match e {
        Error::NonFinite(what) => Error::NonFinite(format!(
            "a sample of the flow model {} ({what}): its parameters map the latent field to \
             non-finite values; retrain the model or check the file",
            path.display()
        )),
        other => other,
    })
}
