//! Progress on stderr: one display per stage of the library's work (a bar on a terminal,
//! a plain line every `--progress-interval` seconds otherwise, nothing with `--quiet`), and
//! a line when a stage ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use latflow::{Metric, Observer};

use crate::args::OutputArgs;

/// One stage's display.
enum Display {
    Bar(ProgressBar),
    Lines { interval: Duration, last: Instant },
    Quiet,
}

/// The stage being shown.
struct Stage {
    name: String,
    unit: String,
    total: u64,
    start: Instant,
    display: Display,
    /// The latest value of every metric seen in this stage (a metric reported once, such
    /// as an evaluation's acceptance, stays shown).
    metrics: Vec<(String, f64)>,
    /// The first report (units done, when): rates and remaining times count from it, so a
    /// resumed stage that starts at unit 258 does not credit those units to this process.
    origin: Option<(u64, Instant)>,
}

/// Shows the stages of long work on stderr as an [`Observer`] of the library.
pub(crate) struct StageProgress<'a> {
    output: &'a OutputArgs,
    current: Option<Stage>,
}

impl<'a> StageProgress<'a> {
    pub(crate) fn new(output: &'a OutputArgs) -> Self {
        StageProgress {
            output,
            current: None,
        }
    }
}

/// A rate with three significant figures and its unit: `18,700 steps/s`, `3.52 steps/s`.
pub(crate) fn rate(per_second: f64, unit: &str) -> String {
    format!("{} {unit}/s", significant(per_second))
}

/// A number with about three significant figures, thousands grouped.
pub(crate) fn significant(x: f64) -> String {
    if !x.is_finite() {
        return "?".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let rounded = {
            let digits = a.log10().floor() as i32;
            let scale = 10f64.powi(digits - 2);
            (x / scale).round() * scale
        };
        group_thousands(rounded as i64)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{x:.3}")
    }
}

fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A metric's value as shown: counts as integers, the rest with four significant figures.
fn metric_value(name: &str, value: f64) -> String {
    if name == "configurations" {
        group_thousands(value as i64)
    } else if value != 0.0 && (value.abs() >= 1e5 || value.abs() < 1e-3) {
        format!("{value:.3e}")
    } else {
        format!("{value:.4}")
    }
}

impl Stage {
    /// The stage's figures, in the order they first appeared (none before a first value).
    fn message(&self) -> String {
        self.metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(n, v)| format!("{n} {}", metric_value(n, *v)))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

/// Units per second since the first report `origin`; unknown until a unit more is done.
fn rate_since(origin: (u64, Instant), done: u64, now: Instant) -> Option<f64> {
    let elapsed = now.duration_since(origin.1).as_secs_f64();
    (done > origin.0 && elapsed > 0.0).then(|| (done - origin.0) as f64 / elapsed)
}

impl Observer for StageProgress<'_> {
    fn begin(&mut self, stage: &str, total: u64, unit: &str) {
        if let Some(previous) = &mut self.current
            && let Display::Bar(bar) = &previous.display
        {
            bar.finish_and_clear();
        }
        let start = Instant::now();
        let display = if self.output.quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let unit_owned = unit.to_string();
            let style = ProgressStyle::with_template(&format!(
                "{stage} {{bar:30}} {{pos}}/{{len}} {unit}  {{rate}}  eta {{eta_known}}  {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&rate(state.per_sec(), &unit_owned));
                },
            )
            .with_key(
                "eta_known",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let known = state.pos() > 0 && state.elapsed() > Duration::from_millis(300);
                    let text = if known {
                        clock(state.eta().as_secs_f64())
                    } else {
                        "?".into()
                    };
                    let _ = w.write_str(&text);
                },
            );
            bar.set_style(style);
            Display::Bar(bar)
        } else {
            let interval = Duration::from_secs_f64(self.output.progress_interval.min(1e9));
            Display::Lines {
                interval,
                last: start,
            }
        };
        self.current = Some(Stage {
            name: stage.to_string(),
            unit: unit.to_string(),
            total,
            start,
            display,
            metrics: Vec::new(),
            origin: None,
        });
    }

    fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
        let Some(stage) = &mut self.current else {
            return;
        };
        for m in metrics.iter().filter(|m| !m.detail) {
            match stage.metrics.iter_mut().find(|(n, _)| n == m.name) {
                Some((_, v)) => *v = m.value,
                None => stage.metrics.push((m.name.to_string(), m.value)),
            }
        }
        let message = stage.message();
        let first = stage.origin.is_none();
        let origin = *stage.origin.get_or_insert((done, Instant::now()));
        match &mut stage.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                if first {
                    // Rates and the ETA from here on, not from the units done before.
                    bar.reset_eta();
                }
                bar.set_message(message);
            }
            Display::Lines { interval, last } => {
                let now = Instant::now();
                if now.duration_since(*last) < *interval && done < stage.total {
                    return;
                }
                *last = now;
                let elapsed = now.duration_since(stage.start).as_secs_f64();
                let per_second = rate_since(origin, done, now);
                let (speed, eta) = match per_second {
                    Some(r) => (
                        rate(r, &stage.unit),
                        clock(stage.total.saturating_sub(done) as f64 / r),
                    ),
                    None => (format!("? {}/s", stage.unit), "?".into()),
                };
                eprintln!(
                    "{}: {done}/{} {} ({:.0} %)  {speed}  elapsed {}  eta {eta}  {}",
                    stage.name,
                    stage.total,
                    stage.unit,
                    100.0 * done as f64 / stage.total.max(1) as f64,
                    clock(elapsed),
                    message
                );
            }
            Display::Quiet => {}
        }
    }

    fn end(&mut self, outcome: &str) {
        let Some(stage) = self.current.take() else {
            return;
        };
        if let Display::Bar(bar) = &stage.display {
            bar.finish_and_clear();
        }
        if !matches!(stage.display, Display::Quiet) {
            let figures = stage.message();
            let figures = if figures.is_empty() {
                String::new()
            } else {
                format!("; {figures}")
            };
            eprintln!(
                "{}: {outcome} ({}){figures}",
                stage.name,
                clock(stage.start.elapsed().as_secs_f64())
            );
        }
    }
}

/// Seconds as h:mm:ss (or m:ss).
pub(crate) fn clock(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_from_the_first_report() {
        let t0 = Instant::now();
        // A run resumed at unit 258 that did 10 more in 10 s runs at 1 unit/s.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(rate_since((258, t0), 268, later), Some(1.0));
        assert_eq!(rate_since((258, t0), 258, later), None);
        assert_eq!(rate_since((0, t0), 5, t0), None);
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(significant(18_741.531_6), "18,700");
        assert_eq!(significant(3.5213), "3.52");
        assert_eq!(significant(0.01234), "0.012");
        assert_eq!(significant(1_234_567.0), "1,230,000");
        assert_eq!(rate(250.4, "steps"), "250 steps/s");
        assert_eq!(clock(75.0), "1:15");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
