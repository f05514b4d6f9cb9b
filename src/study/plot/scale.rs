//! The axes of a chart: a [`Scale`] is the range shown, linear or logarithmic, with its major
//! and minor ticks and their labels (decimals as the step needs, powers of ten on long log
//! axes); an [`Extent`] gathers the data's range and widens it into a scale with margins.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight, Ranged};

/// The most labelled ticks on an axis.
pub(super) const MAX_TICKS: usize = 8;

/// One axis: the range shown, linear or logarithmic, with its ticks and their labels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scale {
    /// The lower end shown.
    pub(super) lo: f64,
    /// The upper end shown.
    pub(super) hi: f64,
    /// A logarithmic axis.
    pub(super) log: bool,
    /// Ticks at whole numbers only (a linear axis of counts or lattice distances).
    pub(super) integer: bool,
}

impl Scale {
    /// Whether `v` can be placed on this axis at all.
    pub(super) fn usable(&self, v: f64) -> bool {
        usable(v, self.log)
    }

    /// `v` where it lies along the axis (its logarithm on a log axis).
    pub(super) fn transform(&self, v: f64) -> f64 {
        if self.log { v.log10() } else { v }
    }

    /// The value at `t` along the axis ([`Scale::transform`] undone).
    pub(super) fn inverse(&self, t: f64) -> f64 {
        if self.log { 10f64.powf(t) } else { t }
    }

    /// Where `v` lies between the ends (0 at `lo`, 1 at `hi`).
    pub(super) fn fraction(&self, v: f64) -> f64 {
        let (a, b) = (self.transform(self.lo), self.transform(self.hi));
        (self.transform(v) - a) / (b - a)
    }

    /// Whether `v` can be shown and lies within the ends.
    pub(super) fn contains(&self, v: f64) -> bool {
        let f = self.fraction(v);
        self.usable(v) && (-1e-9..=1.0 + 1e-9).contains(&f)
    }

    /// `v` moved into the range (the lower end for values a log axis cannot show).
    pub(super) fn clamp(&self, v: f64) -> f64 {
        if !self.usable(v) {
            return self.lo;
        }
        v.clamp(self.lo, self.hi)
    }

    /// The labelled ticks, at most `max` of them.
    pub(super) fn major_ticks(&self, max: usize) -> Vec<f64> {
        if max == 0 {
            return Vec::new();
        }
        if self.log {
            let (d0, d1) = (self.lo.log10().ceil(), self.hi.log10().floor());
            let decades = d1 - d0 + 1.0;
            if decades >= 3.0 {
                let stride = (decades / max as f64).ceil().max(1.0);
                let first = (d0 / stride).ceil() * stride;
                return (0..)
                    .map(|k| first + k as f64 * stride)
                    .take_while(|&d| d <= d1)
                    .map(|d| 10f64.powf(d))
                    .collect();
            }
            // At least three labels: a log axis with two tells little.
            for mantissas in [
                &[1.0, 2.0, 5.0][..],
                &[1.0, 3.0],
                &[1.0, 2.0, 3.0, 5.0],
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            ] {
                let ticks = self.log_subdivisions(mantissas);
                if ticks.len() >= 3 && ticks.len() <= max.max(3) {
                    return ticks;
                }
            }
        }
        linear_ticks(self.lo, self.hi, max, self.min_step()).0
    }

    /// The smallest step between linear ticks: 1 on an integer axis.
    fn min_step(&self) -> f64 {
        if self.integer { 1.0 } else { 0.0 }
    }

    /// The linear ticks and their step (a whole step on an integer axis).
    fn linear(&self) -> (Vec<f64>, f64) {
        linear_ticks(self.lo, self.hi, MAX_TICKS, self.min_step())
    }

    /// Ticks for grid lines only.
    fn minor_ticks(&self, max: usize) -> Vec<f64> {
        if self.log {
            let decades = self.hi.log10().floor() - self.lo.log10().ceil() + 1.0;
            if (2.0..=12.0).contains(&decades) {
                return self.log_subdivisions(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
            }
            return self.major_ticks(max);
        }
        let (_, step) = linear_ticks(self.lo, self.hi, max, self.min_step());
        if self.integer && step <= 1.0 {
            return Vec::new();
        }
        let leading = step / 10f64.powf(step.log10().floor());
        let minor = if (leading - 2.0).abs() < 0.1 {
            step / 4.0
        } else {
            step / 5.0
        };
        let first = (self.lo / minor).ceil();
        let last = (self.hi / minor).floor();
        if !(last - first).is_finite() || last - first > 200.0 {
            return Vec::new();
        }
        (0..=(last - first) as usize)
            .map(|k| (first + k as f64) * minor)
            .collect()
    }

    /// The values m·10ᵏ inside the range for the given mantissas m.
    fn log_subdivisions(&self, mantissas: &[f64]) -> Vec<f64> {
        let (d0, d1) = (self.lo.log10().floor(), self.hi.log10().ceil());
        if !(d1 - d0).is_finite() || d1 - d0 > 40.0 {
            return Vec::new();
        }
        let mut ticks = Vec::new();
        let mut d = d0;
        while d <= d1 {
            for &m in mantissas {
                let v = m * 10f64.powf(d);
                if self.contains(v) {
                    ticks.push(v);
                }
            }
            d += 1.0;
        }
        ticks
    }

    /// The text of the tick at `v`.
    pub(super) fn label(&self, v: f64) -> String {
        if self.log {
            // Powers of ten when the axis reaches beyond 0.001 … 10000, plain numbers otherwise.
            if self.lo >= 0.99e-3 && self.hi <= 1.01e4 {
                return format_significant(v, 2);
            }
            let exponent = v.log10().floor();
            let mantissa = (v / 10f64.powf(exponent) * 10.0).round() / 10.0;
            let power = format!("10{}", superscript(exponent as i64));
            return if (mantissa - 1.0).abs() < 1e-9 {
                power
            } else {
                format!("{}×{power}", format_significant(mantissa, 2))
            };
        }
        let (_, step) = self.linear();
        format_tick(v, step, self.lo.abs().max(self.hi.abs()))
    }
}

impl Ranged for Scale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = self.fraction(*value);
        // Far outside values are pinned a little beyond the frame; callers clip before drawing.
        let f = if f.is_finite() {
            f.clamp(-2.0, 3.0)
        } else {
            -2.0
        };
        (limit.0 as f64 + f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.major_ticks(hint.bold_points()),
            KeyPointWeight::Any => self.minor_ticks(hint.bold_points().max(1)),
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Whether `v` can be placed on a linear (`log` false) or logarithmic axis.
pub(super) fn usable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// Evenly spaced ticks at a 1, 2 or 5 × 10ᵏ step of at least `min_step`, at most `max` of
/// them, and the step.
fn linear_ticks(lo: f64, hi: f64, max: usize, min_step: f64) -> (Vec<f64>, f64) {
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 || max == 0 {
        return (Vec::new(), 1.0);
    }
    let raw = span / max as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = magnitude * 10.0;
    for m in [1.0, 2.0, 5.0, 10.0] {
        let candidate = m * magnitude;
        if span / candidate <= max as f64 - 1.0 + 1e-9 {
            step = candidate;
            break;
        }
    }
    if step < min_step {
        step = min_step;
    }
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if last < first || last - first > 1000.0 {
        return (Vec::new(), step);
    }
    let ticks = (0..=(last - first) as usize)
        .map(|k| {
            let v = (first + k as f64) * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect();
    (ticks, step)
}

/// A tick label: as many decimals as the step needs, scientific for very large or small
/// numbers.
fn format_tick(v: f64, step: f64, magnitude: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let step_exponent = step.log10().floor();
    if !(1e-3..1e5).contains(&magnitude) {
        let digits = (v.abs().log10().floor() - step_exponent).clamp(0.0, 6.0) as usize;
        return format_scientific(v, digits);
    }
    let decimals = (-step_exponent).clamp(0.0, 10.0) as usize;
    format!("{v:.decimals$}")
}

/// `v` with `significant` digits, scientific when very small or large (`5.3e-5`).
pub(super) fn format_significant(v: f64, significant: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exponent = v.abs().log10().floor();
    if !(-3.0..5.0).contains(&exponent) {
        return format_scientific(v, significant.saturating_sub(1));
    }
    let decimals = (significant as f64 - 1.0 - exponent).max(0.0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `v` with exactly `significant` digits, trailing zeros kept (`1.0`, `76`, `0.050`), in
/// scientific notation when very small or large, so that the values of one chart read
/// alike.
pub(crate) fn format_fixed(v: f64, significant: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exponent = v.abs().log10().floor();
    if !(-3.0..5.0).contains(&exponent) {
        return format!("{v:.*e}", significant.saturating_sub(1));
    }
    let decimals = (significant as f64 - 1.0 - exponent).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// `v` in scientific notation with `digits` decimals of mantissa (`5.3e-5`).
fn format_scientific(v: f64, digits: usize) -> String {
    let text = format!("{v:.digits$e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if mantissa.contains('.') => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        _ => text,
    }
}

fn superscript(n: i64) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            '9' => '⁹',
            other => other,
        })
        .collect()
}

/// The smallest and largest usable values seen.
#[derive(Clone, Copy, Debug)]
pub(super) struct Extent {
    /// The smallest usable value seen (+∞ before any).
    pub(super) lo: f64,
    /// The largest usable value seen (−∞ before any).
    pub(super) hi: f64,
    /// Whether the values are for a logarithmic axis (non-positive ones are not usable).
    log: bool,
}

impl Extent {
    /// Nothing seen yet.
    pub(super) fn new(log: bool) -> Self {
        Self {
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            log,
        }
    }

    /// Widens the extent to hold `v` when the axis can show it.
    pub(super) fn add(&mut self, v: f64) {
        if usable(v, self.log) {
            self.lo = self.lo.min(v);
            self.hi = self.hi.max(v);
        }
    }

    fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    /// The axis: `requested` when usable, otherwise the extent widened by `margin` of its
    /// span on each side (padded when it is a single value). A lower end at exactly zero on a
    /// linear axis stays (`keep_zero`, for bars that start there).
    pub(super) fn scale(
        &self,
        requested: Option<(f64, f64)>,
        margin: f64,
        keep_zero: bool,
    ) -> Scale {
        let log = self.log;
        if let Some((lo, hi)) = requested
            && usable(lo, log)
            && usable(hi, log)
            && lo < hi
        {
            return Scale {
                lo,
                hi,
                log,
                integer: false,
            };
        }
        if self.is_empty() {
            let (lo, hi) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
            return Scale {
                lo,
                hi,
                log,
                integer: false,
            };
        }
        let probe = Scale {
            lo: self.lo,
            hi: self.hi,
            log,
            integer: false,
        };
        let (a, b) = (probe.transform(self.lo), probe.transform(self.hi));
        let span = b - a;
        let (a, b) = if span <= 1e-12 * a.abs().max(b.abs()) || span == 0.0 {
            let half = if log {
                0.3
            } else if a != 0.0 {
                0.1 * a.abs()
            } else {
                1.0
            };
            (a - half, b + half)
        } else {
            let lo_margin = if keep_zero && !log && a == 0.0 {
                0.0
            } else {
                span * margin
            };
            (a - lo_margin, b + span * margin)
        };
        let (lo, hi) = (probe.inverse(a), probe.inverse(b));
        if usable(lo, log) && usable(hi, log) && lo < hi {
            Scale {
                lo,
                hi,
                log,
                integer: false,
            }
        } else {
            let (lo, hi) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
            Scale {
                lo,
                hi,
                log,
                integer: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels() {
        assert_eq!(format_significant(5.3e-5, 2), "5.3e-5");
        assert_eq!(format_significant(0.25, 2), "0.25");
        assert_eq!(format_significant(1200.0, 2), "1200");
        let scale = Scale {
            lo: 0.0,
            hi: 30.0,
            log: false,
            integer: false,
        };
        assert_eq!(
            scale.major_ticks(8),
            vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
        let log = Scale {
            lo: 0.01,
            hi: 1.2,
            log: true,
            integer: false,
        };
        assert_eq!(log.major_ticks(8), vec![0.01, 0.1, 1.0]);
        assert_eq!(log.label(0.01), "0.01");
        let deep = Scale {
            lo: 1e-9,
            hi: 1.0,
            log: true,
            integer: false,
        };
        assert_eq!(deep.label(1e-6), "10⁻⁶");
    }
}
