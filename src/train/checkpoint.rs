//! Training checkpoints: everything needed to continue a run bit for bit (model with its
//! configuration and lattice, optimiser moments, generator state, counters, training
//! configuration), stored as versioned JSON and written atomically.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowConfig, FlowModel, LayerRegistry};
use crate::io::{read_json, write_json};
use crate::lattice::Lattice;
use crate::rng::SimRng;
use crate::train::optim::Optimizer;
use crate::train::trainer::{TrainConfig, Trainer};

/// Version of the checkpoint format written by [`Trainer::save_checkpoint`].
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// The on-disk content of a checkpoint.
#[derive(Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    format_version: u32,
    flow: FlowConfig,
    lattice: Lattice,
    params: Vec<f32>,
    metadata: BTreeMap<String, serde_json::Value>,
    optimizer: Optimizer,
    rng: SimRng,
    iteration: usize,
    configs_seen: u64,
    seconds: f64,
    last_loss: Option<f64>,
    config: TrainConfig,
}

impl Checkpoint {
    /// The state of `trainer`.
    pub(crate) fn capture<A: Action>(trainer: &Trainer<A>) -> Self {
        let model = &trainer.model;
        Checkpoint {
            format_version: CHECKPOINT_FORMAT_VERSION,
            flow: model.config().clone(),
            lattice: model.lattice().clone(),
            params: model.params().to_vec(),
            metadata: model.metadata().clone(),
            optimizer: trainer.optimizer.clone(),
            rng: trainer.rng.clone(),
            iteration: trainer.iteration,
            configs_seen: trainer.configs_seen,
            seconds: trainer.seconds,
            last_loss: trainer.last_loss.is_finite().then_some(trainer.last_loss),
            config: trainer.config.clone(),
        }
    }

    /// Writes the checkpoint atomically.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// Reads a checkpoint, checking its format version.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let checkpoint: Checkpoint = read_json(path, "checkpoint")?;
        if checkpoint.format_version != CHECKPOINT_FORMAT_VERSION {
            return Err(Error::Incompatible(format!(
                "{} has checkpoint format version {}, this library reads version {}",
                path.display(),
                checkpoint.format_version,
                CHECKPOINT_FORMAT_VERSION
            )));
        }
        Ok(checkpoint)
    }

    /// Rebuilds the trainer, checking that the pieces fit each other and `action`; custom
    /// layers of the flow are built by `registry`.
    pub(crate) fn into_trainer<A: Action + 'static>(
        self,
        action: Arc<A>,
        registry: &LayerRegistry,
    ) -> Result<Trainer<A>> {
        self.config.validate()?;
        if self.iteration > self.config.iterations {
            return Err(Error::format(
                "checkpoint",
                format!(
                    "iteration {} is beyond the run's {} iterations",
                    self.iteration, self.config.iterations
                ),
            ));
        }
        let mut model = FlowModel::new_with(&self.flow, &self.lattice, 0, registry)?;
        if self.params.len() != model.n_params() {
            return Err(Error::Incompatible(format!(
                "checkpoint holds {} parameters, its flow on a {} lattice needs {}",
                self.params.len(),
                self.lattice,
                model.n_params()
            )));
        }
        if let Some(i) = self.params.iter().position(|p| !p.is_finite()) {
            return Err(Error::NonFinite(format!("checkpoint parameter {i}")));
        }
        if self.optimizer.kind() != self.config.optimizer {
            return Err(Error::Incompatible(
                "checkpoint optimiser state does not match its training configuration".into(),
            ));
        }
        model.params_mut().copy_from_slice(&self.params);
        *model.metadata_mut() = self.metadata;
        Trainer::assemble(
            model,
            action,
            self.config,
            self.optimizer,
            self.rng,
            self.iteration,
            self.configs_seen,
            self.seconds,
            self.last_loss.unwrap_or(f64::NAN),
        )
    }
}
