//! What training reports: the metrics of each step, a flow's short independent evaluation,
//! and the summary of a finished run.

use serde::{Deserialize, Serialize};

use crate::control::Metric;

/// A short independent test of a flow against its target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Acceptance of an independence Metropolis chain over the samples.
    pub acceptance: f64,
    /// Effective sample size fraction of the importance weights, in (0, 1].
    pub ess: f64,
    /// Mean of log w = −S − log p̃ (a lower bound on log Z).
    pub mean_log_w: f64,
    /// Variance of log w (0 for a perfect flow).
    pub var_log_w: f64,
    /// Rejection-based integrated autocorrelation time of that chain (∞ if nothing was
    /// accepted).
    pub tau_rej: f64,
    /// Fraction of samples with positive magnetisation (½ unless a Z2 mode was lost).
    pub fraction_positive_m: f64,
}

/// What one training step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The step's index (0-based).
    pub iteration: usize,
    /// Batch mean of S − log det.
    pub loss: f64,
    /// Batch variance of S − log det.
    pub loss_var: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Configurations generated so far, |Φ_train|, including this step.
    pub configs_seen: u64,
    /// Wall-clock seconds of the training steps so far (evaluations excluded).
    pub seconds: f64,
    /// The evaluation made after this step, if one was due.
    pub eval: Option<EvalMetrics>,
}

/// The names under which [`StepMetrics::metrics`] reports a step.
const STEP_METRICS: [&str; 11] = [
    "loss",
    "acceptance",
    "ess",
    "loss variance",
    "learning rate",
    "configurations",
    "seconds",
    "mean log w",
    "variance log w",
    "tau_rej",
    "fraction m > 0",
];

impl StepMetrics {
    /// The step's figures as an [`Observer`](crate::control::Observer) sees them: the loss and, when an evaluation
    /// was made, its acceptance and ESS as headline metrics; every other number of the step
    /// and its evaluation as detail metrics, so that [`StepMetrics::from_metrics`] gives the
    /// step back.
    pub fn metrics(&self) -> Vec<Metric<'static>> {
        let n = STEP_METRICS;
        let mut metrics = vec![Metric::new(n[0], self.loss)];
        if let Some(e) = &self.eval {
            metrics.push(Metric::new(n[1], e.acceptance));
            metrics.push(Metric::new(n[2], e.ess));
        }
        metrics.extend([
            Metric::detail(n[3], self.loss_var),
            Metric::detail(n[4], self.lr),
            Metric::detail(n[5], self.configs_seen as f64),
            Metric::detail(n[6], self.seconds),
        ]);
        if let Some(e) = &self.eval {
            metrics.extend([
                Metric::detail(n[7], e.mean_log_w),
                Metric::detail(n[8], e.var_log_w),
                Metric::detail(n[9], e.tau_rej),
                Metric::detail(n[10], e.fraction_positive_m),
            ]);
        }
        metrics
    }

    /// The step an [`Observer`](crate::control::Observer) was shown as iteration `done` (1-based) with `metrics`
    /// (see [`StepMetrics::metrics`]); `None` when they are not a training step's.
    pub fn from_metrics(done: u64, metrics: &[Metric<'_>]) -> Option<StepMetrics> {
        let get = |name: &str| metrics.iter().find(|m| m.name == name).map(|m| m.value);
        let n = STEP_METRICS;
        let eval = match get(n[1]) {
            Some(acceptance) => Some(EvalMetrics {
                acceptance,
                ess: get(n[2])?,
                mean_log_w: get(n[7])?,
                var_log_w: get(n[8])?,
                tau_rej: get(n[9])?,
                fraction_positive_m: get(n[10])?,
            }),
            None => None,
        };
        Some(StepMetrics {
            iteration: usize::try_from(done.checked_sub(1)?).ok()?,
            loss: get(n[0])?,
            loss_var: get(n[3])?,
            lr: get(n[4])?,
            configs_seen: get(n[5])? as u64,
            seconds: get(n[6])?,
            eval,
        })
    }
}

/// The outcome of [`Trainer::train`](crate::train::Trainer::train).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps made in total.
    pub iterations: usize,
    /// Configurations generated in total for training, |Φ_train|.
    pub configs_seen: u64,
    /// Wall-clock seconds of the training steps (evaluations excluded).
    pub seconds: f64,
    /// Wall-clock seconds of the evaluations made during training (the final one
    /// excluded).
    pub eval_seconds: f64,
    /// Configurations sampled by the evaluations made during training (the final one
    /// excluded), not counted in `configs_seen`.
    pub eval_configs: u64,
    /// Wall seconds of the training steps spent waiting for the slowest rank, measured as
    /// the two-number loss sum that precedes the gradient sum (part of `seconds`; 0 for one
    /// process).
    pub wait_seconds: f64,
    /// Wall seconds of the training steps spent summing the gradient over ranks, once they
    /// are in step (part of `seconds`; 0 for one process).
    pub communication_seconds: f64,
    /// Whether the target acceptance was reached (`None` without a target).
    pub reached_target: Option<bool>,
    /// Whether training ended at its time limit ([`TrainConfig::time_limit`](crate::train::TrainConfig::time_limit)) before its
    /// budget or target.
    #[serde(default)]
    pub ran_out_of_time: bool,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Final evaluation with `eval_samples` samples.
    pub eval: EvalMetrics,
}
