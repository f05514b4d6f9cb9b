//! The study runcard: its fields, `--set` overrides, the seeds it derives and its checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lattice::Lattice;
use crate::run::{
    ActionSpec, AnnealSpec, KernelSpec, RecipeSpec, Registry, SampleSpec, TrainSpec,
    kernel_table_or_expression,
};
use crate::study::runcard::{located, parse_with_overrides, runcard_text, table_keys};
use crate::train::TrainConfig;

/// The built-in study: L = 8, β = 0.576, λ = 0.5; the seed recipe trained, then flow,
/// flow+local, tuned HMC and local Metropolis compared (the file `examples/study.toml`).
pub const DEFAULT_STUDY: &str = include_str!("../../examples/study.toml");

/// A whole study: what is sampled, the flow to train (if any), the samplers to compare,
/// how long they run, and how the stored series are analysed.
///
/// Seeds: `seed` drives everything not seeded explicitly — the training seed
/// (`[flow.train] seed`) defaults to `seed`, and sampler i (from 0) to `seed + 1 + i`
/// (modulo 2⁶³, see [`crate::run::derived_seed`]).
/// The runcard written into the study folder lists every seed used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// The study's name: its folder is `out/name`.
    pub name: String,
    /// The folder that holds study folders.
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// The master seed.
    #[serde(default = "one_u64")]
    pub seed: u64,
    /// The lattice.
    pub lattice: Lattice,
    /// The action, in any form.
    pub action: ActionSpec,
    /// The flow to train, needed when a sampler's kernel uses `flow`.
    #[serde(default)]
    pub flow: Option<FlowSection>,
    /// Chain lengths shared by the samplers.
    #[serde(default)]
    pub measure: MeasureSpec,
    /// The samplers to compare, as `[[sampler]]` tables.
    #[serde(rename = "sampler", default)]
    pub samplers: Vec<SamplerSpec>,
    /// How stored series are analysed.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Reference values of observables (e.g. from the literature or a long run), drawn in
    /// the report's comparison with the samplers: `phi2 = 1.23` or `phi2 = [1.23, 0.01]`
    /// (value and error).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reference: BTreeMap<String, ReferenceValue>,
}

/// A reference value of an observable: the value alone, or `[value, error]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReferenceValue {
    /// A value taken as exact.
    Exact(f64),
    /// A value with its standard error.
    WithError([f64; 2]),
}

impl ReferenceValue {
    /// The value and its error (0 for an exact value).
    pub fn value_and_error(&self) -> (f64, f64) {
        match *self {
            ReferenceValue::Exact(v) => (v, 0.0),
            ReferenceValue::WithError([v, e]) => (v, e),
        }
    }
}

/// The observables a study reports, in the order a physicist reads them: field moments,
/// magnetisation, susceptibility and Binder cumulant, energies, correlation lengths.
pub const OBSERVABLE_ORDER: [&str; 11] = [
    "phi2",
    "m",
    "abs_m",
    "m2",
    "chi",
    "binder",
    "energy",
    "action_density",
    "xi_2nd",
    "xi_eff",
    "xi_fit",
];

fn default_out() -> PathBuf {
    PathBuf::from("latflow-out")
}

fn one_u64() -> u64 {
    1
}

/// The flow of a study: recipe, training and optional coupling annealing, or a flow
/// trained before (`model`; serialised without the recipe, training and annealing it does
/// not read).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSection {
    /// A model file written by `latflow train` (or an earlier study), used instead of
    /// training one: it must be trained for the study's lattice and action, and its
    /// training report (seconds, configurations, acceptance) is read from its metadata.
    /// A relative path is taken from the working directory. With it, `recipe`, `train`
    /// and `anneal` must be left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// The recipe and its sizes.
    #[serde(default)]
    pub recipe: RecipeSpec,
    /// Batch, iterations, learning rate, schedule, optimiser, seed, evaluations.
    #[serde(default)]
    pub train: TrainConfig,
    /// Ramp the hopping coupling up during training.
    #[serde(default)]
    pub anneal: Option<AnnealSpec>,
    /// Write a checkpoint every this many iterations.
    #[serde(default = "hundred")]
    pub checkpoint_every: usize,
}

impl Serialize for FlowSection {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Written<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            model: Option<&'a PathBuf>,
            #[serde(skip_serializing_if = "Option::is_none")]
            recipe: Option<&'a RecipeSpec>,
            #[serde(skip_serializing_if = "Option::is_none")]
            train: Option<&'a TrainConfig>,
            #[serde(skip_serializing_if = "Option::is_none")]
            anneal: Option<&'a AnnealSpec>,
            checkpoint_every: usize,
        }
        let trained_here = self.model.is_none();
        Written {
            model: self.model.as_ref(),
            recipe: trained_here.then_some(&self.recipe),
            train: trained_here.then_some(&self.train),
            anneal: self.anneal.as_ref().filter(|_| trained_here),
            checkpoint_every: self.checkpoint_every,
        }
        .serialize(serializer)
    }
}

fn hundred() -> usize {
    100
}

/// Chain lengths every sampler uses unless it sets its own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeasureSpec {
    /// Measured steps per sampler.
    pub n: usize,
    /// Thermalisation steps before measuring.
    pub therm: usize,
    /// Measure every `thin`-th step.
    pub thin: usize,
    /// Configurations saved per sampler, evenly spaced over the measurements.
    pub saved_configs: usize,
    /// Independent chains per sampler, advanced in lockstep and analysed as replicas.
    pub chains: usize,
}

impl Default for MeasureSpec {
    fn default() -> Self {
        MeasureSpec {
            n: 50_000,
            therm: 2_000,
            thin: 1,
            saved_configs: 1_000,
            chains: 1,
        }
    }
}

/// One sampler of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    /// Its name in tables and plots (unique within the study).
    pub name: String,
    /// The kernel: an expression (`kernel = "flow+local"`) or a table of settings
    /// (`kernel = { kind = "hmc", tau = 2.0, md_steps = 8 }`).
    #[serde(deserialize_with = "kernel_table_or_expression")]
    pub kernel: KernelSpec,
    /// Choose the HMC trajectory (τ, MD steps) by a pilot scan before the run (kernel `hmc`
    /// only; see [`crate::study::tune_hmc`]).
    #[serde(default)]
    pub tune: bool,
    /// Measured steps (default `[measure] n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Thermalisation steps (default `[measure] therm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub therm: Option<usize>,
    /// Thinning (default `[measure] thin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin: Option<usize>,
    /// The chain's seed (default: the study seed + 1 + the sampler's position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Independent chains in lockstep (default `[measure] chains`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<usize>,
}

/// How the stored series are analysed; `latflow analyse` can change it without re-running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Measurements dropped at the start of every stored series, on top of the
    /// thermalisation steps that were never stored.
    pub therm_cut: usize,
    /// The correlated cosh fit's range `[t_min, t_max]` (default `[max(1, ⌊L/4⌋), ⌊L/2⌋]`).
    pub fit_range: Option<[usize; 2]>,
    /// Bins of the φ and M histograms.
    pub histogram_bins: usize,
    /// The observables whose largest τ_int sets the cost of an independent configuration.
    pub cost_observables: Vec<String>,
    /// The observable whose autocorrelation function Γ(t)/Γ(0) and τ_int(W) are plotted.
    pub autocorrelation_observable: String,
}

/// Most histogram bins `analysis.histogram_bins` may ask for.
pub const MAX_HISTOGRAM_BINS: usize = 10_000;

/// The series whose autocorrelation function a study can plot
/// (`analysis.autocorrelation_observable`): the measured, not derived, quantities.
pub const AUTOCORRELATION_OBSERVABLES: [&str; 6] =
    ["phi2", "m", "abs_m", "m2", "energy", "action_density"];

impl AnalysisSpec {
    /// Checks the settings that do not depend on the lattice: the bins (1 to
    /// [`MAX_HISTOGRAM_BINS`]), the cost observables (among
    /// [`REPORTED_OBSERVABLES`](crate::run::REPORTED_OBSERVABLES)) and the autocorrelation
    /// observable (among [`AUTOCORRELATION_OBSERVABLES`]).
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_HISTOGRAM_BINS).contains(&self.histogram_bins) {
            return Err(Error::param(
                "analysis.histogram_bins",
                format!(
                    "must be 1 to {MAX_HISTOGRAM_BINS}, got {}",
                    self.histogram_bins
                ),
            ));
        }
        if self.cost_observables.is_empty() {
            return Err(Error::param(
                "analysis.cost_observables",
                "name at least one observable",
            ));
        }
        let reported = crate::run::REPORTED_OBSERVABLES;
        if let Some(bad) = self
            .cost_observables
            .iter()
            .find(|o| !reported.contains(&o.as_str()))
        {
            return Err(Error::param(
                "analysis.cost_observables",
                format!(
                    "`{}` is not a reported observable (one of {})",
                    bad,
                    reported.join(", ")
                ),
            ));
        }
        let observable = self.autocorrelation_observable.as_str();
        if !AUTOCORRELATION_OBSERVABLES.contains(&observable) {
            return Err(Error::param(
                "analysis.autocorrelation_observable",
                format!(
                    "`{}` is not a measured series (one of {})",
                    observable,
                    AUTOCORRELATION_OBSERVABLES.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            therm_cut: 0,
            fit_range: None,
            histogram_bins: 60,
            cost_observables: ["abs_m", "m2", "phi2", "energy"].map(String::from).to_vec(),
            autocorrelation_observable: "abs_m".to_string(),
        }
    }
}

impl AnalysisSpec {
    /// These settings with `overrides` applied (keys `analysis.KEY`; any other key is
    /// refused, naming it).
    pub fn with_overrides(&self, overrides: &[Override]) -> Result<AnalysisSpec> {
        let table = toml::Value::try_from(self)
            .map_err(|e| Error::format("analysis settings", e.to_string()))?;
        let mut root = toml::Value::Table(toml::Table::from_iter([("analysis".into(), table)]));
        for o in overrides {
            if !o.key.starts_with("analysis.") {
                return Err(Error::param(
                    "set",
                    format!(
                        "`{}`: only analysis.* settings can change without re-running the study",
                        o.key
                    ),
                ));
            }
            o.apply(&mut root)?;
        }
        let what = || {
            format!(
                "analysis settings with {}",
                overrides
                    .iter()
                    .map(|o| format!("{}={}", o.key, o.value))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        root.get("analysis")
            .cloned()
            .ok_or_else(|| Error::format(what(), "no [analysis] table"))?
            .try_into()
            .map_err(|e: toml::de::Error| Error::format(what(), e.to_string()))
    }
}

/// One `--set KEY=VALUE` override of a runcard: a dotted key path (array entries by index,
/// e.g. `sampler.2.n`) and a TOML value (a bare word that is not TOML is a string).
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The dotted key path.
    pub key: String,
    /// The value as typed.
    pub value: String,
}

impl Override {
    /// Parses `KEY=VALUE`.
    pub fn parse(text: &str) -> Result<Self> {
        let (key, value) = text.split_once('=').ok_or_else(|| {
            Error::param(
                "set",
                format!("`{text}` is not KEY=VALUE (e.g. measure.n=20000)"),
            )
        })?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
            return Err(Error::param(
                "set",
                format!("`{key}` is not a dotted key path"),
            ));
        }
        Ok(Override {
            key: key.to_string(),
            value: value.trim().to_string(),
        })
    }

    fn toml_value(&self) -> toml::Value {
        let wrapped = format!("v = {}", self.value);
        match wrapped.parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").unwrap_or_else(|| self.value.clone().into()),
            Err(_) => toml::Value::String(self.value.clone()),
        }
    }

    /// Sets the value at the key path inside `root`, creating missing tables.
    pub(crate) fn apply(&self, root: &mut toml::Value) -> Result<()> {
        let parts: Vec<&str> = self.key.split('.').map(str::trim).collect();
        let mut node = root;
        for (depth, part) in parts.iter().enumerate() {
            let here = parts[..depth].join(".");
            let refuse = |why: String| Error::param("set", format!("`{}`: {why}", self.key));
            let last = depth + 1 == parts.len();
            node = match node {
                toml::Value::Table(t) if last => {
                    t.insert(part.to_string(), self.toml_value());
                    return Ok(());
                }
                toml::Value::Table(t) => t
                    .entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new())),
                toml::Value::Array(a) => {
                    let len = a.len();
                    let entry = part
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| a.get_mut(i))
                        .ok_or_else(|| {
                            refuse(format!(
                                "`{here}` is an array of {len} entries: index it with 0..{len}"
                            ))
                        })?;
                    if last {
                        *entry = self.toml_value();
                        return Ok(());
                    }
                    entry
                }
                _ => return Err(refuse(format!("`{here}` is not a table"))),
            };
        }
        Ok(())
    }
}

/// A parsed study runcard with the text of the runcard as used and the registry of the
/// user's pieces it may name.
#[derive(Clone, Debug)]
pub struct LoadedStudy {
    /// The study.
    pub spec: StudySpec,
    /// The runcard as used: every override applied and every seed written out, with a header
    /// naming the latflow version and the overrides.
    pub runcard: String,
    /// The user's actions, kernels and flow layers the study may name.
    pub registry: Registry,
}

impl StudySpec {
    /// Reads a study runcard from `path` and applies `overrides`.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<LoadedStudy> {
        Self::load_with(path, overrides, Registry::new())
    }

    /// [`StudySpec::load`] for a study that may name the user's actions, kernels and flow
    /// layers of `registry`.
    pub fn load_with(
        path: &Path,
        overrides: &[Override],
        registry: Registry,
    ) -> Result<LoadedStudy> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse_with(
            &text,
            &format!("runcard {}", path.display()),
            overrides,
            registry,
        )
    }

    /// Parses a runcard's text (`origin` names it in errors: unknown keys and wrong types
    /// are reported with their line) and applies `overrides`.
    pub fn parse(text: &str, origin: &str, overrides: &[Override]) -> Result<LoadedStudy> {
        Self::parse_with(text, origin, overrides, Registry::new())
    }

    /// [`StudySpec::parse`] with the user's pieces of `registry`.
    pub fn parse_with(
        text: &str,
        origin: &str,
        overrides: &[Override],
        registry: Registry,
    ) -> Result<LoadedStudy> {
        let (spec, table): (StudySpec, _) = parse_with_overrides(text, origin, overrides)?;
        let spec = spec.with_seeds(&table);
        spec.validate_with(&registry)
            .and_then(|()| spec.refuse_unread_keys(&table))
            .map_err(|e| {
                let paths = spec.runcard_paths(&e);
                located(e, text, origin, overrides, &paths)
            })?;
        let runcard = runcard_text(&spec, "study", overrides)?;
        Ok(LoadedStudy {
            spec,
            runcard,
            registry,
        })
    }

    /// The built-in default study with `overrides`.
    pub fn default_study(overrides: &[Override]) -> Result<LoadedStudy> {
        Self::parse(DEFAULT_STUDY, "the built-in study", overrides)
    }

    /// Writes out the seeds the study derives from `seed` (the training seed when the
    /// runcard gives none, and each sampler's).
    fn with_seeds(mut self, table: &toml::Table) -> Self {
        let train_seed_given = table
            .get("flow")
            .and_then(|f| f.get("train"))
            .and_then(|t| t.get("seed"))
            .is_some();
        if let Some(flow) = &mut self.flow
            && !train_seed_given
            && flow.model.is_none()
        {
            flow.train.seed = self.seed;
        }
        for (i, s) in self.samplers.iter_mut().enumerate() {
            s.seed
                .get_or_insert(crate::run::derived_seed(self.seed, 1 + i as u64));
        }
        self
    }

    /// Refuses keys the runcard `doc` gives that would have no effect, whatever their values
    /// ([`StudySpec::validate`] compares values with the defaults): a kernel-table setting no
    /// kernel of its sampler reads, and `flow.recipe`, `flow.train` or `flow.anneal` beside
    /// a `flow.model`.
    fn refuse_unread_keys(&self, doc: &toml::Table) -> Result<()> {
        for (i, s) in self.samplers.iter().enumerate() {
            let keys = table_keys(doc, &format!("sampler.{i}.kernel"));
            s.kernel
                .refuse_unread_settings(keys)
                .map_err(|e| in_sampler(&s.name, e))?;
        }
        if self.flow.as_ref().is_some_and(|f| f.model.is_some()) {
            refuse_beside_model(table_keys(doc, "flow"))?;
        }
        Ok(())
    }

    /// The runcard keys that may have set the parameter `error` names: a sampler's key in
    /// its `[[sampler]]` table, its kernel table or `[measure]`; any other key as named.
    fn runcard_paths(&self, error: &Error) -> Vec<String> {
        let Error::InvalidParameter { name, .. } = error else {
            return Vec::new();
        };
        let sampler = name
            .strip_prefix("sampler `")
            .and_then(|rest| rest.split_once("`: "))
            .and_then(|(sampler, key)| {
                let i = self.samplers.iter().position(|s| s.name == sampler)?;
                Some((i, key))
            });
        match sampler {
            Some((i, key)) => vec![
                format!("sampler.{i}.kernel.{key}"),
                format!("sampler.{i}.{key}"),
                format!("measure.{key}"),
                format!("sampler.{i}.kernel"),
            ],
            None => vec![name.clone()],
        }
    }

    /// The study's folder, `out/name`.
    pub fn folder(&self) -> PathBuf {
        self.out.join(&self.name)
    }

    /// Checks the name, the samplers (unique names, kernels that exist, a flow section when
    /// a kernel needs one, tuning only for `hmc`), every sampler's run and the training run,
    /// with the built-in pieces only.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(Registry::builtin())
    }

    /// [`StudySpec::validate`] with the user's pieces of `registry`.
    pub fn validate_with(&self, registry: &Registry) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name != "."
            && self.name != ".."
            && !self.name.contains(['/', '\\', '\0']);
        if !name_ok {
            return Err(Error::param(
                "name",
                format!("`{}` cannot name a folder", self.name),
            ));
        }
        if self.samplers.is_empty() {
            return Err(Error::param(
                "sampler",
                "the study has no [[sampler]] to run",
            ));
        }
        let mut slugs = std::collections::BTreeMap::new();
        for (i, s) in self.samplers.iter().enumerate() {
            let slug = slug(&s.name);
            if slug.is_empty() {
                return Err(Error::param(
                    "sampler.name",
                    format!("sampler {i}: `{}` needs a letter or digit", s.name),
                ));
            }
            if let Some(j) = slugs.insert(slug.clone(), i) {
                return Err(Error::param(
                    "sampler.name",
                    format!(
                        "samplers {j} and {i} (`{}`, `{}`) share the folder name `{slug}`",
                        self.samplers[j].name, s.name
                    ),
                ));
            }
            if s.tune && s.kernel.kind.to_string() != "hmc" {
                return Err(Error::param(
                    "sampler.tune",
                    format!(
                        "sampler `{}`: tuning chooses an HMC trajectory, the kernel is `{}`",
                        s.name, s.kernel.kind
                    ),
                ));
            }
            if s.kernel.uses_flow() && self.flow.is_none() {
                return Err(Error::param(
                    "flow",
                    format!(
                        "sampler `{}` uses a flow: the study needs a [flow] section",
                        s.name
                    ),
                ));
            }
            let run = self.sample_spec(i, Path::new("model.json"));
            run.validate_with(registry)
                .map_err(|e| in_sampler(&s.name, e))?;
            let measured = run.n / run.thin;
            if self.analysis.therm_cut > 0 && self.analysis.therm_cut.saturating_add(2) > measured {
                return Err(crate::study::analysis::too_deep_cut(
                    self.analysis.therm_cut,
                    &s.name,
                    measured,
                ));
            }
        }
        if self.flow.is_some() && !self.samplers.iter().any(|s| s.kernel.uses_flow()) {
            return Err(Error::param(
                "flow",
                "has no effect: no sampler's kernel uses a flow (`flow` or `flowhmc`); remove \
                 the [flow] table or add a flow sampler",
            ));
        }
        if let Some(spec) = self.train_spec(Path::new("model.json")) {
            spec.validate().map_err(|e| training_key(e, "flow", &[]))?;
        }
        if let Some(flow) = &self.flow
            && flow.model.is_some()
        {
            let set = [
                ("recipe", flow.recipe != RecipeSpec::default()),
                ("train", flow.train != TrainConfig::default()),
                ("anneal", flow.anneal.is_some()),
            ];
            refuse_beside_model(set.iter().filter(|(_, set)| *set).map(|(key, _)| *key))?;
        }
        self.analysis.validate()?;
        self.fit_range()?;
        for (name, value) in &self.reference {
            if !OBSERVABLE_ORDER.contains(&name.as_str()) {
                return Err(Error::param(
                    format!("reference.{name}"),
                    format!(
                        "not a reported observable (one of {})",
                        OBSERVABLE_ORDER.join(", ")
                    ),
                ));
            }
            let (v, e) = value.value_and_error();
            if !(v.is_finite() && e.is_finite() && e >= 0.0) {
                return Err(Error::param(
                    format!("reference.{name}"),
                    "needs a finite value and a non-negative error",
                ));
            }
        }
        Ok(())
    }

    /// The correlated fit's range on this lattice.
    pub fn fit_range(&self) -> Result<(usize, usize)> {
        let extent = self.lattice.extents()[0];
        let (t_min, t_max) = match self.analysis.fit_range {
            Some([a, b]) => (a, b),
            None => ((extent / 4).max(1), extent / 2),
        };
        if t_min >= t_max || t_max > extent / 2 {
            return Err(Error::param(
                "analysis.fit_range",
                format!(
                    "need t_min < t_max ≤ L/2 = {} (Ĝ(t) = Ĝ(L − t): points beyond L/2 mirror \
                     those below and would be counted twice), got [{t_min}, {t_max}]",
                    extent / 2
                ),
            ));
        }
        Ok((t_min, t_max))
    }

    /// The sampling run of sampler `i`, with the flow model at `model`.
    pub fn sample_spec(&self, i: usize, model: &Path) -> SampleSpec {
        let s = &self.samplers[i];
        SampleSpec {
            lattice: self.lattice.clone(),
            action: self.action.clone(),
            kernel: s.kernel.clone(),
            n: s.n.unwrap_or(self.measure.n),
            therm: s.therm.unwrap_or(self.measure.therm),
            thin: s.thin.unwrap_or(self.measure.thin),
            seed: s
                .seed
                .unwrap_or(crate::run::derived_seed(self.seed, 1 + i as u64)),
            model: s.kernel.uses_flow().then(|| model.to_path_buf()),
            chains: s.chains.unwrap_or(self.measure.chains),
        }
    }

    /// The training run writing the model to `model`, when the study has a flow that a
    /// sampler uses.
    pub fn train_spec(&self, model: &Path) -> Option<TrainSpec> {
        let flow = self.flow.as_ref()?;
        if flow.model.is_some() || !self.samplers.iter().any(|s| s.kernel.uses_flow()) {
            return None;
        }
        Some(TrainSpec {
            lattice: self.lattice.clone(),
            action: self.action.clone(),
            recipe: flow.recipe.clone(),
            train: flow.train.clone(),
            anneal: flow.anneal,
            snf: None,
            init: None,
            out: model.to_path_buf(),
        })
    }
}

/// An error of a training run named by its runcard key: a recipe setting as
/// `{table}.recipe.KEY`, an annealing one as `{table}.anneal.KEY`, any other as
/// `{table}.train.KEY` (`table` empty for keys at the top), except the keys in `top`.
pub(crate) fn training_key(e: Error, table: &str, top: &[&str]) -> Error {
    match e {
        Error::InvalidParameter { name, reason } if !top.contains(&name.as_str()) => {
            let recipe = toml::Value::try_from(RecipeSpec::default()).ok();
            let key = if name.starts_with("anneal.") {
                name
            } else if recipe.as_ref().and_then(|r| r.get(&name)).is_some() {
                format!("recipe.{name}")
            } else {
                format!("train.{name}")
            };
            let key = match table {
                "" => key,
                table => format!("{table}.{key}"),
            };
            Error::param(key, reason)
        }
        other => other,
    }
}

/// Refuses the first of the `[flow]` keys `given` that a flow adopted from `flow.model`
/// does not read (`recipe`, `train`, `anneal`: it is trained already), naming it.
fn refuse_beside_model<'a>(given: impl IntoIterator<Item = &'a str>) -> Result<()> {
    match given
        .into_iter()
        .find(|key| ["recipe", "train", "anneal"].contains(key))
    {
        Some(key) => Err(Error::param(
            format!("flow.{key}"),
            "has no effect: the flow is already trained (`flow.model`); leave out flow.recipe, \
             flow.train and flow.anneal",
        )),
        None => Ok(()),
    }
}

fn in_sampler(name: &str, e: Error) -> Error {
    match e {
        Error::InvalidParameter { name: key, reason } => Error::InvalidParameter {
            name: format!("sampler `{name}`: {key}"),
            reason,
        },
        other => other,
    }
}

/// A folder name for a sampler: letters and digits kept, runs of anything else become `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_letters_and_digits() {
        assert_eq!(slug("flow+local"), "flow-local");
        assert_eq!(slug("HMC (tuned) 2"), "hmc-tuned-2");
        assert_eq!(slug("+++"), "");
    }

    #[test]
    fn overrides_parse_values_as_toml_and_bare_words_as_strings() {
        let mut root = toml::Value::Table(toml::Table::new());
        for text in [
            "a.b=3",
            "a.c=[1, 2]",
            "d=hello",
            "e = \"x y\"",
            "a.f.g=true",
        ] {
            Override::parse(text).unwrap().apply(&mut root).unwrap();
        }
        assert_eq!(root["a"]["b"].as_integer(), Some(3));
        assert_eq!(root["a"]["c"].as_array().map(Vec::len), Some(2));
        assert_eq!(root["d"].as_str(), Some("hello"));
        assert_eq!(root["e"].as_str(), Some("x y"));
        assert_eq!(root["a"]["f"]["g"].as_bool(), Some(true));
        assert!(Override::parse("novalue").is_err());
        assert!(Override::parse("a..b=1").is_err());
        let e = Override::parse("a.b.c=1")
            .unwrap()
            .apply(&mut root)
            .unwrap_err();
        assert!(e.to_string().contains("not a table"), "{e}");
    }
}
