//! Whole runs described as data — from command-line flags or a TOML runcard — and executed:
//! sampling ([`sample`]: action, kernel, chain lengths and seed in; Γ-method estimates,
//! acceptance and cost out), flow training, and curricula of training stages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::action::{FreeField, Phi4};
use crate::error::{Error, Result};
use crate::lattice::Lattice;

mod curriculum;
mod kernel_spec;
mod recipe;
mod registry;
mod replicas;
mod report;
mod sample;
mod train;

pub use curriculum::{CurriculumOutcome, CurriculumReport, CurriculumSpec, StageSpec, curriculum};
pub use kernel_spec::{KERNEL_SETTINGS, KernelSpec, NoneqStart, NoneqUpdateKind, parse_kernel};
pub(crate) use kernel_spec::{kernel_list, kernel_table_or_expression};
pub use recipe::{
    DEFAULT_METHOD_CHECK_SAMPLES, DENSE_DEFAULT_UP_TO, RecipeKind, RecipeSpec, default_levels,
    default_method, dense_method, reference_budget, scalable_method,
};
pub use registry::{KERNEL_NAMES, KernelContext, Registry, TargetAction, Typed};
pub use replicas::{ReplicaChain, combine_replicas, replica_seed, sample_replicas};
pub use report::{Estimate, REPORTED_OBSERVABLES, SampleReport, report_from};
pub use sample::{SampleData, SampleSpec, sample, sample_data, sample_recycled, sample_with};
pub use train::{
    AnnealSpec, SnfSpec, TRAIN_LOG_HEADER, TrainControl, TrainOutcome, TrainReport, TrainSpec,
    checkpoint_spec, init_from, model_target, resume, train, trained_model_report,
};

/// The largest seed a runcard holds, 2⁶³ − 1 (TOML integers are signed 64-bit); the
/// command line's `--seed` flags take 0 to this.
pub const MAX_SEED: u64 = i64::MAX as u64;

/// Seed number `k` derived from `seed` (a study's sampler i has k = 1 + i): `seed + k`,
/// wrapped to stay within 0 to [`MAX_SEED`] so that it can be written into a runcard.
pub fn derived_seed(seed: u64, k: u64) -> u64 {
    seed.wrapping_add(k) & MAX_SEED
}

/// The action to sample, in the convention the user chose (observables are reported in it),
/// or a user's action registered in a [`Registry`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ActionSpec {
    /// Hopping form (docs/actions.md#hopping-form).
    Phi4 {
        /// Hopping coupling β.
        beta: f64,
        /// Quartic coupling λ.
        lambda: f64,
    },
    /// Standard form (docs/actions.md#standard-form).
    Phi4Standard {
        /// Bare mass squared m0².
        m0sq: f64,
        /// Bare quartic coupling g0.
        g0: f64,
    },
    /// Quartic form of the flow literature (docs/actions.md#quartic-form).
    Phi4Quartic {
        /// m² (negative in the broken/critical region).
        m2: f64,
        /// Quartic coupling λ.
        lambda: f64,
    },
    /// Free field of mass m0 (docs/actions.md#free-field), with exact reference values.
    Free {
        /// The mass m0 > 0.
        mass: f64,
    },
    /// A user's action, built by the constructor registered under `name` in the run's
    /// [`Registry`] from `config` (runcard: `[action] form = "custom"`, `name = "..."`,
    /// `config = { ... }`).
    Custom {
        /// The name it is registered under.
        name: String,
        /// Its configuration, handed to the constructor.
        #[serde(default)]
        config: serde_json::Value,
    },
}

impl ActionSpec {
    /// Builds a built-in action on `lattice`; a custom action is built by a [`Registry`]
    /// ([`Registry::action`]) and is an error here.
    pub fn build(&self, lattice: &Lattice) -> Result<Phi4> {
        let l = lattice.clone();
        match *self {
            ActionSpec::Phi4 { beta, lambda } => Phi4::hopping(l, beta, lambda),
            ActionSpec::Phi4Standard { m0sq, g0 } => Phi4::standard(l, m0sq, g0),
            ActionSpec::Phi4Quartic { m2, lambda } => Phi4::quartic(l, m2, lambda),
            ActionSpec::Free { mass } => Ok(self.free_field(lattice, mass)?.as_phi4().clone()),
            ActionSpec::Custom { ref name, .. } => Err(Error::param(
                "action",
                format!("the custom action `{name}` is built by the registry it is registered in"),
            )),
        }
    }

    /// Whether the action is symmetric under φ → −φ: every built-in form (no odd terms);
    /// a custom action is not assumed to be.
    pub fn is_z2_symmetric(&self) -> bool {
        !matches!(self, ActionSpec::Custom { .. })
    }

    /// A short description: the form and its couplings, or the custom action's name and
    /// configuration.
    pub fn describe(&self) -> String {
        match self {
            ActionSpec::Phi4 { beta, lambda } => {
                format!("φ⁴ (hopping form) β = {beta}, λ = {lambda}")
            }
            ActionSpec::Phi4Standard { m0sq, g0 } => {
                format!("φ⁴ (standard form) m0² = {m0sq}, g0 = {g0}")
            }
            ActionSpec::Phi4Quartic { m2, lambda } => {
                format!("φ⁴ (quartic form) m² = {m2}, λ = {lambda}")
            }
            ActionSpec::Free { mass } => format!("free field, m0 = {mass}"),
            ActionSpec::Custom { name, config } => {
                if config.is_null() {
                    format!("{name} (custom)")
                } else {
                    format!("{name} (custom) {config}")
                }
            }
        }
    }

    fn free_field(&self, lattice: &Lattice, mass: f64) -> Result<FreeField> {
        if !(mass.is_finite() && mass > 0.0) {
            return Err(Error::param(
                "mass",
                format!("must be positive, got {mass}"),
            ));
        }
        FreeField::new(lattice.clone(), mass * mass)
    }

    /// Exact values of the reported observables where they are known (the free field).
    pub fn exact_values(&self, lattice: &Lattice) -> Result<Option<BTreeMap<String, f64>>> {
        let ActionSpec::Free { mass } = *self else {
            return Ok(None);
        };
        let free = self.free_field(lattice, mass)?;
        let g = free.propagator();
        let energy: f64 = (0..lattice.dim()).map(|mu| g[lattice.fwd(0, mu)]).sum();
        let mut exact = BTreeMap::new();
        exact.insert("chi".to_string(), free.susceptibility());
        exact.insert("phi2".to_string(), g[0]);
        exact.insert("energy".to_string(), energy);
        exact.insert(
            "action_density".to_string(),
            free.mean_action() / lattice.volume() as f64,
        );
        Ok(Some(exact))
    }
}
