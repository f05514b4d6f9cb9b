//! Whole runs described as data — from command-line flags or a TOML runcard — and executed:
//! sampling ([`sample`]: action, kernel, chain lengths and seed in; Γ-method estimates,
//! acceptance and cost out), flow training, and curricula of training stages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::action::{FreeField, Phi4};
use crate::error::{Error, Result};
use crate::lattice::Lattice;

mod curriculum;
mod sample;
mod train;

pub use curriculum::{CurriculumOutcome, CurriculumReport, CurriculumSpec, StageSpec, curriculum};
pub use sample::{
    Estimate, KERNEL_NAMES, KernelSpec, ReplicaChain, SampleData, SampleReport, SampleSpec,
    combine_replicas, parse_kernel, replica_seed, report_from, sample, sample_data,
    sample_replicas,
};
pub(crate) use sample::{kernel_list, kernel_table_or_expression};
pub use train::{
    AnnealSpec, DEFAULT_METHOD_CHECK_SAMPLES, DENSE_DEFAULT_UP_TO, RecipeKind, RecipeSpec,
    TRAIN_LOG_HEADER, TrainControl, TrainOutcome, TrainReport, TrainSpec, checkpoint_spec,
    default_method, dense_method, init_from, model_target, reference_budget, resume,
    scalable_method, train, trained_model_report,
};

/// Reads and parses a TOML runcard (errors name the file and the key).
fn read_runcard<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text)
        .map_err(|e| Error::format(format!("runcard {}", path.display()), e.to_string()))
}

/// The action to sample, in the convention the user chose (observables are reported in it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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
}

impl ActionSpec {
    /// Builds the action on `lattice`.
    pub fn build(&self, lattice: &Lattice) -> Result<Phi4> {
        let l = lattice.clone();
        match *self {
            ActionSpec::Phi4 { beta, lambda } => Phi4::hopping(l, beta, lambda),
            ActionSpec::Phi4Standard { m0sq, g0 } => Phi4::standard(l, m0sq, g0),
            ActionSpec::Phi4Quartic { m2, lambda } => Phi4::quartic(l, m2, lambda),
            ActionSpec::Free { mass } => Ok(self.free_field(lattice, mass)?.as_phi4().clone()),
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
