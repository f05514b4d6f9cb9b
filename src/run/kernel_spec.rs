//! The kernel of a run: a [`KernelSpec`] (a kernel expression and the settings of its
//! kernels, as a runcard or the command line gives them), its checks, its cost per step, and
//! how it is built into a `Box<dyn Proposal>` from the built-in kernels and a [`Registry`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::registry::{KERNEL_NAMES, KernelContext, Registry, TargetAction, Typed};
use super::train::SnfSpec;
use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowModel};
use crate::kernel::{
    DrawScratch, EnsembleKernel, FlowHmc, FlowLeaf, FlowProposal, Hmc, Integrator, KernelExpr,
    MoveLabel, NoneqEvolution, NoneqProposal, NoneqProtocol, NoneqUpdate, PerChain, Proposal,
    SweepOrder,
};

/// Parses a kernel expression and checks that it names only built-in kernels
/// ([`KERNEL_NAMES`]).
pub fn parse_kernel(text: &str) -> Result<KernelExpr> {
    let expr = KernelExpr::parse(text)?;
    check_kernel_names(&expr, Registry::builtin())?;
    Ok(expr)
}

/// Refuses a kernel expression that names a kernel neither built in nor in `registry`.
pub(crate) fn check_kernel_names(expr: &KernelExpr, registry: &Registry) -> Result<()> {
    match expr.names().into_iter().find(|n| !registry.has_kernel(n)) {
        Some(unknown) => {
            let mut known: Vec<&str> = KERNEL_NAMES.to_vec();
            known.extend(registry.kernel_names());
            Err(Error::param(
                "kernel",
                format!(
                    "unknown kernel `{unknown}` in `{}`: the kernels are {}",
                    expr.abbreviated(),
                    known.join(", ")
                ),
            ))
        }
        None => Ok(()),
    }
}

/// The kernel: an expression over `local`, `hmc`, `flow`, `flowhmc`, `noneq` and the kernels of the run's
/// [`Registry`] (see [`KernelExpr`]), and the settings of those kernels. Every occurrence of
/// a name is a kernel of its own with these settings (a local step size adapts separately
/// for each).
///
/// Serialised (a runcard as used, a report) it holds `kind`, the settings its kernels read
/// and `settings`: a setting no kernel of the expression reads has no effect, and a runcard
/// that gives one is refused.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelSpec {
    /// The kernel expression, e.g. `hmc`, `flow+local*2+hmc` or `mix(0.3: flow, 0.7: hmc)`.
    pub kind: KernelExpr,
    /// Initial local step size δ (tuned during thermalisation).
    pub step_size: f64,
    /// The order of the local sweeps (`sequential`, `random` or `checkerboard`).
    pub sweep_order: SweepOrder,
    /// HMC trajectory length τ.
    pub tau: f64,
    /// HMC molecular-dynamics steps per trajectory.
    pub md_steps: usize,
    /// HMC and flow-HMC integrator.
    pub integrator: Integrator,
    /// Keep the HMC and flow-HMC trajectory lengths fixed instead of randomising them (not
    /// recommended).
    pub fixed_length: bool,
    /// Flow-HMC trajectory length τ in the latent space.
    pub flowhmc_tau: f64,
    /// Flow-HMC molecular-dynamics steps per trajectory.
    pub flowhmc_md_steps: usize,
    /// Non-equilibrium protocol steps (intermediate actions, the last the target). Each of
    /// the three protocol settings (`noneq_steps`, `noneq_update`, `noneq_step_size`) left
    /// unset takes its value from the protocol of a run's flow trained as a stochastic
    /// normalizing flow, else its default ([`DEFAULT_NONEQ_PROTOCOL`]).
    pub noneq_steps: Option<usize>,
    /// The update at each protocol step: a local sweep or an HMC trajectory (of `tau` in
    /// `md_steps` leapfrog steps).
    pub noneq_update: Option<NoneqUpdateKind>,
    /// Proposal half-width of the protocol's local sweeps.
    pub noneq_step_size: Option<f64>,
    /// Mass² of the free field the protocol starts from (Gaussian start).
    pub noneq_start_m0sq: f64,
    /// Where the protocol starts: the run's flow (S₀ the action the model records it was
    /// trained for) or the Gaussian; `None`: the flow when the run has a model, else the
    /// Gaussian.
    pub noneq_start: Option<NoneqStart>,
    /// Flow proposals generated per batch.
    pub flow_batch: usize,
    /// Settings of registered kernels, by kernel name (`[kernel.settings.NAME]`), handed
    /// to their constructors.
    pub settings: BTreeMap<String, serde_json::Value>,
}

impl Serialize for KernelSpec {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.serialize_keeping(serializer, |key| self.reads(key))
    }
}

/// Every setting of a kernel spec, read or not (to compare them with the defaults).
struct Every<'a>(&'a KernelSpec);

impl Serialize for Every<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize_keeping(serializer, |_| true)
    }
}

impl KernelSpec {
    /// Serialises `kind`, the settings `keep` selects, and `settings` unless empty.
    fn serialize_keeping<S: serde::Serializer>(
        &self,
        serializer: S,
        keep: impl Fn(&str) -> bool,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", &self.kind)?;
        macro_rules! read_settings {
            ($($key:ident),*) => {$(
                if keep(stringify!($key)) {
                    map.serialize_entry(stringify!($key), &self.$key)?;
                }
            )*};
        }
        read_settings!(
            step_size,
            sweep_order,
            tau,
            md_steps,
            integrator,
            fixed_length,
            flowhmc_tau,
            flowhmc_md_steps,
            noneq_start_m0sq,
            flow_batch
        );
        // Settings that may be left unset: written when set.
        macro_rules! set_settings {
            ($($key:ident),*) => {$(
                if let Some(value) = self.$key.as_ref().filter(|_| keep(stringify!($key))) {
                    map.serialize_entry(stringify!($key), value)?;
                }
            )*};
        }
        set_settings!(noneq_steps, noneq_update, noneq_step_size, noneq_start);
        if !self.settings.is_empty() {
            map.serialize_entry("settings", &self.settings)?;
        }
        map.end()
    }
}

/// The `noneq` protocol's settings when unset (and the run's flow brings none): 10 steps,
/// each a local sweep of proposal half-width 0.5.
pub const DEFAULT_NONEQ_PROTOCOL: (usize, NoneqUpdateKind, f64) = (10, NoneqUpdateKind::Local, 0.5);

impl Default for KernelSpec {
    fn default() -> Self {
        KernelSpec {
            kind: KernelExpr::Kernel("hmc".to_string()),
            step_size: 1.0,
            sweep_order: SweepOrder::Sequential,
            tau: 1.0,
            md_steps: 10,
            integrator: Integrator::Leapfrog,
            fixed_length: false,
            flowhmc_tau: 1.0,
            flowhmc_md_steps: 10,
            noneq_steps: None,
            noneq_update: None,
            noneq_step_size: None,
            noneq_start_m0sq: 1.0,
            noneq_start: None,
            flow_batch: 1000,
            settings: BTreeMap::new(),
        }
    }
}

/// The settings of the built-in kernels: each key of [`KernelSpec`] with the kernels that
/// read it.
pub const KERNEL_SETTINGS: [(&str, &[&str]); 14] = [
    ("step_size", &["local"]),
    ("sweep_order", &["local"]),
    ("tau", &["hmc", "noneq"]),
    ("md_steps", &["hmc", "noneq"]),
    ("integrator", &["hmc", "flowhmc"]),
    ("fixed_length", &["hmc", "flowhmc"]),
    ("flowhmc_tau", &["flowhmc"]),
    ("flowhmc_md_steps", &["flowhmc"]),
    ("flow_batch", &["flow"]),
    ("noneq_steps", &["noneq"]),
    ("noneq_update", &["noneq"]),
    ("noneq_step_size", &["noneq"]),
    ("noneq_start_m0sq", &["noneq"]),
    ("noneq_start", &["noneq"]),
];

/// The start distribution of a non-equilibrium protocol, as runcards and the command line
/// name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoneqStart {
    /// The run's trained flow.
    Flow,
    /// The free field of mass² `noneq_start_m0sq`.
    Gaussian,
}

/// The update of a non-equilibrium protocol step, as runcards and the command line name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoneqUpdateKind {
    /// One local Metropolis sweep.
    #[default]
    Local,
    /// One HMC trajectory.
    Hmc,
}

impl KernelSpec {
    /// The built-in kernels that read the setting `key` (see [`KERNEL_SETTINGS`]), if it is
    /// one.
    pub fn kernels_of_setting(key: &str) -> Option<&'static [&'static str]> {
        KERNEL_SETTINGS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, kernels)| *kernels)
    }

    /// Whether a kernel of the expression reads the setting `key` of [`KERNEL_SETTINGS`]
    /// (false for any other key).
    pub fn reads(&self, key: &str) -> bool {
        Self::kernels_of_setting(key)
            .is_some_and(|kernels| kernels.iter().any(|k| self.kind.contains(k)))
    }

    /// True when the expression needs a trained flow (`flow` or `flowhmc`).
    pub fn uses_flow(&self) -> bool {
        self.kind.contains("flow") || self.kind.contains("flowhmc")
    }

    /// True when the expression's `noneq` starts from the run's flow: `noneq_start` is
    /// `flow`, or unset and the run has a model.
    pub fn noneq_from_flow(&self, has_model: bool) -> bool {
        self.kind.contains("noneq")
            && match self.noneq_start {
                Some(NoneqStart::Flow) => true,
                Some(NoneqStart::Gaussian) => false,
                None => has_model,
            }
    }

    /// Checks the settings of the kernels the expression uses: `tau` positive and finite
    /// and `md_steps` between 1 and 2³² − 1 for `hmc` (`flowhmc_tau`, `flowhmc_md_steps`
    /// likewise for `flowhmc`), `step_size` positive and finite for `local`, `flow_batch` at
    /// least 1 for `flow`; a setting changed from its default for kernels the expression
    /// does not use is refused (it would have no effect).
    pub fn validate_settings(&self) -> Result<()> {
        self.refuse_unused_settings()?;
        if self.kind.contains("flowhmc") {
            check_trajectory(
                ("flowhmc_tau", self.flowhmc_tau),
                ("flowhmc_md_steps", self.flowhmc_md_steps),
            )?;
        }
        if self.kind.contains("hmc") {
            check_trajectory(("tau", self.tau), ("md_steps", self.md_steps))?;
        }
        if self.kind.contains("noneq") {
            self.noneq_protocol().validate()?;
        }
        if self.kind.contains("local") && !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(Error::param(
                "step_size",
                format!("must be positive and finite, got {}", self.step_size),
            ));
        }
        if self.kind.contains("flow") && self.flow_batch == 0 {
            return Err(Error::param("flow_batch", "must be at least 1"));
        }
        if let Some(name) = self
            .settings
            .keys()
            .find(|n| KERNEL_NAMES.contains(&n.as_str()))
        {
            return Err(Error::param(
                format!("settings.{name}"),
                format!(
                    "the built-in kernel `{name}` takes its settings as keys of the kernel table \
                     ({})",
                    KERNEL_SETTINGS.map(|(key, _)| key).join(", ")
                ),
            ));
        }
        if let Some(name) = self.settings.keys().find(|n| !self.kind.contains(n)) {
            return Err(Error::param(
                format!("settings.{name}"),
                format!(
                    "has no effect: the kernel `{}` does not use `{name}`",
                    self.kind
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a setting of [`KERNEL_SETTINGS`] changed from its default when none of the
    /// kernels that read it is in the expression (e.g. `step_size` with `kind = "hmc"`); a
    /// runcard's kernel table is checked by the keys it gives, whatever their values
    /// ([`KernelSpec::refuse_unread_settings`]).
    fn refuse_unused_settings(&self) -> Result<()> {
        let (Ok(serde_json::Value::Object(given)), Ok(serde_json::Value::Object(default))) = (
            serde_json::to_value(Every(self)),
            serde_json::to_value(Every(&KernelSpec::default())),
        ) else {
            return Ok(());
        };
        self.refuse_unread_settings(
            KERNEL_SETTINGS
                .iter()
                .map(|(key, _)| *key)
                .filter(|key| given.get(*key) != default.get(*key)),
        )
    }

    /// Refuses the first of the keys `given` (those of a runcard's kernel table) that is a
    /// setting of [`KERNEL_SETTINGS`] no kernel of the expression reads: written, it would
    /// have no effect whatever its value. Other keys are left alone.
    pub fn refuse_unread_settings<'a>(
        &self,
        given: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        for key in given {
            if let Some(kernels) = Self::kernels_of_setting(key)
                && !self.reads(key)
            {
                return Err(Error::param(
                    key,
                    format!(
                        "has no effect: the kernel `{}` has no `{}`",
                        self.kind.abbreviated(),
                        kernels.join("` or `")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Move records and site updates of one step of the expression on `volume` sites (a
    /// mixture counted as its most expensive part, an HMC trajectory at its longest).
    pub(crate) fn step_cost(&self, volume: usize) -> StepCost {
        let volume = volume as u128;
        let md_steps = self.md_steps as u128;
        let longest = |md_steps: u128| {
            if self.fixed_length {
                md_steps
            } else {
                (3 * md_steps / 2).max(1)
            }
        };
        let hmc_steps = longest(md_steps);
        let flowhmc_steps = longest(self.flowhmc_md_steps as u128);
        // A forward evolution, and a backward one when another kernel moved the state.
        let protocol = self.noneq_protocol();
        let noneq_updates = 2
            * (protocol.steps as u128)
            * match protocol.update {
                NoneqUpdate::Local { .. } => 1,
                NoneqUpdate::Hmc { .. } => md_steps.saturating_add(1),
            };
        fn walk(expr: &KernelExpr, sites: &dyn Fn(&str) -> u128) -> StepCost {
            match expr {
                KernelExpr::Kernel(name) => StepCost {
                    moves: 1,
                    site_updates: sites(name),
                },
                KernelExpr::Cycle(parts) => parts.iter().fold(
                    StepCost {
                        moves: 0,
                        site_updates: 0,
                    },
                    |acc, part| {
                        let c = walk(part, sites);
                        StepCost {
                            moves: acc.moves.saturating_add(c.moves),
                            site_updates: acc.site_updates.saturating_add(c.site_updates),
                        }
                    },
                ),
                KernelExpr::Repeat(inner, times) => {
                    let c = walk(inner, sites);
                    StepCost {
                        moves: c.moves.saturating_mul(*times as u128),
                        site_updates: c.site_updates.saturating_mul(*times as u128),
                    }
                }
                KernelExpr::Mixture(parts) => parts.iter().fold(
                    StepCost {
                        moves: 0,
                        site_updates: 0,
                    },
                    |acc, (_, part)| {
                        let c = walk(part, sites);
                        StepCost {
                            moves: acc.moves.max(c.moves),
                            site_updates: acc.site_updates.max(c.site_updates),
                        }
                    },
                ),
            }
        }
        walk(&self.kind, &|name| match name {
            "hmc" => volume.saturating_mul(hmc_steps.saturating_add(1)),
            "flowhmc" => volume.saturating_mul(flowhmc_steps.saturating_add(1)),
            "noneq" => volume.saturating_mul(noneq_updates),
            _ => volume,
        })
    }

    /// The protocol of the `noneq` kernel: the spec's settings, those unset at their
    /// defaults ([`DEFAULT_NONEQ_PROTOCOL`]).
    pub fn noneq_protocol(&self) -> NoneqProtocol {
        let (steps, update, step_size) = DEFAULT_NONEQ_PROTOCOL;
        self.noneq_protocol_over(NoneqProtocol {
            steps,
            update: match update {
                NoneqUpdateKind::Local => NoneqUpdate::Local { step_size },
                NoneqUpdateKind::Hmc => NoneqUpdate::Hmc {
                    tau: self.tau,
                    md_steps: self.md_steps,
                },
            },
        })
    }

    /// The protocol of the `noneq` kernel with the settings the spec leaves unset taken
    /// from `base` (an HMC update chosen by the spec runs `tau` in `md_steps`; a local one
    /// without `noneq_step_size` takes the base's step size, or the default when the base
    /// runs HMC).
    pub fn noneq_protocol_over(&self, base: NoneqProtocol) -> NoneqProtocol {
        let base_step_size = match base.update {
            NoneqUpdate::Local { step_size } => step_size,
            NoneqUpdate::Hmc { .. } => DEFAULT_NONEQ_PROTOCOL.2,
        };
        let local = NoneqUpdate::Local {
            step_size: self.noneq_step_size.unwrap_or(base_step_size),
        };
        NoneqProtocol {
            steps: self.noneq_steps.unwrap_or(base.steps),
            update: match (self.noneq_update, base.update) {
                (None, NoneqUpdate::Local { .. }) | (Some(NoneqUpdateKind::Local), _) => local,
                (None, hmc @ NoneqUpdate::Hmc { .. }) => hmc,
                (Some(NoneqUpdateKind::Hmc), _) => NoneqUpdate::Hmc {
                    tau: self.tau,
                    md_steps: self.md_steps,
                },
            },
        }
    }

    /// Builds the expression's kernel for `action` with the built-in kernels; `model` is the
    /// flow behind every `flow` and `flowhmc` in it (an error when the expression names one
    /// and `model` is `None`).
    pub fn build<A: Action + 'static>(
        &self,
        action: &Arc<A>,
        model: Option<&Arc<FlowModel>>,
    ) -> Result<Box<dyn Proposal>> {
        self.build_with(&Typed(action.clone()), model, Registry::builtin())
    }

    /// Builds the expression's kernel for `target`: the built-in kernels from this spec's
    /// settings, every other name by its constructor in `registry` (with
    /// `settings[name]`); `model` is the flow behind every `flow`.
    pub fn build_with(
        &self,
        target: &dyn TargetAction,
        model: Option<&Arc<FlowModel>>,
        registry: &Registry,
    ) -> Result<Box<dyn Proposal>> {
        check_kernel_names(&self.kind, registry)?;
        self.kind.build(&mut |name, label| {
            self.build_leaf(name, label, target, model, registry, &DrawScratch::new())
        })
    }

    /// One kernel of the expression: `name` with move label `label`; a kernel that draws
    /// batches from the flow (`flow`, a flow-started `noneq`) runs their passes in `draws`.
    fn build_leaf(
        &self,
        name: &str,
        label: MoveLabel,
        target: &dyn TargetAction,
        model: Option<&Arc<FlowModel>>,
        registry: &Registry,
        draws: &DrawScratch,
    ) -> Result<Box<dyn Proposal>> {
        Ok(match name {
            "local" => target.local_metropolis(self.step_size, self.sweep_order, label)?,
            "hmc" => Box::new(
                Hmc::new(target.action(), self.tau, self.md_steps)?
                    .with_integrator(self.integrator)
                    .with_randomised_length(!self.fixed_length)
                    .with_label(label),
            ),
            "flow" => Box::new(
                FlowProposal::new(needs_model(model, name)?, target.action(), self.flow_batch)?
                    .share_draw_scratch(draws)
                    .with_label(label),
            ),
            "flowhmc" => Box::new(
                FlowHmc::new(
                    needs_model(model, name)?,
                    target.action(),
                    self.flowhmc_tau,
                    self.flowhmc_md_steps,
                )?
                .with_integrator(self.integrator)
                .with_randomised_length(!self.fixed_length)
                .with_label(label),
            ),
            "noneq" if self.noneq_from_flow(model.is_some()) => {
                let model = needs_model(model, name)?;
                let (start, protocol, after) = self.flow_start(&model, target, registry)?;
                let evolution = if after.is_empty() {
                    let flow: Arc<dyn Flow> = model;
                    NoneqEvolution::from_flow(
                        target.action(),
                        flow,
                        start,
                        protocol,
                        self.flow_batch,
                    )?
                } else {
                    NoneqEvolution::from_interleaved(
                        target.action(),
                        model.interleave(after.len())?,
                        start,
                        protocol,
                        &after,
                        self.flow_batch,
                    )?
                };
                Box::new(NoneqProposal::new(evolution.share_draw_scratch(draws)).with_label(label))
            }
            "noneq" => Box::new(
                NoneqProposal::new(NoneqEvolution::new(
                    target.action(),
                    self.noneq_start_m0sq,
                    self.noneq_protocol(),
                )?)
                .with_label(label),
            ),
            other => {
                let settings = self.settings.get(other).unwrap_or(&serde_json::Value::Null);
                let context = KernelContext::new(other, label, target, model);
                registry
                    .kernel(other, settings, &context)
                    .ok_or_else(|| Error::param("kernel", format!("unknown kernel `{other}`")))??
            }
        })
    }
}

impl KernelSpec {
    /// The start action S₀, the protocol and the steps after which the model's last layer
    /// groups sit, of a `noneq` kernel starting from `model`: a model trained as a
    /// stochastic normalizing flow gives its start action, protocol and placement of
    /// flow layers between the steps (the protocol's settings the spec gives replace the
    /// model's, as exact; the steps must stay the model's number when flow layers sit
    /// between them); any other model the action it records it was
    /// trained for (the target when it records none), the spec's protocol, and no layers
    /// between the steps.
    fn flow_start(
        &self,
        model: &FlowModel,
        target: &dyn TargetAction,
        registry: &Registry,
    ) -> Result<(Arc<dyn crate::action::Action>, NoneqProtocol, Vec<usize>)> {
        let lattice = target.action().lattice().clone();
        if let Some(snf) = SnfSpec::recorded(model)? {
            let start = registry.action(&snf.start, &lattice)?.action();
            let protocol = self.noneq_protocol_over(snf.protocol());
            let after = snf.layers_after();
            if !after.is_empty() && protocol.steps != snf.steps {
                return Err(Error::param(
                    "noneq_steps",
                    format!(
                        "the model places flow layers after sweeps {after:?} of its protocol \
                         of {} sweeps; a protocol of {} steps does not fit them (leave \
                         noneq_steps unset or give the model's {})",
                        snf.steps, protocol.steps, snf.steps
                    ),
                ));
            }
            return Ok((start, protocol, after));
        }
        // A model that records no action (one built in code) is taken to be trained for the
        // target: S₀ = S, exact like any other S₀.
        let Some(recorded) = model.metadata().get("action") else {
            return Ok((target.action(), self.noneq_protocol(), Vec::new()));
        };
        let spec: super::ActionSpec = serde_json::from_value(recorded.clone())
            .map_err(|e| Error::format("action in the model file", e.to_string()))?;
        let start = registry.action(&spec, &lattice)?.action();
        Ok((start, self.noneq_protocol(), Vec::new()))
    }
}

/// The run's flow, which the kernel `name` needs: an error naming `model` when there is
/// none.
fn needs_model(model: Option<&Arc<FlowModel>>, name: &str) -> Result<Arc<FlowModel>> {
    model.cloned().ok_or_else(|| {
        Error::param(
            "model",
            format!("the `{name}` kernel needs a trained model"),
        )
    })
}

/// Checks an HMC trajectory's settings: length positive and finite, steps between 1 and
/// 2³² − 1; the errors name the keys.
fn check_trajectory((tau_key, tau): (&str, f64), (steps_key, steps): (&str, usize)) -> Result<()> {
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::param(
            tau_key,
            format!("must be positive and finite, got {tau}"),
        ));
    }
    if steps == 0 || steps > u32::MAX as usize {
        return Err(Error::param(
            steps_key,
            format!("must be between 1 and {}, got {steps}", u32::MAX),
        ));
    }
    Ok(())
}

/// A list of kernels, each an expression or a table of settings (see
/// [`kernel_table_or_expression`]).
pub(crate) fn kernel_list<'de, D>(deserializer: D) -> std::result::Result<Vec<KernelSpec>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Entry(#[serde(deserialize_with = "kernel_table_or_expression")] KernelSpec);
    Ok(Vec::<Entry>::deserialize(deserializer)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

impl KernelSpec {
    /// Builds the expression's kernel for an ensemble of `chains` chains advanced in
    /// lockstep (see [`crate::kernel::Ensemble`]): every `flow` occurrence becomes one
    /// [`FlowLeaf`] whose chains' log-densities are evaluated in one batched pass, every
    /// other kernel one kernel per chain, built as [`KernelSpec::build_with`] builds it.
    pub fn build_ensemble(
        &self,
        target: &dyn TargetAction,
        model: Option<&Arc<FlowModel>>,
        registry: &Registry,
        chains: usize,
    ) -> Result<Box<dyn EnsembleKernel>> {
        if chains == 0 {
            return Err(Error::param("chains", "must be at least 1"));
        }
        check_kernel_names(&self.kind, registry)?;
        let action = target.action();
        self.kind.build_ensemble(&mut |name, label| {
            // The chains of one occurrence draw their batches one after the other: one set
            // of pass buffers serves them all.
            let draws = DrawScratch::new();
            if name == "flow" {
                let model = needs_model(model, name)?;
                let proposals = (0..chains)
                    .map(|_| {
                        Ok(
                            FlowProposal::new(model.clone(), action.clone(), self.flow_batch)?
                                .share_draw_scratch(&draws)
                                .with_label(label.clone()),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                return Ok(
                    Box::new(FlowLeaf::new(model.clone(), proposals)?) as Box<dyn EnsembleKernel>
                );
            }
            let kernels = (0..chains)
                .map(|_| self.build_leaf(name, label.clone(), target, model, registry, &draws))
                .collect::<Result<Vec<_>>>()?;
            Ok(Box::new(PerChain { kernels }) as Box<dyn EnsembleKernel>)
        })
    }
}

/// Reads the `kernel` entry of a runcard: either a table of [`KernelSpec`] fields or, as a
/// shorthand, just the expression (`kernel = "flow+local"`, default settings).
pub(crate) fn kernel_table_or_expression<'de, D>(
    deserializer: D,
) -> std::result::Result<KernelSpec, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = KernelSpec;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a kernel expression or a table of kernel settings")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<KernelSpec, E> {
            Ok(KernelSpec {
                kind: KernelExpr::parse(text).map_err(E::custom)?,
                ..KernelSpec::default()
            })
        }

        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            map: M,
        ) -> std::result::Result<KernelSpec, M::Error> {
            KernelSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// What one step of a kernel expression costs: move records and site updates.
pub(crate) struct StepCost {
    pub(crate) moves: u128,
    pub(crate) site_updates: u128,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings a spec gives replace the base protocol's, whatever their values; those
    /// it leaves unset keep the base's.
    #[test]
    fn given_protocol_settings_replace_the_base() {
        let hmc_base = NoneqProtocol {
            steps: 4,
            update: NoneqUpdate::Hmc {
                tau: 2.0,
                md_steps: 7,
            },
        };
        let local_base = NoneqProtocol {
            steps: 3,
            update: NoneqUpdate::Local { step_size: 0.3 },
        };
        let unset = KernelSpec::default();
        assert_eq!(unset.noneq_protocol_over(hmc_base), hmc_base);
        assert_eq!(unset.noneq_protocol_over(local_base), local_base);
        let (steps, _, step_size) = DEFAULT_NONEQ_PROTOCOL;
        // Each given at its default value: still given.
        let given_steps = KernelSpec {
            noneq_steps: Some(steps),
            ..KernelSpec::default()
        };
        assert_eq!(given_steps.noneq_protocol_over(local_base).steps, steps);
        let given_step_size = KernelSpec {
            noneq_step_size: Some(step_size),
            ..KernelSpec::default()
        };
        assert_eq!(
            given_step_size.noneq_protocol_over(local_base),
            NoneqProtocol {
                steps: 3,
                update: NoneqUpdate::Local { step_size }
            }
        );
        let given_local = KernelSpec {
            noneq_update: Some(NoneqUpdateKind::Local),
            ..KernelSpec::default()
        };
        assert_eq!(
            given_local.noneq_protocol_over(hmc_base),
            NoneqProtocol {
                steps: 4,
                update: NoneqUpdate::Local { step_size }
            }
        );
        let given_hmc = KernelSpec {
            noneq_update: Some(NoneqUpdateKind::Hmc),
            ..KernelSpec::default()
        };
        assert_eq!(
            given_hmc.noneq_protocol_over(local_base).update,
            NoneqUpdate::Hmc {
                tau: given_hmc.tau,
                md_steps: given_hmc.md_steps
            }
        );
        // Without a base, the defaults.
        assert_eq!(
            unset.noneq_protocol(),
            NoneqProtocol {
                steps,
                update: NoneqUpdate::Local { step_size }
            }
        );
    }
}
