//! How long work is watched and stopped: the [`Observer`] every long-running piece of the
//! library reports to (chains, training, studies, sweeps, HMC tuning), the [`Metric`]s it
//! reports, and the [`StopToken`] that ends the work early with what was done kept.
//!
//! The library never prints: a caller that wants a progress bar implements [`Observer`];
//! `()` ignores everything. Nothing an observer sees or does changes a result.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One running figure of a stage, e.g. `acceptance local` = 0.498 or `loss` = 12.3.
///
/// A headline metric is meant to be shown (a progress display shows it); a detail metric
/// is data for observers that keep records (e.g. a training step's learning rate), which
/// displays may leave out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metric<'a> {
    /// What the number is, in a few words.
    pub name: &'a str,
    /// Its value (NaN when not known yet).
    pub value: f64,
    /// Whether it is detail rather than headline.
    pub detail: bool,
}

impl<'a> Metric<'a> {
    /// The headline metric `name` = `value`.
    pub fn new(name: &'a str, value: f64) -> Self {
        Metric {
            name,
            value,
            detail: false,
        }
    }

    /// The detail metric `name` = `value`.
    pub fn detail(name: &'a str, value: f64) -> Self {
        Metric {
            name,
            value,
            detail: true,
        }
    }
}

/// Watches long work as a sequence of stages.
///
/// A stage begins with its size ([`Observer::begin`]), reports how far it got after each
/// block of work with its running figures ([`Observer::progress`]) and ends with a few words
/// on how ([`Observer::end`]). Every method has an empty default body.
pub trait Observer {
    /// A stage begins: `total` units of `unit` (e.g. 2000 `steps`, 750 `iterations`).
    fn begin(&mut self, _stage: &str, _total: u64, _unit: &str) {}

    /// `done` units of the current stage are done; `metrics` are its running figures.
    fn progress(&mut self, _done: u64, _metrics: &[Metric<'_>]) {}

    /// The current stage ended; `outcome` says how, in a few words.
    fn end(&mut self, _outcome: &str) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// A request to stop, shared between whoever asks (a signal handler, a time limit, another
/// thread) and the work, which checks it between blocks and ends early keeping what it did.
///
/// Clones share one flag. [`StopToken::never`] is a token that cannot be set.
#[derive(Clone, Debug, Default)]
pub struct StopToken {
    flag: Option<Arc<AtomicBool>>,
}

impl StopToken {
    /// A token nobody has asked to stop yet.
    pub fn new() -> Self {
        StopToken {
            flag: Some(Arc::new(AtomicBool::new(false))),
        }
    }

    /// A token that never asks to stop (setting it does nothing).
    pub const fn never() -> Self {
        StopToken { flag: None }
    }

    /// A token on an existing flag (e.g. one a signal handler sets).
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        StopToken { flag: Some(flag) }
    }

    /// The shared flag, e.g. to register with a signal handler (`None` for
    /// [`StopToken::never`]).
    pub fn flag(&self) -> Option<&Arc<AtomicBool>> {
        self.flag.as_ref()
    }

    /// Asks the work to stop.
    pub fn stop(&self) {
        if let Some(flag) = &self.flag {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.flag.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// A token that never stops, for defaults that need a `'static` reference.
pub static NEVER_STOP: StopToken = StopToken::never();

/// Passes the stages of a part of the work on as stages of their own, named
/// `prefix: stage` (e.g. `sample hmc: thermalise`).
pub struct Prefixed<'a> {
    observer: &'a mut dyn Observer,
    prefix: &'a str,
}

impl<'a> Prefixed<'a> {
    /// Stages of `observer` named after `prefix`.
    pub fn new(observer: &'a mut dyn Observer, prefix: &'a str) -> Self {
        Prefixed { observer, prefix }
    }
}

impl Observer for Prefixed<'_> {
    fn begin(&mut self, stage: &str, total: u64, unit: &str) {
        self.observer
            .begin(&format!("{}: {stage}", self.prefix), total, unit);
    }

    fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
        self.observer.progress(done, metrics);
    }

    fn end(&mut self, outcome: &str) {
        self.observer.end(outcome);
    }
}

/// Reports the stages of a part of the work as progress within the observer's current
/// stage: the part's units count on from `offset` (each of its stages after the sizes of
/// the ones before), and its own stage boundaries are not passed on.
pub struct Part<'a> {
    observer: &'a mut dyn Observer,
    /// Units of the finished stages of the part, plus the offset.
    base: u64,
    /// Size of the part's current stage.
    current: u64,
}

impl<'a> Part<'a> {
    /// The part of `observer`'s current stage that starts after `offset` units.
    pub fn new(observer: &'a mut dyn Observer, offset: u64) -> Self {
        Part {
            observer,
            base: offset,
            current: 0,
        }
    }
}

impl Observer for Part<'_> {
    fn begin(&mut self, _stage: &str, total: u64, _unit: &str) {
        self.current = total;
    }

    fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
        self.observer.progress(self.base + done, metrics);
    }

    fn end(&mut self, _outcome: &str) {
        self.base += self.current;
        self.current = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl Observer for Log {
        fn begin(&mut self, stage: &str, total: u64, unit: &str) {
            self.0.push(format!("begin {stage} {total} {unit}"));
        }
        fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
            let m: Vec<String> = metrics
                .iter()
                .map(|m| format!("{}={}", m.name, m.value))
                .collect();
            self.0.push(format!("progress {done} {}", m.join(",")));
        }
        fn end(&mut self, outcome: &str) {
            self.0.push(format!("end {outcome}"));
        }
    }

    #[test]
    fn adapters_rename_stages_and_fold_parts_into_one_stage() {
        let mut log = Log::default();
        {
            let mut prefixed = Prefixed::new(&mut log, "sample hmc");
            prefixed.begin("measure", 10, "steps");
            prefixed.progress(4, &[Metric::new("acceptance hmc", 0.5)]);
            prefixed.end("done");
        }
        log.begin("tune", 40, "steps");
        for pilot in 0..2 {
            let mut part = Part::new(&mut log, 20 * pilot);
            part.begin("thermalise", 5, "steps");
            part.progress(5, &[]);
            part.end("done");
            part.begin("measure", 15, "steps");
            part.progress(15, &[]);
            part.end("done");
        }
        log.end("chosen");
        assert_eq!(
            log.0,
            [
                "begin sample hmc: measure 10 steps",
                "progress 4 acceptance hmc=0.5",
                "end done",
                "begin tune 40 steps",
                "progress 5 ",
                "progress 20 ",
                "progress 25 ",
                "progress 40 ",
                "end chosen",
            ]
        );
        let token = StopToken::new();
        let clone = token.clone();
        assert!(!token.is_stopped());
        clone.stop();
        assert!(token.is_stopped());
        let never = StopToken::never();
        never.stop();
        assert!(!never.is_stopped());
    }
}
