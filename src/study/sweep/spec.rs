//! The sweep runcard: its grid, training methods, sampling and HMC-baseline settings,
//! the points the grid spans, and the check of every point's runs before any work.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reference_beta;
use crate::error::{Error, Result};
use crate::kernel::KernelExpr;
use crate::lattice::Lattice;
use crate::run::{ActionSpec, KernelSpec, RecipeSpec, Registry, SampleSpec, TrainSpec};
use crate::stats::nan_if_null;
use crate::study::spec::Override;
use crate::train::{GradientEstimator, TrainConfig};

/// Most points a sweep's grid may have (the product of its axes' lengths): each trains a
/// flow, so even at a second per point a larger grid runs for days.
pub const MAX_SWEEP_POINTS: usize = 100_000;

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
    /// ([`crate::study::training_cost`]).
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

/// An invalid parameter of entry `k` of `sample.kernels`, named as that key.
fn in_kernel(k: usize, error: Error) -> Error {
    match error {
        Error::InvalidParameter { name, reason } => {
            Error::param("sample.kernels", format!("kernel {k}: {name}: {reason}"))
        }
        other => other,
    }
}

fn default_target_tau_rej() -> f64 {
    crate::study::DEFAULT_TARGET_TAU_REJ
}

/// The HMC baseline of a sweep: per L, a pilot scan with the first seed chooses the
/// trajectory ([`crate::study::tune_hmc`], ranked by the τ_int of |m|, m², φ² and the energy); then
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

fn default_out() -> PathBuf {
    PathBuf::from("latflow-out")
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
        let (spec, table): (SweepSpec, _) =
            crate::study::runcard::parse_with_overrides(&text, &origin, overrides)?;
        spec.validate_with(&registry)
            .and_then(|()| spec.refuse_unread_keys(&table))
            .map_err(|e| {
                let paths = match &e {
                    Error::InvalidParameter { name, .. } => vec![name.clone()],
                    _ => Vec::new(),
                };
                crate::study::runcard::located(e, &text, &origin, overrides, &paths)
            })?;
        let runcard = crate::study::runcard::runcard_text(&spec, "sweep", overrides)?;
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
        for (key, values) in [
            ("lattices", grid_values(&self.lattices)),
            ("seeds", grid_values(&self.seeds)),
            ("batch", grid_values(&self.batch)),
            ("iterations", grid_values(&self.iterations)),
            ("lr", grid_values(&self.lr)),
        ] {
            if values.is_empty() {
                return Err(Error::param(key, "the grid needs at least one value"));
            }
            if let Some((i, value)) = values
                .iter()
                .enumerate()
                .find(|(i, v)| values[..*i].contains(v))
            {
                return Err(Error::param(
                    key,
                    format!(
                        "{value} is given twice (entries {} and {i}): every point would be run \
                         and counted twice, and the spread over seeds understated",
                        values.iter().position(|v| v == value).unwrap_or(0)
                    ),
                ));
            }
        }
        if let Some(lambda) = self.lambda
            && !(lambda.is_finite() && lambda >= 0.0)
        {
            return Err(Error::param(
                "lambda",
                format!("must be finite and ≥ 0, got {lambda}"),
            ));
        }
        if let Some(&(l, beta)) = self.beta.iter().find(|(_, b)| !b.is_finite()) {
            return Err(Error::param(
                "beta",
                format!("β for L = {l} must be finite, got {beta}"),
            ));
        }
        self.check_grid_size()?;
        // A size without its β is named first; then β entries that match no size.
        let points = self.points()?;
        for (i, &(l, _)) in self.beta.iter().enumerate() {
            if self.beta[..i].iter().any(|b| b.0 == l) {
                return Err(Error::param(
                    "beta",
                    format!("β is given twice for L = {l}"),
                ));
            }
            if !self.lattices.contains(&l) {
                return Err(Error::param(
                    "beta",
                    format!(
                        "β is given for L = {l}, which is not in `lattices` ({:?})",
                        self.lattices
                    ),
                ));
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
        for point in points {
            if let Some(baseline) = &self.hmc {
                self.baseline_spec(&point, baseline)?
                    .validate_with(registry)
                    .map_err(|e| match e {
                        Error::InvalidParameter { name, reason } => {
                            Error::param(format!("hmc.{name}"), reason)
                        }
                        other => other,
                    })?;
            }
            self.train_spec(&point, Path::new("model.json"))?
                .validate()
                .map_err(|e| {
                    crate::study::spec::training_key(e, "", &["batch", "iterations", "lr"])
                })?;
            for k in 0..=self.sample.kernels.len() {
                self.chain_spec(&point, k, Path::new("model.json"))?
                    .validate_with(registry)
                    .map_err(|e| match k {
                        0 => e,
                        k => in_kernel(k - 1, e),
                    })?;
            }
        }
        Ok(())
    }

    /// Refuses a setting the runcard `doc` gives in a table of `sample.kernels` that no
    /// kernel of its expression reads, whatever its value ([`SweepSpec::validate`] compares
    /// values with the defaults).
    fn refuse_unread_keys(&self, doc: &toml::Table) -> Result<()> {
        for (k, kernel) in self.sample.kernels.iter().enumerate() {
            let keys = crate::study::runcard::table_keys(doc, &format!("sample.kernels.{k}"));
            kernel
                .refuse_unread_settings(keys)
                .map_err(|e| in_kernel(k, e))?;
        }
        Ok(())
    }

    /// Refuses a grid of more than [`MAX_SWEEP_POINTS`] points before it is spelled out,
    /// naming the count and the axes that multiply to it.
    fn check_grid_size(&self) -> Result<()> {
        let axes = [
            ("lattices", self.lattices.len()),
            ("method", self.methods.len().max(1)),
            ("batch", self.batch.len()),
            ("iterations", self.iterations.len()),
            ("lr", self.lr.len()),
            ("seeds", self.seeds.len()),
        ];
        let count = axes
            .iter()
            .try_fold(1u128, |acc, a| acc.checked_mul(a.1 as u128))
            .unwrap_or(u128::MAX);
        if count <= MAX_SWEEP_POINTS as u128 {
            return Ok(());
        }
        let longest = axes.iter().max_by_key(|a| a.1).map_or("seeds", |a| a.0);
        let factors: Vec<String> = axes
            .iter()
            .filter(|a| a.1 > 1)
            .map(|a| format!("{} {}", a.1, a.0))
            .collect();
        Err(Error::param(
            longest,
            format!(
                "the grid has {} points ({}), more than the {MAX_SWEEP_POINTS} a sweep runs: \
                 each point trains a flow",
                crate::limits::format_count(count),
                factors.join(" × ")
            ),
        ))
    }

    pub(super) fn target(&self, point: &SweepPoint) -> Result<(Lattice, ActionSpec)> {
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
            snf: None,
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

    /// The HMC baseline's chain at a point (its size and seed), before its trajectory is
    /// tuned.
    pub fn baseline_spec(&self, point: &SweepPoint, baseline: &HmcBaseline) -> Result<SampleSpec> {
        let (lattice, action) = self.target(point)?;
        Ok(SampleSpec {
            lattice,
            action,
            kernel: KernelSpec::default(),
            n: baseline.n,
            therm: baseline.therm,
            thin: 1,
            seed: point.seed,
            model: None,
            chains: 1,
        })
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

/// The values of a grid axis as text, to find repeated ones (learning rates compare by
/// their decimal form).
fn grid_values<T: std::fmt::Display>(values: &[T]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}
