//! Sweeps: flow training over a grid of lattice sizes, training methods (recipe and
//! gradient estimator), batch sizes, iteration counts, learning rates and seeds, each point
//! trained and then sampled with its flow, into one table of training cost and sampling
//! quality, analysed per method. Points are run one after the other,
//! each on every core; a finished point (its `point.json`) is skipped when the sweep runs
//! again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plot::{Chart, Series, Style, draw_chart};
use super::report::num;
use super::spec::Override;
use super::{SamplerAtSize, SamplerComparison, TrainingCost};
use crate::control::{Observer, Prefixed, StopToken};
use crate::error::{Error, Result};
use crate::io::{read_json, write_atomic, write_json};
use crate::kernel::KernelExpr;
use crate::lattice::Lattice;
use crate::parallel::Collective;
use crate::run::{
    ActionSpec, KernelSpec, RecipeSpec, Registry, SampleReport, SampleSpec, TrainControl,
    TrainOutcome, TrainSpec, sample_with,
};
use crate::stats::{PowerLawFit, Verdict, nan_if_null, power_law_fit};
use crate::train::{GradientEstimator, TrainConfig};

/// The hopping coupling β on the ξ ≈ L/4 line at λ = 0.5 (docs/reference.md), for
/// L = 6, 8, …, 20.
pub const REFERENCE_BETA: [(usize, f64); 8] = [
    (6, 0.537),
    (8, 0.576),
    (10, 0.601),
    (12, 0.616),
    (14, 0.626),
    (16, 0.634),
    (18, 0.641),
    (20, 0.645),
];

/// The reference β of an L × L lattice, if tabulated.
pub fn reference_beta(l: usize) -> Option<f64> {
    REFERENCE_BETA
        .iter()
        .find(|(size, _)| *size == l)
        .map(|p| p.1)
}

/// A sweep runcard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// The sweep's name: its folder is `out/name`.
    pub name: String,
    /// The folder holding sweep and study folders.
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// Linear sizes L of the L × L lattices.
    pub lattices: Vec<usize>,
    /// The quartic coupling λ of the hopping form (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// β per L as `[[L, β], ...]`; sizes not listed take the ξ ≈ L/4 line at λ = 0.5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beta: Vec<(usize, f64)>,
    /// The action on every lattice of the grid instead of φ⁴ in the hopping form with `beta`
    /// and `lambda` (any form, a user's registered action included); its points have β
    /// and λ NaN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionSpec>,
    /// Training seeds (each point is trained once per seed; its chain seed is the same).
    pub seeds: Vec<u64>,
    /// The flow recipe (`hidden = 0`: |Λ|).
    #[serde(default)]
    pub recipe: RecipeSpec,
    /// Training settings shared by the points (batch, iterations and lr come from the grid).
    #[serde(default)]
    pub train: TrainConfig,
    /// Batch sizes of the grid.
    pub batch: Vec<usize>,
    /// Iteration counts of the grid.
    pub iterations: Vec<usize>,
    /// Learning rates of the grid.
    pub lr: Vec<f64>,
    /// Training methods of the grid (`[[method]]` tables), each a name and what it
    /// changes in `recipe` and `train`; none: one method, the sweep's `recipe` and `train`.
    #[serde(default, rename = "method", skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<SweepMethod>,
    /// The flow chain each point runs after training.
    #[serde(default)]
    pub sample: SweepSampling,
    /// An HMC baseline on the same lattices and seeds, with tuned trajectories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmc: Option<HmcBaseline>,
    /// The τ_rej the training-cost analysis asks the flows to reach
    /// ([`super::training_cost`]).
    #[serde(default = "default_target_tau_rej")]
    pub target_tau_rej: f64,
}

/// A training method of a sweep's grid: its name and what it changes in the sweep's recipe
/// and training settings. Every method is trained at every point of the rest of the grid,
/// and the training-cost analysis and sampler comparison are made per method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepMethod {
    /// The method's name: letters, digits, `-`, `_` and `.` (it names point folders and
    /// analysis files).
    pub name: String,
    /// The flow recipe of this method (default: the sweep's `[recipe]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<RecipeSpec>,
    /// The gradient estimator of this method (default: the sweep's `[train] gradient`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient: Option<GradientEstimator>,
}

fn default_target_tau_rej() -> f64 {
    super::DEFAULT_TARGET_TAU_REJ
}

/// The HMC baseline of a sweep: per L, a pilot scan with the first seed chooses the
/// trajectory ([`super::tune_hmc`], ranked by the τ_int of |m|, m², φ² and the energy); then
/// for every seed a chain of `n` trajectories with it measures τ_int and the cost of an
/// independent configuration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HmcBaseline {
    /// Measured trajectories.
    pub n: usize,
    /// Thermalisation trajectories.
    pub therm: usize,
}

impl Default for HmcBaseline {
    fn default() -> Self {
        HmcBaseline {
            n: 20_000,
            therm: 1_000,
        }
    }
}

/// A row of the HMC baseline (`hmc.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HmcRow {
    /// L.
    pub l: usize,
    /// β.
    pub beta: f64,
    /// The chain's seed.
    pub seed: u64,
    /// The chosen trajectory length.
    pub tau: f64,
    /// The chosen MD steps.
    pub md_steps: usize,
    /// Acceptance.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// Wall seconds per trajectory (measurements included).
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds_per_step: f64,
    /// The second-moment correlation length ξ_2nd and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub xi: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub xi_err: f64,
    /// τ_int of |m| and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_abs_m: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_abs_m_err: f64,
    /// τ_int of χ (a χ-like observable) and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_chi: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_chi_err: f64,
    /// τ_int of ξ_2nd (a ξ-like observable) and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_xi: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_xi_err: f64,
    /// Seconds per independent configuration, 2 max(τ_int of |m|, χ, ξ_2nd) × seconds per
    /// trajectory.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent: f64,
    /// Its error, from that of τ_max.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub cost_per_independent_err: f64,
    /// The chain's verdict.
    pub verdict: Verdict,
}

/// The HMC baseline of a sweep (`hmc.json`): its rows and the dynamical exponent z from a
/// power-law fit τ_int(|m|) = A (ξ/ξ_ref)^z over them (needs two or more sizes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HmcBaselineResult {
    /// One row per L and seed.
    pub rows: Vec<HmcRow>,
    /// The fit of τ_int(|m|) against ξ_2nd, when it could be made.
    pub z_fit: Option<PowerLawFit>,
    /// Why the fit was not made or failed.
    pub z_fit_failure: Option<String>,
}

/// The columns of `hmc.csv`.
pub const HMC_HEADER: &str = "L,beta,seed,tau,md_steps,acceptance,seconds_per_step,xi,xi_err,\
tau_abs_m,tau_abs_m_err,tau_chi,tau_chi_err,tau_xi,tau_xi_err,cost_per_independent,\
cost_per_independent_err,verdict";

fn default_out() -> PathBuf {
    PathBuf::from("latflow-out")
}

fn nan() -> f64 {
    f64::NAN
}

/// The flow chain of each point, and the other kernels run with its flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepSampling {
    /// Measured flow proposals.
    pub n: usize,
    /// Thermalisation proposals.
    pub therm: usize,
    /// Flow proposals generated per batch.
    pub flow_batch: usize,
    /// Further kernels run on every point with its flow, each a chain of `n` steps after
    /// `therm` (e.g. `["flow+local", { kind = "flow+hmc", tau = 0.5, md_steps = 5 }]`):
    /// their cost per independent configuration is compared with the HMC baseline's.
    #[serde(deserialize_with = "crate::run::kernel_list")]
    pub kernels: Vec<KernelSpec>,
    /// The independent configurations over which the sampler comparison spreads each
    /// flow's training time (the amortised cost c + T/N).
    pub amortise_over: f64,
    /// Independent chains per kernel, advanced in lockstep (their flow passes batched) and
    /// analysed as replicas.
    pub chains: usize,
}

impl Default for SweepSampling {
    fn default() -> Self {
        SweepSampling {
            n: 20_000,
            therm: 500,
            flow_batch: 1000,
            kernels: Vec::new(),
            amortise_over: 1e5,
            chains: 1,
        }
    }
}

/// One point of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// L.
    pub l: usize,
    /// β (NaN when the sweep gives its own `action`).
    #[serde(deserialize_with = "nan_if_null")]
    pub beta: f64,
    /// λ (NaN when the sweep gives its own `action`).
    #[serde(deserialize_with = "nan_if_null")]
    pub lambda: f64,
    /// Batch size.
    pub batch: usize,
    /// Iterations.
    pub iterations: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed of training and of the chain.
    pub seed: u64,
    /// The training method's name (empty for a sweep without `[[method]]` tables).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
}

impl SweepPoint {
    /// The point's folder name (prefixed by the method's name, if any).
    pub fn key(&self) -> String {
        let key = format!(
            "L{}-b{}-i{}-lr{}-s{}",
            self.l, self.batch, self.iterations, self.lr, self.seed
        );
        match self.method.as_str() {
            "" => key,
            method => format!("{method}-{key}"),
        }
    }
}

/// What one point measured (a row of the table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// The point.
    #[serde(flatten)]
    pub point: SweepPoint,
    /// Trainable parameters.
    pub n_params: usize,
    /// Training configurations |Φ_train|.
    pub configs_seen: u64,
    /// Training wall seconds.
    pub train_seconds: f64,
    /// Acceptance of the flow chain.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// ESS per sample of the training's final test sample.
    #[serde(deserialize_with = "nan_if_null")]
    pub ess: f64,
    /// τ_rej of the flow chain.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej_err: f64,
    /// τ_int of |m| in the flow chain.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int_abs_m: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int_abs_m_err: f64,
    /// The longest run of rejected proposals.
    pub longest_rejection_run: usize,
    /// The chain's verdict.
    pub verdict: Verdict,
    /// The cost of an independent configuration with the flow chain (first) and with each
    /// of the further kernels (`sample.kernels`).
    #[serde(default)]
    pub samplers: Vec<ChainCost>,
}

/// What an independent configuration costs with one chain: 2 τ_max × thin × seconds per
/// step, with τ_max the largest τ_int (in measurements) of |m|, χ and ξ_2nd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainCost {
    /// The kernel expression.
    pub kernel: String,
    /// The acceptance of the chain (of all its moves).
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// Wall seconds per step (thermalisation included).
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds_per_step: f64,
    /// τ_max in measurements (one every `thin` steps).
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_max: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_max_err: f64,
    /// Seconds per independent configuration.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent: f64,
    /// Its error, from that of τ_max.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent_err: f64,
    /// The chain's verdict.
    pub verdict: Verdict,
}

impl ChainCost {
    /// The cost of the chain `spec` that produced `report`.
    pub fn of(spec: &SampleSpec, report: &SampleReport) -> ChainCost {
        // Chains advanced together share the wall time: a step of one cost its share.
        let chain_steps = (spec.therm + spec.n * spec.thin).max(1) * report.chains.max(1);
        let seconds_per_step = report.seconds / chain_steps as f64;
        let seconds_per_measurement = seconds_per_step * spec.thin as f64;
        let (_, tau_max, tau_max_err) =
            super::analysis::slowest_observable(report, &["abs_m", "chi", "xi_2nd"]);
        ChainCost {
            kernel: spec.kernel.kind.to_string(),
            acceptance: report.acceptance,
            seconds_per_step,
            tau_max,
            tau_max_err,
            cost_per_independent: 2.0 * tau_max * seconds_per_measurement,
            cost_per_independent_err: 2.0 * tau_max_err * seconds_per_measurement,
            verdict: report.verdict,
        }
    }
}

/// The columns of `sweep.csv`.
pub const SWEEP_HEADER: &str = "L,beta,lambda,batch,iterations,lr,seed,n_params,configs_seen,\
train_seconds,acceptance,ess,tau_rej,tau_rej_err,tau_int_abs_m,tau_int_abs_m_err,\
longest_rejection_run,verdict,method";

/// A parsed sweep runcard with its text as used and the registry of the user's pieces it
/// may name.
#[derive(Clone, Debug)]
pub struct LoadedSweep {
    /// The sweep.
    pub spec: SweepSpec,
    /// The runcard as used, with a header naming the version and overrides.
    pub runcard: String,
    /// The user's actions, kernels and flow layers the sweep may name.
    pub registry: Registry,
}

impl SweepSpec {
    /// Reads a sweep runcard and applies `overrides` (see [`Override`]).
    pub fn load(path: &Path, overrides: &[Override]) -> Result<LoadedSweep> {
        Self::load_with(path, overrides, Registry::new())
    }

    /// [`SweepSpec::load`] for a sweep that may name the user's pieces of `registry`.
    pub fn load_with(
        path: &Path,
        overrides: &[Override],
        registry: Registry,
    ) -> Result<LoadedSweep> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let origin = format!("sweep runcard {}", path.display());
        let (spec, _): (SweepSpec, _) =
            super::spec::parse_with_overrides(&text, &origin, overrides)?;
        spec.validate_with(&registry)?;
        let runcard = super::spec::runcard_text(&spec, "sweep", overrides)?;
        Ok(LoadedSweep {
            spec,
            runcard,
            registry,
        })
    }

    /// λ of the hopping form (0.5 unless given).
    pub fn hopping_lambda(&self) -> f64 {
        self.lambda.unwrap_or(0.5)
    }

    /// The names of the training methods: one empty name for a sweep without
    /// `[[method]]` tables.
    pub fn method_names(&self) -> Vec<String> {
        if self.methods.is_empty() {
            vec![String::new()]
        } else {
            self.methods.iter().map(|m| m.name.clone()).collect()
        }
    }

    /// The grid's points, L outermost, then method, batch, iterations, lr, seed.
    pub fn points(&self) -> Result<Vec<SweepPoint>> {
        let mut points = Vec::new();
        for &l in &self.lattices {
            let beta = match self.beta.iter().find(|(size, _)| *size == l) {
                _ if self.action.is_some() => f64::NAN,
                Some(&(_, b)) => b,
                None => reference_beta(l)
                    .filter(|_| self.hopping_lambda() == 0.5)
                    .ok_or_else(|| {
                        Error::param(
                            "beta",
                            format!(
                                "no β given for L = {l} and none tabulated (the ξ ≈ L/4 line at \
                             λ = 0.5 has L = 6, 8, …, 20): add [{l}, β] to `beta`"
                            ),
                        )
                    })?,
            };
            for method in self.method_names() {
                for &batch in &self.batch {
                    for &iterations in &self.iterations {
                        for &lr in &self.lr {
                            for &seed in &self.seeds {
                                points.push(SweepPoint {
                                    l,
                                    beta,
                                    lambda: if self.action.is_some() {
                                        f64::NAN
                                    } else {
                                        self.hopping_lambda()
                                    },
                                    batch,
                                    iterations,
                                    lr,
                                    seed,
                                    method: method.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(points)
    }

    /// Checks the name, the grid (non-empty) and every point's training and sampling run,
    /// with the built-in pieces only.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(Registry::builtin())
    }

    /// [`SweepSpec::validate`] with the user's pieces of `registry`.
    pub fn validate_with(&self, registry: &Registry) -> Result<()> {
        if self.action.is_some() && (self.lambda.is_some() || !self.beta.is_empty()) {
            return Err(Error::param(
                if self.beta.is_empty() {
                    "lambda"
                } else {
                    "beta"
                },
                "has no effect: the sweep gives its own [action]",
            ));
        }
        if self.name.is_empty() || self.name.contains(['/', '\\', '\0']) || self.name == ".." {
            return Err(Error::param(
                "name",
                format!("`{}` cannot name a folder", self.name),
            ));
        }
        for (key, empty) in [
            ("lattices", self.lattices.is_empty()),
            ("seeds", self.seeds.is_empty()),
            ("batch", self.batch.is_empty()),
            ("iterations", self.iterations.is_empty()),
            ("lr", self.lr.is_empty()),
        ] {
            if empty {
                return Err(Error::param(key, "the grid needs at least one value"));
            }
        }
        for (i, method) in self.methods.iter().enumerate() {
            let name = &method.name;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                || name.starts_with('.')
            {
                return Err(Error::param(
                    "method.name",
                    format!(
                        "`{name}` cannot name a method: use letters, digits, `-`, `_` and `.`, \
                         not first"
                    ),
                ));
            }
            if self.methods[..i].iter().any(|m| &m.name == name) {
                return Err(Error::param(
                    "method.name",
                    format!("two methods are named `{name}`"),
                ));
            }
        }
        if !(self.target_tau_rej > 0.5 && self.target_tau_rej.is_finite()) {
            return Err(Error::param(
                "target_tau_rej",
                format!(
                    "τ_rej is at least ½ (a chain that accepts every proposal); the target \
                     must be a finite number above ½, got {}",
                    self.target_tau_rej
                ),
            ));
        }
        if !(self.sample.amortise_over > 0.0 && self.sample.amortise_over.is_finite()) {
            return Err(Error::param(
                "sample.amortise_over",
                format!(
                    "must be a positive number of configurations, got {}",
                    self.sample.amortise_over
                ),
            ));
        }
        for point in self.points()? {
            self.train_spec(&point, Path::new("model.json"))?
                .validate()?;
            for k in 0..=self.sample.kernels.len() {
                self.chain_spec(&point, k, Path::new("model.json"))?
                    .validate_with(registry)
                    .map_err(|e| match e {
                        Error::InvalidParameter { name, reason } if k > 0 => Error::param(
                            "sample.kernels",
                            format!("kernel {}: {name}: {reason}", k - 1),
                        ),
                        other => other,
                    })?;
            }
        }
        Ok(())
    }

    fn target(&self, point: &SweepPoint) -> Result<(Lattice, ActionSpec)> {
        let action = match &self.action {
            Some(action) => action.clone(),
            None => ActionSpec::Phi4 {
                beta: point.beta,
                lambda: point.lambda,
            },
        };
        Ok((Lattice::new(&[point.l, point.l])?, action))
    }

    /// The training run of a point.
    pub fn train_spec(&self, point: &SweepPoint, model: &Path) -> Result<TrainSpec> {
        let (lattice, action) = self.target(point)?;
        let mut train = self.train.clone();
        train.batch = point.batch;
        train.iterations = point.iterations;
        train.lr = point.lr;
        train.seed = point.seed;
        let mut recipe = self.recipe.clone();
        if let Some(method) = self.methods.iter().find(|m| m.name == point.method) {
            if let Some(r) = &method.recipe {
                recipe = r.clone();
            }
            if let Some(g) = method.gradient {
                train.gradient = g;
            }
        } else if !point.method.is_empty() {
            return Err(Error::param(
                "method",
                format!("the sweep has no method named `{}`", point.method),
            ));
        }
        Ok(TrainSpec {
            lattice,
            action,
            recipe,
            train,
            anneal: None,
            init: None,
            out: model.to_path_buf(),
        })
    }

    /// Chain `k` of a point: the flow chain for k = 0, else `sample.kernels[k − 1]` (with
    /// seed + k).
    pub fn chain_spec(&self, point: &SweepPoint, k: usize, model: &Path) -> Result<SampleSpec> {
        let mut spec = self.sample_spec(point, model)?;
        if let Some(kernel) = k.checked_sub(1).and_then(|i| self.sample.kernels.get(i)) {
            spec.kernel = kernel.clone();
            spec.seed = point.seed.wrapping_add(k as u64);
            spec.model = kernel.uses_flow().then(|| model.to_path_buf());
        }
        Ok(spec)
    }

    /// The flow chain of a point.
    pub fn sample_spec(&self, point: &SweepPoint, model: &Path) -> Result<SampleSpec> {
        let (lattice, action) = self.target(point)?;
        Ok(SampleSpec {
            lattice,
            action,
            kernel: KernelSpec {
                kind: KernelExpr::Kernel("flow".into()),
                flow_batch: self.sample.flow_batch,
                ..KernelSpec::default()
            },
            n: self.sample.n,
            therm: self.sample.therm,
            thin: 1,
            seed: point.seed,
            model: Some(model.to_path_buf()),
            chains: self.sample.chains,
        })
    }
}

/// How a sweep ended.
#[derive(Clone, Debug)]
// Returned once per sweep: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum SweepOutcome {
    /// Every point is done; the rows in grid order.
    Finished {
        /// The sweep folder.
        folder: PathBuf,
        /// One row per point.
        rows: Vec<SweepRow>,
        /// Points skipped because an earlier run finished them.
        reused: usize,
        /// The HMC baseline, when the runcard asks for one.
        hmc: Option<HmcBaselineResult>,
        /// The training-cost analysis of the rows, one per training method (in the order of
        /// [`SweepSpec::method_names`]).
        training_costs: Vec<TrainingCost>,
        /// The kernels of the points against the HMC baseline, one per training method
        /// (empty without a baseline).
        comparisons: Vec<SamplerComparison>,
    },
    /// Stopped on request; finished points are kept.
    Stopped {
        /// The sweep folder.
        folder: PathBuf,
        /// The point that was running.
        point: String,
    },
}

/// Runs every point of a sweep not finished before, then writes `sweep.csv` and
/// `sweep.json`. A folder holding another sweep's runcard is refused. Over several ranks
/// every rank makes the call: point i runs on rank i mod R (the HMC baseline's sizes are
/// dealt the same way), each point as one process, and rank 0 writes the tables once all
/// are done. A stop on any rank stops the sweep after the points in progress.
pub fn run_sweep(
    sweep: &LoadedSweep,
    ranks: &dyn Collective,
    stop: &StopToken,
    observer: &mut dyn Observer,
) -> Result<SweepOutcome> {
    let spec = &sweep.spec;
    let registry = &sweep.registry;
    spec.validate_with(registry)?;
    let folder = spec.out.join(&spec.name);
    if ranks.is_root() {
        super::prepare_folder(&folder, &sweep.runcard)?;
    }
    // The other ranks start once the folder is ready (or refused: then rank 0 has failed).
    ranks.barrier()?;
    if !ranks.is_root() {
        super::prepare_folder(&folder, &sweep.runcard)?;
    }
    let points = spec.points()?;
    let point_file =
        |point: &SweepPoint| folder.join("points").join(point.key()).join("point.json");
    let reused = points.iter().filter(|p| point_file(p).is_file()).count();
    let mut stopped_at = None;
    for (i, point) in points.iter().enumerate() {
        let dir = folder.join("points").join(point.key());
        let done = dir.join("point.json");
        if i % ranks.size() != ranks.rank() || done.is_file() {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let model = dir.join("model.json");
        let checkpoint = dir.join("checkpoint.json");
        let control = TrainControl {
            checkpoint: Some(&checkpoint),
            checkpoint_every: 100,
            log: Some(&dir.join("training.csv")),
            stop,
            ranks: None,
            registry,
        };
        // Where the point stands in the grid, for the progress display.
        let place = format!("[{}/{}] {}", i + 1, points.len(), point.key());
        let mut point_observer = Prefixed::new(observer, &place);
        let outcome = if checkpoint.is_file() && !model.is_file() {
            crate::run::resume(&checkpoint, Some(&model), &control, &mut point_observer)?
        } else {
            crate::run::train(
                &spec.train_spec(point, &model)?,
                &control,
                &mut point_observer,
            )?
        };
        let report = match outcome {
            TrainOutcome::Finished(r) => r,
            TrainOutcome::Stopped { .. } => {
                stopped_at = Some(point.key());
                break;
            }
        };
        let sample_spec = spec.sample_spec(point, &model)?;
        let chain = sample_with(
            &sample_spec,
            registry,
            &mut Prefixed::new(&mut point_observer, "flow"),
            stop,
        )?;
        if chain.interrupted {
            stopped_at = Some(point.key());
            break;
        }
        let mut samplers = vec![ChainCost::of(&sample_spec, &chain)];
        for k in 1..=spec.sample.kernels.len() {
            let kernel_spec = spec.chain_spec(point, k, &model)?;
            let name = kernel_spec.kernel.kind.to_string();
            let r = sample_with(
                &kernel_spec,
                registry,
                &mut Prefixed::new(&mut point_observer, &name),
                stop,
            )?;
            if r.interrupted {
                break;
            }
            samplers.push(ChainCost::of(&kernel_spec, &r));
        }
        if samplers.len() <= spec.sample.kernels.len() {
            stopped_at = Some(point.key());
            break;
        }
        let abs_m = chain.observables.get("abs_m");
        let row = SweepRow {
            point: point.clone(),
            n_params: report.n_params,
            configs_seen: report.configs_seen,
            train_seconds: report.seconds,
            acceptance: chain.acceptance,
            ess: report.ess,
            tau_rej: chain.tau_rej.unwrap_or(f64::NAN),
            tau_rej_err: chain.tau_rej_err.unwrap_or(f64::NAN),
            tau_int_abs_m: abs_m.map_or(f64::NAN, |e| e.tau_int),
            tau_int_abs_m_err: abs_m.map_or(f64::NAN, |e| e.tau_int_err),
            longest_rejection_run: chain.longest_rejection_run.unwrap_or(0),
            verdict: chain.verdict,
            samplers,
        };
        write_json(&done, &row)?;
    }
    if ranks.any(stopped_at.is_some())? {
        return Ok(SweepOutcome::Stopped {
            folder,
            point: stopped_at.unwrap_or_else(|| "a point of another rank".into()),
        });
    }
    let rows = points
        .iter()
        .map(|p| read_json::<SweepRow>(&point_file(p), "sweep point"))
        .collect::<Result<Vec<_>>>()?;
    if ranks.is_root() {
        write_table(&folder, &rows)?;
    }
    let hmc = match &spec.hmc {
        None => None,
        Some(baseline) => match run_baseline(sweep, baseline, &folder, ranks, stop, observer)? {
            Some(result) => Some(result),
            None => {
                return Ok(SweepOutcome::Stopped {
                    folder,
                    point: "hmc baseline".into(),
                });
            }
        },
    };
    // ξ per size: the HMC baseline's ξ_2nd (mean over seeds), else the reference line's L/4.
    let xi_of = |l: usize| {
        let measured: Vec<f64> = hmc
            .iter()
            .flat_map(|h| h.rows.iter())
            .filter(|r| r.l == l && r.xi.is_finite())
            .map(|r| r.xi)
            .collect();
        if measured.is_empty() {
            l as f64 / 4.0
        } else {
            measured.iter().sum::<f64>() / measured.len() as f64
        }
    };
    let mut training_costs = Vec::new();
    let mut comparisons = Vec::new();
    for method in spec.method_names() {
        let of_method: Vec<SweepRow> = rows
            .iter()
            .filter(|r| r.point.method == method)
            .cloned()
            .collect();
        let mut cost = super::training_cost(&of_method, &xi_of, spec.target_tau_rej);
        cost.method = method.clone();
        let comparison = hmc.as_ref().map(|h| {
            let mut c = super::sampler_comparison(&of_method, &h.rows, spec.sample.amortise_over);
            c.method = method.clone();
            c
        });
        if ranks.is_root() {
            write_training_cost(&folder, &cost)?;
            if let Some(c) = &comparison {
                write_comparison(&folder, c)?;
            }
        }
        training_costs.push(cost);
        comparisons.extend(comparison);
    }
    Ok(SweepOutcome::Finished {
        folder,
        rows,
        reused,
        hmc,
        training_costs,
        comparisons,
    })
}

/// Runs the HMC baseline (reusing finished rows) and writes `hmc.csv` and `hmc.json`;
/// `None` when stopped.
fn run_baseline(
    sweep: &LoadedSweep,
    baseline: &HmcBaseline,
    folder: &Path,
    ranks: &dyn Collective,
    stop: &StopToken,
    observer: &mut dyn Observer,
) -> Result<Option<HmcBaselineResult>> {
    // One chain per (size, seed); the sizes are dealt to the ranks in turn, so that every
    // seed of a size runs on the rank that tuned its trajectory.
    let spec = &sweep.spec;
    let mut units: Vec<SweepPoint> = Vec::new();
    for point in spec.points()? {
        if !units.iter().any(|u| (u.l, u.seed) == (point.l, point.seed)) {
            units.push(point);
        }
    }
    let mut sizes: Vec<usize> = units.iter().map(|u| u.l).collect();
    sizes.dedup();
    let unit_file = |point: &SweepPoint| {
        folder
            .join("points")
            .join(format!("hmc-L{}-s{}", point.l, point.seed))
            .join("hmc.json")
    };
    let mut stopped = false;
    let mut tuned_at: Vec<(usize, f64, usize)> = Vec::new();
    for (u, point) in units.iter().enumerate() {
        let place = format!("{}/{}", u + 1, units.len());
        let size_index = sizes.iter().position(|&l| l == point.l).unwrap_or(0);
        let done = unit_file(point);
        if size_index % ranks.size() != ranks.rank() || done.is_file() {
            continue;
        }
        let dir = done.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (lattice, action) = spec.target(point)?;
        let mut chain = SampleSpec {
            lattice,
            action,
            kernel: KernelSpec::default(),
            n: baseline.n,
            therm: baseline.therm,
            thin: 1,
            seed: point.seed,
            model: None,
            chains: 1,
        };
        let key = format!("L{} seed {}", point.l, point.seed);
        // One trajectory per size (tuned with its first seed), so that the seeds of a size
        // are replicas of one algorithm.
        let label = format!("[{place}] hmc {key}");
        let mut unit_observer = Prefixed::new(observer, &label);
        let (tau, md_steps) = match tuned_at.iter().find(|t| t.0 == point.l) {
            Some(&(_, tau, md_steps)) => (tau, md_steps),
            None => {
                let ranked = ["abs_m", "m2", "phi2", "energy"].map(String::from);
                let tuned = match super::tune_hmc(
                    &chain,
                    &sweep.registry,
                    &ranked,
                    &mut unit_observer,
                    stop,
                ) {
                    Err(Error::Interrupted(_)) => {
                        stopped = true;
                        break;
                    }
                    other => other?,
                };
                tuned_at.push((point.l, tuned.tau, tuned.md_steps));
                (tuned.tau, tuned.md_steps)
            }
        };
        chain.kernel.tau = tau;
        chain.kernel.md_steps = md_steps;
        let report = sample_with(&chain, &sweep.registry, &mut unit_observer, stop)?;
        if report.interrupted {
            stopped = true;
            break;
        }
        let get = |name: &str| {
            report
                .observables
                .get(name)
                .map_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN), |e| {
                    (e.mean, e.err, e.tau_int, e.tau_int_err)
                })
        };
        let (_, _, tau_abs_m, tau_abs_m_err) = get("abs_m");
        let (_, _, tau_chi, tau_chi_err) = get("chi");
        let (xi, xi_err, tau_xi, tau_xi_err) = get("xi_2nd");
        let cost = ChainCost::of(&chain, &report);
        let row = HmcRow {
            l: point.l,
            beta: point.beta,
            seed: point.seed,
            tau,
            md_steps,
            acceptance: report.acceptance,
            seconds_per_step: cost.seconds_per_step,
            xi,
            xi_err,
            tau_abs_m,
            tau_abs_m_err,
            tau_chi,
            tau_chi_err,
            tau_xi,
            tau_xi_err,
            cost_per_independent: cost.cost_per_independent,
            cost_per_independent_err: cost.cost_per_independent_err,
            verdict: report.verdict,
        };
        write_json(&done, &row)?;
    }
    if ranks.any(stopped)? {
        return Ok(None);
    }
    let rows = units
        .iter()
        .map(|u| read_json::<HmcRow>(&unit_file(u), "HMC baseline row"))
        .collect::<Result<Vec<_>>>()?;
    let usable: Vec<&HmcRow> = rows
        .iter()
        .filter(|r| r.xi.is_finite() && r.tau_abs_m.is_finite() && r.tau_abs_m_err > 0.0)
        .collect();
    let (z_fit, z_fit_failure) = if usable.len() < 2 {
        (
            None,
            Some("a power law needs rows at two or more sizes".to_string()),
        )
    } else {
        let x: Vec<f64> = usable.iter().map(|r| r.xi).collect();
        let y: Vec<f64> = usable.iter().map(|r| r.tau_abs_m).collect();
        let e: Vec<f64> = usable.iter().map(|r| r.tau_abs_m_err).collect();
        match power_law_fit(&x, &y, &e) {
            Ok(fit) => (Some(fit), None),
            Err(err) => (None, Some(err.to_string())),
        }
    };
    let result = HmcBaselineResult {
        rows,
        z_fit,
        z_fit_failure,
    };
    if !ranks.is_root() {
        return Ok(Some(result));
    }
    write_json(&folder.join("hmc.json"), &result)?;
    let mut csv = format!("{HMC_HEADER}\n");
    for r in &result.rows {
        let cells = [
            r.l.to_string(),
            r.beta.to_string(),
            r.seed.to_string(),
            r.tau.to_string(),
            r.md_steps.to_string(),
            num(r.acceptance),
            num(r.seconds_per_step),
            num(r.xi),
            num(r.xi_err),
            num(r.tau_abs_m),
            num(r.tau_abs_m_err),
            num(r.tau_chi),
            num(r.tau_chi_err),
            num(r.tau_xi),
            num(r.tau_xi_err),
            num(r.cost_per_independent),
            num(r.cost_per_independent_err),
            r.verdict.to_string(),
        ];
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    write_atomic(&folder.join("hmc.csv"), csv.as_bytes())?;
    Ok(Some(result))
}

/// The columns of `budgets.csv`: per size and budget, the flows averaged over seeds.
pub const BUDGETS_HEADER: &str =
    "L,configs_seen,runs,acceptance,acceptance_err,tau_rej,tau_rej_err,train_seconds";

/// The columns of `training_cost.csv`: per size, the budget that reaches the target τ_rej.
pub const TRAINING_COST_HEADER: &str = "L,xi,configs,configs_err,seconds,seconds_err";

/// A file of one method's analysis: `stem.ext`, or `stem-METHOD.ext` for a named method.
fn method_file(stem: &str, method: &str, ext: &str) -> String {
    match method {
        "" => format!("{stem}.{ext}"),
        method => format!("{stem}-{method}.{ext}"),
    }
}

/// Writes `training_cost.json` (everything), `budgets.csv` and `training_cost.csv` (with
/// `-METHOD` before the extension for a named method).
fn write_training_cost(folder: &Path, cost: &TrainingCost) -> Result<()> {
    let file = |stem: &str, ext: &str| folder.join(method_file(stem, &cost.method, ext));
    write_json(&file("training_cost", "json"), cost)?;
    let mut csv = format!("{BUDGETS_HEADER}\n");
    for b in &cost.budgets {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            b.l,
            b.configs_seen,
            b.runs,
            num(b.acceptance),
            num(b.acceptance_err),
            num(b.tau_rej),
            num(b.tau_rej_err),
            num(b.train_seconds)
        ));
    }
    write_atomic(&file("budgets", "csv"), csv.as_bytes())?;
    let mut csv = format!("{TRAINING_COST_HEADER}\n");
    for c in &cost.costs {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            c.l,
            c.xi,
            c.configs,
            num(c.configs_err),
            c.seconds,
            num(c.seconds_err)
        ));
    }
    write_atomic(&file("training_cost", "csv"), csv.as_bytes())
}

/// The columns of `sampler_cost.csv`: per kernel and size, the cost of an independent
/// configuration against tuned HMC's.
pub const SAMPLER_COST_HEADER: &str = "kernel,L,configs_seen,runs,cost,cost_err,\
training_seconds,amortised_cost,hmc_cost,hmc_cost_err";

/// Writes `sampler_cost.json` (everything), `sampler_cost.csv` and the chart
/// `plots/sampler_cost.{png,svg}` (with `-METHOD` before the extension for a named method):
/// seconds per independent configuration against L for every kernel (sampling alone:
/// solid; amortised: dashed) and for tuned HMC.
fn write_comparison(folder: &Path, comparison: &SamplerComparison) -> Result<()> {
    let method = comparison.method.as_str();
    write_json(
        &folder.join(method_file("sampler_cost", method, "json")),
        comparison,
    )?;
    let mut csv = format!("{SAMPLER_COST_HEADER}\n");
    for s in &comparison.sizes {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            s.kernel,
            s.l,
            s.configs_seen,
            s.runs,
            num(s.cost),
            num(s.cost_err),
            num(s.training_seconds),
            num(s.amortised_cost),
            num(s.hmc_cost),
            num(s.hmc_cost_err)
        ));
    }
    write_atomic(
        &folder.join(method_file("sampler_cost", method, "csv")),
        csv.as_bytes(),
    )?;
    let mut kernels: Vec<&str> = Vec::new();
    for s in &comparison.sizes {
        if !kernels.contains(&s.kernel.as_str()) {
            kernels.push(&s.kernel);
        }
    }
    let mut series = Vec::new();
    let mut hmc: Vec<(f64, f64, f64)> = Vec::new();
    for s in &comparison.sizes {
        if s.hmc_cost.is_finite() && !hmc.iter().any(|h| h.0 == s.l as f64) {
            hmc.push((s.l as f64, s.hmc_cost, s.hmc_cost_err));
        }
    }
    series.push(Series {
        label: "tuned HMC".into(),
        points: hmc.iter().map(|h| (h.0, h.1)).collect(),
        errors: Some(hmc.iter().map(|h| h.2).collect()),
        style: Style::Markers,
        colour: Some(0),
    });
    for (k, kernel) in kernels.iter().enumerate() {
        let at: Vec<&SamplerAtSize> = comparison
            .sizes
            .iter()
            .filter(|s| s.kernel == *kernel)
            .collect();
        series.push(Series {
            label: format!("{kernel}, sampling"),
            points: at.iter().map(|s| (s.l as f64, s.cost)).collect(),
            errors: Some(at.iter().map(|s| s.cost_err).collect()),
            style: Style::Markers,
            colour: Some(k + 1),
        });
        series.push(Series {
            label: format!(
                "{kernel}, training over {} configs",
                super::report::sig(comparison.amortise_over, 2)
            ),
            points: at.iter().map(|s| (s.l as f64, s.amortised_cost)).collect(),
            errors: None,
            style: Style::Dashed,
            colour: Some(k + 1),
        });
    }
    // Room below the data for the legend (one row per series), which would otherwise
    // cover the points of the smallest or largest size.
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|c| c.is_finite() && *c > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), c| {
            (lo.min(c), hi.max(c))
        });
    let y_range = (hi > 0.0).then(|| {
        let span = (hi / lo).max(4.0);
        (lo / span, 1.5 * hi)
    });
    let chart = Chart {
        y_range,
        title: match method {
            "" => "Cost of an independent configuration against L".into(),
            method => format!("Cost of an independent configuration against L ({method})"),
        },
        x_label: "L".into(),
        y_label: "seconds per independent configuration".into(),
        series,
        x_log: true,
        y_log: true,
        ..Chart::default()
    };
    let plots = folder.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    let stem = match method {
        "" => "sampler_cost".to_string(),
        method => format!("sampler_cost-{method}"),
    };
    draw_chart(&chart, &plots.join(stem))?;
    Ok(())
}

fn write_table(folder: &Path, rows: &[SweepRow]) -> Result<()> {
    write_json(&folder.join("sweep.json"), rows)?;
    let mut csv = format!("{SWEEP_HEADER}\n");
    for r in rows {
        let p = &r.point;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            p.l,
            p.beta,
            p.lambda,
            p.batch,
            p.iterations,
            p.lr,
            p.seed,
            r.n_params,
            r.configs_seen,
            num(r.train_seconds),
            num(r.acceptance),
            num(r.ess),
            num(r.tau_rej),
            num(r.tau_rej_err),
            num(r.tau_int_abs_m),
            num(r.tau_int_abs_m_err),
            r.longest_rejection_run,
            r.verdict,
            p.method
        ));
    }
    write_atomic(&folder.join("sweep.csv"), csv.as_bytes())
}
