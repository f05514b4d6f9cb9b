//! Curricula: one flow trained through a sequence of stages, each starting from the flow the
//! stage before wrote. Stages may grow the lattice (a convolutional flow's parameters do
//! not depend on L, see [`init_from`]) and move the couplings, e.g. from near the free
//! theory or from a small lattice to the target. A curriculum writes one model, log and
//! report per stage into its folder and resumes where it stopped: finished stages are
//! kept, an interrupted stage continues from its checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::train::{
    AnnealSpec, TrainControl, TrainOutcome, TrainReport, TrainSpec, checkpoint_spec, resume, train,
    trained_model_run,
};
use super::{ActionSpec, RecipeSpec, init_from};
use crate::control::{Observer, Prefixed};
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowModel};
use crate::lattice::Lattice;
use crate::train::TrainConfig;

/// One stage of a curriculum: the lattice and action it trains against, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The lattice of this stage.
    pub lattice: Lattice,
    /// The action of this stage.
    pub action: ActionSpec,
    /// Batch, iterations, learning rate, target acceptance, … of this stage.
    pub train: TrainConfig,
    /// Optional coupling annealing within the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anneal: Option<AnnealSpec>,
}

/// A curriculum: one recipe trained through `stages` in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurriculumSpec {
    /// The flow of every stage. Between stages on different lattices its parameters must
    /// not depend on the lattice size (a convolutional recipe).
    #[serde(default)]
    pub recipe: RecipeSpec,
    /// A model file whose parameters start the first stage (default: the recipe's random
    /// initialisation with the first stage's seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// The folder of the stages' models (`stage-K.json`), logs (`stage-K.train.csv`),
    /// checkpoints and the report (`curriculum.json`).
    pub out: PathBuf,
    /// The stages, in order (`[[stage]]` tables in a runcard).
    #[serde(rename = "stage")]
    pub stages: Vec<StageSpec>,
}

impl CurriculumSpec {
    /// Reads a TOML runcard (the fields of [`CurriculumSpec`]; unknown keys are errors) and
    /// validates it; a refused key is named as the runcard writes it (`stage.3.train.lr`,
    /// stages counted from 1, or `recipe.hidden`) with its line.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        crate::study::runcard::read_checked(
            path,
            |spec: &CurriculumSpec, _| spec.validate(),
            |name| vec![stage_path(name)],
        )
    }

    /// Checks every stage ([`TrainSpec::validate`] and the couplings of its built-in
    /// action) and that the flow carries from each stage to the next: the same flow
    /// configuration with as many parameters (errors name the stages).
    pub fn validate(&self) -> Result<()> {
        self.check(None)
    }

    /// [`CurriculumSpec::validate`] with the actions of `registry` (a user's registered
    /// actions built too): every stage is checked before the first one runs.
    pub fn validate_with(&self, registry: &super::Registry) -> Result<()> {
        self.check(Some(registry))
    }

    fn check(&self, registry: Option<&super::Registry>) -> Result<()> {
        if self.stages.is_empty() {
            return Err(Error::param(
                "stage",
                "a curriculum needs at least one stage",
            ));
        }
        let mut previous: Option<(usize, FlowModel)> = None;
        for k in 0..self.stages.len() {
            let spec = self.stage_spec(k);
            spec.validate()
                .map_err(|e| in_stage(k, crate::study::spec::training_key(e, "", &[])))?;
            let custom = matches!(spec.action, ActionSpec::Custom { .. });
            if let Some(registry) = registry.or((!custom).then(super::Registry::builtin)) {
                registry
                    .action(&spec.action, &spec.lattice)
                    .map_err(|e| in_stage(k, in_table("action", e)))?;
            }
            let in_recipe = |e| in_stage(k, in_table("recipe", e));
            let config = spec.recipe.build(&spec.lattice).map_err(in_recipe)?;
            let model = FlowModel::new(&config, &spec.lattice, 0).map_err(in_recipe)?;
            if let Some((j, before)) = &previous {
                crate::flow::transfer_rule(before, &model).map_err(|e| {
                    Error::Incompatible(format!(
                        "stage {} ({} lattice) cannot start from stage {} ({} lattice): {e}",
                        k + 1,
                        spec.lattice,
                        j + 1,
                        before.lattice(),
                    ))
                })?;
            }
            previous = Some((k, model));
        }
        Ok(())
    }

    /// The model file of stage `k` (0-based): `out/stage-{k+1}.json`.
    pub fn stage_model(&self, k: usize) -> PathBuf {
        self.out.join(format!("stage-{}.json", k + 1))
    }

    /// The training run of stage `k` (0-based): the stage's lattice, action and training
    /// with the curriculum's recipe, started from the model of the stage before (the
    /// curriculum's `init` for the first), written to [`CurriculumSpec::stage_model`].
    pub fn stage_spec(&self, k: usize) -> TrainSpec {
        let stage = &self.stages[k];
        TrainSpec {
            lattice: stage.lattice.clone(),
            action: stage.action.clone(),
            recipe: self.recipe.clone(),
            train: stage.train.clone(),
            anneal: stage.anneal,
            snf: None,
            init: match k {
                0 => self.init.clone(),
                _ => Some(self.stage_model(k - 1)),
            },
            out: self.stage_model(k),
        }
    }
}

/// An invalid parameter of the runcard table `table` (e.g. `beta` → `action.beta`).
fn in_table(table: &str, error: Error) -> Error {
    match error {
        Error::InvalidParameter { name, reason } if name != table => Error::InvalidParameter {
            name: format!("{table}.{name}"),
            reason,
        },
        other => other,
    }
}

/// An invalid parameter of stage `k` (0-based), named as the runcard writes it: a key of
/// the stage's tables as `stage.{k+1}.…` (stages counted from 1), a key of the shared
/// `recipe` as itself with the stage in the reason.
fn in_stage(k: usize, error: Error) -> Error {
    match error {
        Error::InvalidParameter { name, reason } if name.starts_with("recipe.") => {
            Error::InvalidParameter {
                name,
                reason: format!("{reason} (in stage {})", k + 1),
            }
        }
        Error::InvalidParameter { name, reason } => Error::InvalidParameter {
            name: format!("stage.{}.{name}", k + 1),
            reason,
        },
        other => other,
    }
}

/// The runcard key path of a parameter named by [`in_stage`] (`stage.3.train.lr` is entry
/// 2 of the `stage` array), for its line.
fn stage_path(name: &str) -> String {
    let stage = name.strip_prefix("stage.").and_then(|rest| {
        let (k, key) = rest.split_once('.')?;
        Some((k.parse::<usize>().ok()?.checked_sub(1)?, key))
    });
    match stage {
        Some((k, key)) => format!("stage.{k}.{key}"),
        None => name.to_string(),
    }
}

/// What a curriculum achieved: every stage's report and the totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurriculumReport {
    /// The stages' training reports, in order.
    pub stages: Vec<TrainReport>,
    /// Σ |Φ_train| over the stages.
    pub configs_seen: u64,
    /// Σ |Φ_train|·|Λ_k| / |Λ_last|: the training configurations counted in configurations
    /// of the last stage's lattice (a configuration of a smaller lattice costs a
    /// convolutional flow proportionally less).
    pub last_lattice_configs: f64,
    /// Σ wall seconds of the training steps.
    pub seconds: f64,
    /// Σ wall seconds of the evaluations during training.
    pub eval_seconds: f64,
    /// The acceptance of the final flow (the last stage's final evaluation).
    pub acceptance: f64,
    /// The final model (the last stage's).
    pub model: PathBuf,
}

impl CurriculumReport {
    fn of(stages: Vec<TrainReport>) -> Result<Self> {
        let last = stages
            .last()
            .ok_or_else(|| Error::param("stage", "a curriculum needs at least one stage"))?;
        let volume = |r: &TrainReport| r.lattice.iter().product::<usize>() as f64;
        let last_volume = volume(last);
        Ok(CurriculumReport {
            configs_seen: stages.iter().map(|r| r.configs_seen).sum(),
            last_lattice_configs: stages
                .iter()
                .map(|r| r.configs_seen as f64 * volume(r) / last_volume)
                .sum(),
            seconds: stages.iter().map(|r| r.seconds).sum(),
            eval_seconds: stages.iter().map(|r| r.eval_seconds).sum(),
            acceptance: last.acceptance,
            model: last.model.clone(),
            stages,
        })
    }
}

/// How a curriculum ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum CurriculumOutcome {
    /// Every stage finished; `curriculum.json` holds the report.
    Finished(CurriculumReport),
    /// A stop was requested during stage `stage` (1-based): its state is in the
    /// checkpoint, and running the curriculum again continues from it.
    Stopped {
        /// The stage that was stopped (1-based).
        stage: usize,
        /// Iterations of that stage completed.
        iteration: usize,
        /// Iterations of that stage.
        iterations: usize,
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
}

/// Runs the curriculum in this process: for every stage, a finished model in the folder is
/// kept (it must record this stage's run; a stage trained with other settings is an error
/// naming the file), a checkpoint of this stage is resumed, otherwise the stage is trained
/// with checkpoints every `control.checkpoint_every` iterations. `observer` sees each
/// stage's training as `stage k: train` (k from 1). Writes `curriculum.json` (atomically) after every
/// stage. The control's `checkpoint` and `log` are not used (every stage keeps its own
/// beside its model), and a control spread over ranks is refused.
pub fn curriculum(
    spec: &CurriculumSpec,
    control: &TrainControl<'_>,
    observer: &mut dyn Observer,
) -> Result<CurriculumOutcome> {
    if control.ranks.is_some() {
        return Err(Error::Incompatible(
            "a curriculum runs in one process; train its stages over ranks with \
             `latflow train --init`"
                .into(),
        ));
    }
    spec.validate_with(control.registry)?;
    if let Some(init) = &spec.init {
        // Refuse a missing or unfitting start before any stage runs.
        let first = spec.stage_spec(0);
        let config = first.recipe.build(&first.lattice)?;
        let mut model = FlowModel::new(&config, &first.lattice, 0)?;
        init_from(&mut model, init)?;
    }
    // The folder is made once everything is checked.
    std::fs::create_dir_all(&spec.out).map_err(|e| Error::io(&spec.out, e))?;
    let summary = spec.out.join("curriculum.json");
    crate::io::check_output_path(&summary, "out")?;
    let mut reports = Vec::with_capacity(spec.stages.len());
    for k in 0..spec.stages.len() {
        let stage = spec.stage_spec(k);
        let model = spec.stage_model(k);
        let checkpoint = model.with_extension("checkpoint.json");
        let log = model.with_extension("train.csv");
        let stage_control = TrainControl {
            checkpoint: Some(&checkpoint),
            log: Some(&log),
            ..*control
        };
        let name = format!("stage {}", k + 1);
        let mut stage_observer = Prefixed::new(observer, &name);
        let outcome = if model.exists() {
            let (recorded, report) = trained_model_run(&model)?;
            check_recorded(&model, &recorded, &stage, k)?;
            TrainOutcome::Finished(report)
        } else if checkpoint.exists() {
            check_recorded(&checkpoint, &checkpoint_spec(&checkpoint)?, &stage, k)?;
            resume(&checkpoint, None, &stage_control, &mut stage_observer)?
        } else {
            train(&stage, &stage_control, &mut stage_observer)?
        };
        match outcome {
            TrainOutcome::Finished(report) => {
                if checkpoint.exists() {
                    std::fs::remove_file(&checkpoint).map_err(|e| Error::io(&checkpoint, e))?;
                }
                reports.push(report);
                crate::io::write_json(
                    &summary,
                    &serde_json::json!({ "spec": spec, "stages": reports }),
                )?;
            }
            TrainOutcome::Stopped {
                iteration,
                iterations,
                checkpoint,
            } => {
                return Ok(CurriculumOutcome::Stopped {
                    stage: k + 1,
                    iteration,
                    iterations,
                    checkpoint,
                });
            }
        }
    }
    let report = CurriculumReport::of(reports)?;
    crate::io::write_json(
        &summary,
        &serde_json::json!({ "spec": spec, "report": report }),
    )?;
    Ok(CurriculumOutcome::Finished(report))
}

/// Refuses a model or checkpoint in the place of stage `k` that records another run than
/// the stage's. Where the files are is not compared (the folder may have moved): the
/// model's path, and from the second stage on the path of the model it started from.
fn check_recorded(path: &Path, recorded: &TrainSpec, stage: &TrainSpec, k: usize) -> Result<()> {
    let recorded = TrainSpec {
        out: stage.out.clone(),
        init: if k == 0 {
            recorded.init.clone()
        } else {
            stage.init.clone()
        },
        ..recorded.clone()
    };
    if &recorded != stage {
        return Err(Error::Incompatible(format!(
            "{} records another run than stage {} of this curriculum (its lattice, action, \
             recipe, training or start differ): remove it to train the stage afresh, or give \
             the curriculum another `out`",
            path.display(),
            k + 1
        )));
    }
    Ok(())
}
