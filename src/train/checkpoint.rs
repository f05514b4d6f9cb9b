//! Training checkpoints: everything needed to continue a run bit for bit (the flow's
//! parameters, description, lattice and metadata, optimiser moments,
//! counters, training configuration), stored as versioned JSON and written atomically.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{FlowConfig, FlowModel, LayerRegistry, TrainableFlow};
use crate::io::{read_json, write_json};
use crate::lattice::Lattice;
use crate::train::TrainConfig;
use crate::train::optim::Optimizer;
use crate::train::trainer::{Counters, Trainer};

/// The batch chunks of the run that wrote the checkpoint at `path` and those a run resumed
/// from it in this process would use, `[before, now]`, when they differ: with `chunks` = 0
/// there is one chunk per thread, so resuming with another thread count sums the gradient
/// in another order, and the parameters then differ in their last bits from those of an
/// uninterrupted run (bit-identity holds for the same chunk count). `None` when they agree
/// or the checkpoint does not record its chunks.
pub fn checkpoint_chunk_change(path: &Path) -> Result<Option<[usize; 2]>> {
    Ok(Checkpoint::read(path)?.chunk_change())
}

/// The processes (MPI ranks) of the run that wrote the checkpoint at `path` and `ranks`,
/// those of a run resumed from it, `[before, now]`, when they differ. Every row of a batch
/// has its own random stream, so the resumed run trains on the same batches and makes the
/// same evaluations; only the gradient is summed in another order, so the parameters
/// differ in their last bits from those of an uninterrupted run (bit-identity holds for
/// the same ranks and chunks). `None` when they agree or the checkpoint does not record
/// its ranks.
pub fn checkpoint_rank_change(path: &Path, ranks: usize) -> Result<Option<[usize; 2]>> {
    Ok(changed(Checkpoint::read(path)?.ranks_used, ranks))
}

/// `[before, now]` when a recorded count differs from the present one.
fn changed(before: Option<usize>, now: usize) -> Option<[usize; 2]> {
    before.filter(|&b| b != now).map(|b| [b, now])
}

/// Version of the checkpoint format written by [`Trainer::save_checkpoint`].
pub const CHECKPOINT_FORMAT_VERSION: u32 = 2;

/// The on-disk content of a checkpoint.
#[derive(Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    format_version: u32,
    /// The flow's description ([`TrainableFlow::description`]; a [`FlowModel`]'s
    /// configuration).
    flow: serde_json::Value,
    lattice: Lattice,
    params: Vec<f32>,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
    optimizer: Optimizer,
    iteration: usize,
    configs_seen: u64,
    seconds: f64,
    /// Seconds and configurations of the evaluations during training (0 in checkpoints
    /// written before they were recorded).
    #[serde(default)]
    eval_seconds: f64,
    #[serde(default)]
    eval_configs: u64,
    #[serde(default)]
    wait_seconds: f64,
    #[serde(default)]
    communication_seconds: f64,
    /// Whether the last step's evaluation reached the target acceptance.
    #[serde(default)]
    target_reached: bool,
    /// Whether the training seconds had passed the time limit.
    #[serde(default)]
    out_of_time: bool,
    last_loss: Option<f64>,
    config: TrainConfig,
    /// The batch chunks of the run that wrote it (one per thread when `config.chunks` is
    /// 0); absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks_used: Option<usize>,
    /// The processes (MPI ranks) of the run that wrote it; absent in checkpoints written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ranks_used: Option<usize>,
}

impl Checkpoint {
    /// The state of `trainer`.
    pub(crate) fn capture<F: TrainableFlow, A: Action>(trainer: &Trainer<F, A>) -> Self {
        let model = &trainer.model;
        Checkpoint {
            format_version: CHECKPOINT_FORMAT_VERSION,
            flow: model.description(),
            lattice: model.lattice().clone(),
            params: model.params().to_vec(),
            metadata: model.metadata().cloned().unwrap_or_default(),
            optimizer: trainer.optimizer.clone(),
            iteration: trainer.counters.iteration,
            configs_seen: trainer.counters.configs_seen,
            seconds: trainer.counters.seconds,
            eval_seconds: trainer.counters.eval_seconds,
            eval_configs: trainer.counters.eval_configs,
            wait_seconds: trainer.counters.wait_seconds,
            communication_seconds: trainer.counters.communication_seconds,
            target_reached: trainer.counters.target_reached,
            out_of_time: trainer.counters.out_of_time,
            last_loss: trainer
                .counters
                .last_loss
                .is_finite()
                .then_some(trainer.counters.last_loss),
            config: trainer.config.clone(),
            chunks_used: Some(crate::train::trainer::chunk_count(&trainer.config)),
            ranks_used: Some(trainer.ranks.size()),
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

    /// The batch chunks of the run that wrote the checkpoint and those a run resumed from it
    /// in this process would use, when they differ.
    pub(crate) fn chunk_change(&self) -> Option<[usize; 2]> {
        changed(
            self.chunks_used,
            crate::train::trainer::chunk_count(&self.config),
        )
    }

    /// A fresh [`FlowModel`] built from the saved description and lattice, to restore into;
    /// custom transforms and nets are built by `registry`.
    pub(crate) fn model(&self, registry: &LayerRegistry) -> Result<FlowModel> {
        let config: FlowConfig = serde_json::from_value(self.flow.clone())
            .map_err(|e| Error::format("checkpoint flow configuration", e.to_string()))?;
        FlowModel::new_with(&config, &self.lattice, 0, registry)
    }

    /// Rebuilds the trainer with `model` (given the saved parameters and metadata), checking
    /// that the pieces fit each other, the model and `action`.
    pub(crate) fn into_trainer<F: TrainableFlow, A: Action + 'static>(
        self,
        mut model: F,
        action: Arc<A>,
    ) -> Result<Trainer<F, A>> {
        self.config.validate()?;
        self.optimizer.check_state()?;
        if self.iteration > self.config.iterations {
            return Err(Error::format(
                "checkpoint",
                format!(
                    "iteration {} is beyond the run's {} iterations",
                    self.iteration, self.config.iterations
                ),
            ));
        }
        if *model.lattice() != self.lattice {
            return Err(Error::Incompatible(format!(
                "checkpoint is for a flow on a {} lattice, the flow given lives on {}",
                self.lattice,
                model.lattice()
            )));
        }
        if model.description() != self.flow {
            return Err(Error::Incompatible(
                "checkpoint was written for a flow of another structure (its description \
                 differs from the flow given)"
                    .into(),
            ));
        }
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
        if let Some(metadata) = model.metadata_mut() {
            *metadata = self.metadata;
        }
        Trainer::assemble(
            model,
            action,
            self.config,
            self.optimizer,
            Counters {
                iteration: self.iteration,
                configs_seen: self.configs_seen,
                seconds: self.seconds,
                eval_seconds: self.eval_seconds,
                eval_configs: self.eval_configs,
                wait_seconds: self.wait_seconds,
                communication_seconds: self.communication_seconds,
                target_reached: self.target_reached,
                out_of_time: self.out_of_time,
                last_loss: self.last_loss.unwrap_or(f64::NAN),
            },
        )
    }
}
