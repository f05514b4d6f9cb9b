//! Numbers as text: table cells, `mean ± err` rounded to the error, durations in the unit that
//! suits them, significant digits, and a sampler's acceptance per kernel.

use crate::study::analysis::SamplerAnalysis;

/// A number for a table cell: empty when not finite.
pub(crate) fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        String::new()
    }
}

/// `mean ± err` with the error rounded to two significant digits and the mean to match.
pub(crate) fn pm(mean: f64, err: f64) -> String {
    if !mean.is_finite() {
        return "—".into();
    }
    if !(err.is_finite() && err > 0.0) {
        return format!("{} ± undefined", sig(mean, 5));
    }
    let digits = (2 - 1 - err.log10().floor() as i32).clamp(0, 12) as usize;
    format!("{mean:.digits$} ± {err:.digits$}")
}

/// The acceptance of a sampler: per kernel when the expression has several (`flow 0.66 ·
/// local 0.50`), else the one number.
pub fn acceptance_text(s: &SamplerAnalysis) -> String {
    let by_kernel = &s.report.acceptance_by_move;
    if by_kernel.len() > 1 {
        by_kernel
            .iter()
            .map(|(k, a)| format!("{k} {a:.3}"))
            .collect::<Vec<_>>()
            .join(" · ")
    } else {
        format!("{:.3}", s.report.acceptance)
    }
}

/// One unit of time (µs, ms or s) for a whole table or figure, so that its numbers compare
/// at a glance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TimeUnit {
    /// Seconds are multiplied by this.
    pub(crate) scale: f64,
    /// The unit's symbol.
    pub(crate) name: &'static str,
}

impl TimeUnit {
    /// The unit that suits the median of the finite positive `seconds` (s without any).
    pub(crate) fn for_values(seconds: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = seconds
            .into_iter()
            .filter(|x| x.is_finite() && *x > 0.0)
            .collect();
        v.sort_by(f64::total_cmp);
        let (scale, name) = match v.get(v.len() / 2) {
            Some(&x) if x < 1e-3 => (1e6, "µs"),
            Some(&x) if x < 1.0 => (1e3, "ms"),
            _ => (1.0, "s"),
        };
        TimeUnit { scale, name }
    }

    /// `seconds ± err` in this unit, with the unit.
    pub(crate) fn pm(&self, seconds: f64, err: f64) -> String {
        format!(
            "{} {}",
            pm(seconds * self.scale, err * self.scale),
            self.name
        )
    }

    /// `seconds` to three significant digits in this unit, with the unit.
    pub(crate) fn text(&self, seconds: f64) -> String {
        format!("{} {}", sig(seconds * self.scale, 3), self.name)
    }
}

/// `mean ± err` as [`pm`], written as `(m ± e)·10^k` when the mean is 10⁵ or more.
pub(super) fn pm_scaled(mean: f64, err: f64) -> String {
    if !(mean.is_finite() && mean.abs() >= 1e5) {
        return pm(mean, err);
    }
    let k = mean.abs().log10().floor() as i32;
    let scale = 10f64.powi(k);
    format!("({})·10^{k}", pm(mean / scale, err / scale))
}

/// Seconds to three significant digits in s, ms or µs, whichever suits them.
pub(super) fn seconds_text(seconds: f64) -> String {
    TimeUnit::for_values([seconds]).text(seconds)
}

/// `x` to `n` significant digits.
pub(crate) fn sig(x: f64, n: usize) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-3..5).contains(&magnitude) {
        return format!("{:.*e}", n.saturating_sub(1), x);
    }
    let digits = (n as i32 - 1 - magnitude).max(0) as usize;
    format!("{x:.digits$}")
}
