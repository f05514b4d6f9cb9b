//! Helpers shared by the integration tests: an observer that records what the library
//! reports, scratch folders, and the `latflow` binary with its output.
#![allow(dead_code)]

use latflow::{Metric, Observer};

/// One stage an observer saw: its name, size and unit, every progress report with its
/// metrics, and how it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeenStage {
    pub name: String,
    pub total: u64,
    pub unit: String,
    pub progress: Vec<(u64, Vec<(String, f64)>)>,
    pub outcome: Option<String>,
}

/// An observer that records every stage.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub stages: Vec<SeenStage>,
}

impl Recorder {
    /// The stages whose name ends with `suffix`.
    pub fn named<'a>(&'a self, suffix: &'a str) -> impl Iterator<Item = &'a SeenStage> + 'a {
        self.stages.iter().filter(move |s| s.name.ends_with(suffix))
    }

    /// The values of metric `name` across the stage's progress reports, in order.
    pub fn metric(stage: &SeenStage, name: &str) -> Vec<f64> {
        stage
            .progress
            .iter()
            .flat_map(|(_, m)| m.iter().filter(|(n, _)| n == name).map(|(_, v)| *v))
            .collect()
    }
}

impl Observer for Recorder {
    fn begin(&mut self, stage: &str, total: u64, unit: &str) {
        self.stages.push(SeenStage {
            name: stage.to_string(),
            total,
            unit: unit.to_string(),
            ..SeenStage::default()
        });
    }

    fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
        if let Some(stage) = self.stages.last_mut() {
            stage.progress.push((
                done,
                metrics
                    .iter()
                    .map(|m| (m.name.to_string(), m.value))
                    .collect(),
            ));
        }
    }

    fn end(&mut self, outcome: &str) {
        if let Some(stage) = self.stages.last_mut() {
            stage.outcome = Some(outcome.to_string());
        }
    }
}

/// An observer that calls `f(stage, done)` at every progress report.
pub struct OnProgress<F> {
    stage: String,
    f: F,
}

/// An observer that calls `f(stage, done)` at every progress report.
pub fn on_progress<F: FnMut(&str, u64)>(f: F) -> OnProgress<F> {
    OnProgress {
        stage: String::new(),
        f,
    }
}

impl<F: FnMut(&str, u64)> Observer for OnProgress<F> {
    fn begin(&mut self, stage: &str, _total: u64, _unit: &str) {
        self.stage = stage.to_string();
    }

    fn progress(&mut self, done: u64, _metrics: &[Metric<'_>]) {
        (self.f)(&self.stage, done);
    }
}

/// An observer that keeps every training step it is shown (stages named `… train`).
#[derive(Default)]
pub struct Steps(pub Vec<latflow::train::StepMetrics>);

impl Observer for Steps {
    fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
        // A resumed run first reports where it starts, with no metrics.
        if let Some(step) = latflow::train::StepMetrics::from_metrics(done, metrics) {
            self.0.push(step);
        }
    }
}
