//! The Γ-method (docs/statistics.md#gamma-method; U. Wolff, Comput. Phys. Commun. 156
//! (2004) 143): error of the mean, integrated autocorrelation time and their own errors
//! from the autocorrelation function Γ(t), with automatic windowing, bias correction,
//! replicas, and derived quantities F(⟨A_1⟩, ⟨A_2⟩, …) through projected fluctuations.

use std::fmt;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Wolff's default ratio S = τ_W / τ_int used by the automatic windowing.
pub const DEFAULT_S: f64 = 1.5;

/// Replicas up to this length get Γ(t) by direct sums; longer ones by FFT (O(N log N)).
const DIRECT_SUM_MAX_LEN: usize = 512;

/// The fewest measurements a replica may have (so that Γ(1) exists).
pub const MIN_REPLICA_LEN: usize = 2;

/// An estimate from fewer than this many τ_int (N < 100 τ_int) is [`Verdict::Warning`]:
/// τ_int, and with it the error, is itself uncertain by tens of percent.
pub const DOUBTFUL_LENGTH: f64 = 100.0;

/// An estimate from fewer than this many τ_int (N < 20 τ_int) is [`Verdict::Unreliable`]:
/// the chain has seen too few independent configurations for the Γ-method's error to mean
/// much (the window is then a sizeable fraction of the series and slow modes may be missed).
pub const UNRELIABLE_LENGTH: f64 = 20.0;

/// How far a result can be trusted, from best to worst; ordered, so the worst of several
/// is their maximum.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing found that casts doubt on it.
    #[default]
    Reliable,
    /// Usable, with a caveat worth reading (e.g. a chain only moderately longer than τ_int).
    Warning,
    /// Not to be trusted: the error bar is undefined or likely far too small.
    Unreliable,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Reliable => "reliable",
            Verdict::Warning => "warning",
            Verdict::Unreliable => "unreliable",
        })
    }
}

/// A reason why a [`GammaEstimate`] may not be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GammaCaveat {
    /// The series (for a derived quantity: its projected fluctuations) does not fluctuate,
    /// Γ(0) = 0 up to rounding: error and τ_int are undefined (NaN). Typically a chain that
    /// never moved. [`Verdict::Unreliable`].
    ZeroVariance,
    /// The automatic window found no W with g(W) < 0 and took the largest window: τ_int is
    /// at best a lower bound. [`Verdict::Unreliable`].
    WindowNotConverged,
    /// N < [`UNRELIABLE_LENGTH`] τ_int. [`Verdict::Unreliable`].
    TooFewAutocorrelationTimes,
    /// [`UNRELIABLE_LENGTH`] τ_int ≤ N < [`DOUBTFUL_LENGTH`] τ_int. [`Verdict::Warning`].
    FewAutocorrelationTimes,
}

impl GammaCaveat {
    /// How serious the caveat is.
    pub fn severity(self) -> Verdict {
        match self {
            GammaCaveat::FewAutocorrelationTimes => Verdict::Warning,
            _ => Verdict::Unreliable,
        }
    }

    /// A stable snake_case name.
    pub fn code(self) -> &'static str {
        match self {
            GammaCaveat::ZeroVariance => "zero_variance",
            GammaCaveat::WindowNotConverged => "window_not_converged",
            GammaCaveat::TooFewAutocorrelationTimes => "too_few_autocorrelation_times",
            GammaCaveat::FewAutocorrelationTimes => "few_autocorrelation_times",
        }
    }
}

/// The result of a Γ-method analysis of one primary or derived quantity.
///
/// How far it can be trusted is part of the result: [`GammaEstimate::caveats`] lists the
/// reasons for doubt, [`GammaEstimate::verdict`] sums them up and
/// [`GammaEstimate::caveat`] says them in words. A series without fluctuations has
/// `err`, `err_err`, `tau_int` and `tau_int_err` NaN (`null` in JSON), never 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GammaEstimate {
    /// The mean (for a derived quantity, F of the means).
    pub mean: f64,
    /// The statistical error of `mean`, σ = √(C/N); NaN when undefined.
    #[serde(deserialize_with = "nan_if_null")]
    pub err: f64,
    /// The error of `err`, σ √((W + ½)/N); NaN when undefined.
    #[serde(deserialize_with = "nan_if_null")]
    pub err_err: f64,
    /// The integrated autocorrelation time τ_int = C / (2Γ(0)); ½ for independent data;
    /// NaN when undefined.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int: f64,
    /// The error of `tau_int`, 2 τ_int √((W − τ_int + ½)/N); NaN when undefined.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int_err: f64,
    /// The summation window W.
    pub window: usize,
    /// False when the automatic windowing found no W with g(W) < 0 and took the largest
    /// window: the chain is then too short for a reliable τ_int.
    pub window_converged: bool,
    /// The number of measurements N (summed over replicas).
    pub n: usize,
    /// True when the series did not fluctuate (Γ(0) = 0 up to rounding against the data's
    /// scale): error and τ_int are then NaN.
    pub zero_variance: bool,
}

impl GammaEstimate {
    /// The reasons for doubt, worst first (empty for a reliable estimate). The length
    /// checks compare N with [`UNRELIABLE_LENGTH`] and [`DOUBTFUL_LENGTH`] times τ_int.
    pub fn caveats(&self) -> Vec<GammaCaveat> {
        let mut caveats = Vec::new();
        if self.zero_variance || !self.err.is_finite() || !self.tau_int.is_finite() {
            caveats.push(GammaCaveat::ZeroVariance);
            return caveats;
        }
        if !self.window_converged {
            caveats.push(GammaCaveat::WindowNotConverged);
        }
        let n = self.n as f64;
        if n < UNRELIABLE_LENGTH * self.tau_int {
            caveats.push(GammaCaveat::TooFewAutocorrelationTimes);
        } else if n < DOUBTFUL_LENGTH * self.tau_int {
            caveats.push(GammaCaveat::FewAutocorrelationTimes);
        }
        caveats
    }

    /// The worst severity among [`GammaEstimate::caveats`].
    pub fn verdict(&self) -> Verdict {
        self.caveats()
            .into_iter()
            .map(GammaCaveat::severity)
            .max()
            .unwrap_or(Verdict::Reliable)
    }

    /// The caveats in words, one sentence each joined by spaces; `None` when reliable.
    pub fn caveat(&self) -> Option<String> {
        let sentences: Vec<String> = self
            .caveats()
            .into_iter()
            .map(|c| match c {
                GammaCaveat::ZeroVariance => "the series does not fluctuate (the chain may \
                     not have moved): error and τ_int are undefined."
                    .to_string(),
                GammaCaveat::WindowNotConverged => format!(
                    "the automatic window did not close (W = {} of at most N/2): τ_int is \
                     at best a lower bound and the error likely too small.",
                    self.window
                ),
                GammaCaveat::TooFewAutocorrelationTimes => format!(
                    "only {:.1} τ_int in the chain (N = {}, τ_int = {:.3}; fewer than \
                     {UNRELIABLE_LENGTH}): the error is not trustworthy.",
                    self.n as f64 / self.tau_int,
                    self.n,
                    self.tau_int
                ),
                GammaCaveat::FewAutocorrelationTimes => format!(
                    "only {:.0} τ_int in the chain (N = {}, τ_int = {:.3}; fewer than \
                     {DOUBTFUL_LENGTH}): the error is uncertain.",
                    self.n as f64 / self.tau_int,
                    self.n,
                    self.tau_int
                ),
            })
            .collect();
        if sentences.is_empty() {
            None
        } else {
            Some(sentences.join(" "))
        }
    }
}

/// Reads `null` (how serde_json writes NaN) back as NaN.
pub(crate) fn nan_if_null<'de, D>(deserializer: D) -> std::result::Result<f64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

impl fmt::Display for GammaEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ± {} (τ_int {} ± {}, W {})",
            self.mean, self.err, self.tau_int, self.tau_int_err, self.window
        )
    }
}

/// How the summation window W is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Window {
    /// Wolff's automatic windowing with the given S (default [`DEFAULT_S`]).
    Automatic {
        /// The ratio S; larger values give larger windows.
        s: f64,
    },
    /// A fixed window; `Fixed(0)` ignores all autocorrelation (the naive error).
    Fixed(usize),
}

impl Default for Window {
    fn default() -> Self {
        Window::Automatic { s: DEFAULT_S }
    }
}

/// A configured Γ-method analysis. The free functions [`gamma_method`] & co. use the
/// default (automatic windowing with S = 1.5).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GammaMethod {
    window: Window,
}

impl GammaMethod {
    /// An analysis with the given windowing; S must be positive and finite.
    pub fn new(window: Window) -> Result<Self> {
        if let Window::Automatic { s } = window
            && !(s.is_finite() && s > 0.0)
        {
            return Err(Error::param(
                "s",
                format!("windowing ratio must be positive, got {s}"),
            ));
        }
        Ok(GammaMethod { window })
    }

    /// The windowing in use.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Analyses one observable measured on independent replicas (each a chain in order).
    pub fn estimate(&self, replicas: &[&[f64]]) -> Result<GammaEstimate> {
        check_replicas(replicas, "data")?;
        let n_total: usize = replicas.iter().map(|r| r.len()).sum();
        let mean = replicas.iter().flat_map(|r| r.iter()).sum::<f64>() / n_total as f64;
        let scale = replicas
            .iter()
            .flat_map(|r| r.iter())
            .fold(0.0f64, |m, x| m.max(x.abs()));
        let max_lag = max_window(replicas);
        let mut gamma = autocovariance(replicas, mean, max_lag);
        analyse(&mut gamma, n_total, mean, scale, self.window)
    }

    /// Analyses a derived quantity F(⟨A_1⟩, …, ⟨A_k⟩).
    ///
    /// `replicas[r][α]` is the series of A_α on replica r; within a replica all series have
    /// the same length. `f` maps the vector of means (one per series) to the derived value.
    /// The derivatives ∂F/∂A_α are central differences with step √(Γ_αα(0)/N).
    pub fn estimate_derived<F>(&self, replicas: &[&[&[f64]]], f: F) -> Result<GammaEstimate>
    where
        F: Fn(&[f64]) -> f64,
    {
        let n_series = check_derived_input(replicas)?;
        let n_total: usize = replicas.iter().map(|r| r[0].len()).sum();
        let nf = n_total as f64;

        let mut means = vec![0.0; n_series];
        for replica in replicas {
            for (m, series) in means.iter_mut().zip(replica.iter()) {
                *m += series.iter().sum::<f64>();
            }
        }
        means.iter_mut().for_each(|m| *m /= nf);

        let mut variances = vec![0.0; n_series];
        let mut scales = vec![0.0f64; n_series];
        for replica in replicas {
            for (alpha, series) in replica.iter().enumerate() {
                for &x in series.iter() {
                    let d = x - means[alpha];
                    variances[alpha] += d * d;
                    scales[alpha] = scales[alpha].max(d.abs());
                }
            }
        }
        variances.iter_mut().for_each(|v| *v /= nf);

        let value = f(&means);
        if !value.is_finite() {
            return Err(Error::NonFinite(format!(
                "derived quantity at the means {means:?}"
            )));
        }
        let mut derivatives = vec![0.0; n_series];
        let mut shifted = means.clone();
        for alpha in 0..n_series {
            let step = (variances[alpha] / nf).sqrt();
            if step == 0.0 {
                continue;
            }
            shifted[alpha] = means[alpha] + step;
            let up = f(&shifted);
            shifted[alpha] = means[alpha] - step;
            let down = f(&shifted);
            shifted[alpha] = means[alpha];
            let derivative = (up - down) / (2.0 * step);
            if !derivative.is_finite() {
                return Err(Error::NonFinite(format!(
                    "derivative of the derived quantity along series {alpha}"
                )));
            }
            derivatives[alpha] = derivative;
        }

        let projected: Vec<Vec<f64>> = replicas
            .iter()
            .map(|replica| {
                let len = replica[0].len();
                let mut delta = vec![0.0; len];
                for (alpha, series) in replica.iter().enumerate() {
                    let (d, m) = (derivatives[alpha], means[alpha]);
                    if d == 0.0 {
                        continue;
                    }
                    for (o, &x) in delta.iter_mut().zip(series.iter()) {
                        *o += d * (x - m);
                    }
                }
                delta
            })
            .collect();
        let scale: f64 = derivatives
            .iter()
            .zip(&scales)
            .map(|(d, s)| (d * s).abs())
            .sum();
        let views: Vec<&[f64]> = projected.iter().map(Vec::as_slice).collect();
        let max_lag = max_window(&views);
        let mut gamma = autocovariance(&views, 0.0, max_lag);
        analyse(&mut gamma, n_total, value, scale, self.window)
    }
}

/// Γ-method analysis of one chain with automatic windowing (S = 1.5).
pub fn gamma_method(data: &[f64]) -> Result<GammaEstimate> {
    GammaMethod::default().estimate(&[data])
}

/// Γ-method analysis of independent replicas of one observable: Γ(t) summed over replicas
/// and normalised by N − R t.
pub fn gamma_method_replicas(replicas: &[&[f64]]) -> Result<GammaEstimate> {
    GammaMethod::default().estimate(replicas)
}

/// Γ-method analysis of a derived quantity on one chain: `series[α]` is the chain of A_α
/// (all of equal length) and `f` maps the vector of means to F.
pub fn gamma_method_derived(series: &[&[f64]], f: impl Fn(&[f64]) -> f64) -> Result<GammaEstimate> {
    GammaMethod::default().estimate_derived(&[series], f)
}

/// Γ-method analysis of a derived quantity on independent replicas: `replicas[r][α]` is the
/// chain of A_α on replica r.
pub fn gamma_method_derived_replicas(
    replicas: &[&[&[f64]]],
    f: impl Fn(&[f64]) -> f64,
) -> Result<GammaEstimate> {
    GammaMethod::default().estimate_derived(replicas, f)
}

/// The normalised autocorrelation function ρ(t) = Γ(t)/Γ(0) of one chain for
/// t = 0..=`max_lag` (no bias correction); for plots and diagnostics.
pub fn autocorrelation(data: &[f64], max_lag: usize) -> Result<Vec<f64>> {
    check_replicas(&[data], "data")?;
    if max_lag >= data.len() {
        return Err(Error::param(
            "max_lag",
            format!("must be below the series length {}", data.len()),
        ));
    }
    let mean = data.iter().sum::<f64>() / data.len() as f64;
    let mut gamma = autocovariance(&[data], mean, max_lag);
    let g0 = gamma[0];
    if g0 > 0.0 {
        gamma.iter_mut().for_each(|g| *g /= g0);
    } else {
        gamma.iter_mut().for_each(|g| *g = 0.0);
        gamma[0] = 1.0;
    }
    Ok(gamma)
}

/// Wolff's automatic window for a normalised autocorrelation function `rho` (with
/// `rho[0] = 1`, lags up to `rho.len() − 1`), `n` measurements in total and ratio `s`.
///
/// For W = 1, 2, …: stop at W if τ_int(W) = ½ + Σ_{t≤W} ρ(t) ≤ ½; otherwise with
/// τ_W = S / ln[(2τ_int + 1)/(2τ_int − 1)] stop at the first W with
/// g(W) = e^{−W/τ_W} − τ_W/√(W n) < 0. Returns the window and whether such a W was found
/// (if not, the largest lag is returned with `false`).
pub fn automatic_window(rho: &[f64], n: usize, s: f64) -> (usize, bool) {
    let max_w = rho.len().saturating_sub(1);
    let mut tau = 0.5;
    for (w, &r) in rho.iter().enumerate().skip(1) {
        tau += r;
        if tau <= 0.5 {
            return (w, true);
        }
        let tau_w = s / ((2.0 * tau + 1.0) / (2.0 * tau - 1.0)).ln();
        let g = (-(w as f64) / tau_w).exp() - tau_w / ((w * n) as f64).sqrt();
        if g < 0.0 {
            return (w, true);
        }
    }
    (max_w, false)
}

/// The largest window the data allow: half the shortest replica.
fn max_window<S: AsRef<[f64]>>(replicas: &[S]) -> usize {
    replicas.iter().map(|r| r.as_ref().len()).min().unwrap_or(0) / 2
}

fn check_replicas(replicas: &[&[f64]], what: &str) -> Result<()> {
    if replicas.is_empty() {
        return Err(Error::param(what, "no replicas given"));
    }
    for (r, data) in replicas.iter().enumerate() {
        if data.len() < MIN_REPLICA_LEN {
            return Err(Error::param(
                what,
                format!(
                    "replica {r} has {} measurements, at least {MIN_REPLICA_LEN} are needed",
                    data.len()
                ),
            ));
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!(
                "{what}: replica {r}, measurement {i}"
            )));
        }
    }
    Ok(())
}

/// Validates derived-quantity input and returns the number of series.
fn check_derived_input(replicas: &[&[&[f64]]]) -> Result<usize> {
    let first = replicas
        .first()
        .ok_or_else(|| Error::param("series", "no replicas given"))?;
    let n_series = first.len();
    if n_series == 0 {
        return Err(Error::param("series", "no series given"));
    }
    for (r, replica) in replicas.iter().enumerate() {
        if replica.len() != n_series {
            return Err(Error::Shape(format!(
                "replica {r} has {} series, replica 0 has {n_series}",
                replica.len()
            )));
        }
        let len = replica[0].len();
        if let Some(alpha) = replica.iter().position(|s| s.len() != len) {
            return Err(Error::Shape(format!(
                "replica {r}: series {alpha} has {} measurements, series 0 has {len}",
                replica[alpha].len()
            )));
        }
        check_replicas(replica, "series")?;
    }
    Ok(n_series)
}

/// Γ(t) for t = 0..=max_lag: Σ_r Σ_n (a_{r,n} − mean)(a_{r,n+t} − mean) / Σ_r (N_r − t).
fn autocovariance<S: AsRef<[f64]>>(replicas: &[S], mean: f64, max_lag: usize) -> Vec<f64> {
    let mut sums = vec![0.0; max_lag + 1];
    let mut counts = vec![0usize; max_lag + 1];
    let mut planner = FftPlanner::<f64>::new();
    let mut buffer: Vec<Complex64> = Vec::new();
    for replica in replicas {
        let data = replica.as_ref();
        let n = data.len();
        let lags = max_lag.min(n - 1);
        if n <= DIRECT_SUM_MAX_LEN {
            for (t, sum) in sums.iter_mut().enumerate().take(lags + 1) {
                *sum += data[..n - t]
                    .iter()
                    .zip(&data[t..])
                    .map(|(a, b)| (a - mean) * (b - mean))
                    .sum::<f64>();
            }
        } else {
            // Zero padding to ≥ 2N makes the circular correlation equal the linear one.
            let len = (2 * n).next_power_of_two();
            buffer.clear();
            buffer.extend(data.iter().map(|&x| Complex64::new(x - mean, 0.0)));
            buffer.resize(len, Complex64::new(0.0, 0.0));
            planner.plan_fft_forward(len).process(&mut buffer);
            buffer
                .iter_mut()
                .for_each(|c| *c = Complex64::new(c.norm_sqr(), 0.0));
            planner.plan_fft_inverse(len).process(&mut buffer);
            let norm = 1.0 / len as f64;
            for (sum, c) in sums.iter_mut().zip(&buffer).take(lags + 1) {
                *sum += c.re * norm;
            }
        }
        for (t, count) in counts.iter_mut().enumerate().take(lags + 1) {
            *count += n - t;
        }
    }
    sums.iter()
        .zip(&counts)
        .map(|(&s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect()
}

/// Windowing, bias correction and errors from Γ(t) (`gamma[0..=max_lag]`).
///
/// `scale` is the size of the data's fluctuations' natural unit: a Γ(0) below rounding
/// noise of `scale` means a constant series, reported with error and τ_int NaN and
/// `zero_variance` set.
fn analyse(
    gamma: &mut [f64],
    n_total: usize,
    value: f64,
    scale: f64,
    window: Window,
) -> Result<GammaEstimate> {
    let nf = n_total as f64;
    let g0 = gamma[0];
    let rounding = 16.0 * f64::EPSILON * scale;
    if g0 <= rounding * rounding {
        return Ok(GammaEstimate {
            mean: value,
            err: f64::NAN,
            err_err: f64::NAN,
            tau_int: f64::NAN,
            tau_int_err: f64::NAN,
            window: 0,
            window_converged: true,
            n: n_total,
            zero_variance: true,
        });
    }
    let max_lag = gamma.len() - 1;
    let (w, converged) = match window {
        Window::Fixed(w) if w > max_lag => {
            return Err(Error::param(
                "window",
                format!("fixed window {w} exceeds half the shortest replica ({max_lag})"),
            ));
        }
        Window::Fixed(w) => (w, true),
        Window::Automatic { s } => {
            let rho: Vec<f64> = gamma.iter().map(|g| g / g0).collect();
            automatic_window(&rho, n_total, s)
        }
    };
    let c_first = g0 + 2.0 * gamma[1..=w].iter().sum::<f64>();
    if c_first.is_nan() || c_first <= 0.0 {
        return Err(Error::param(
            "data",
            format!(
                "estimated variance of the mean is not positive (C = {c_first:e} at window {w}): \
                 the series is too short or anticorrelated"
            ),
        ));
    }
    let shift = c_first / nf;
    gamma[..=w].iter_mut().for_each(|g| *g += shift);
    let c = gamma[0] + 2.0 * gamma[1..=w].iter().sum::<f64>();
    let err = (c / nf).sqrt();
    let tau_int = c / (2.0 * gamma[0]);
    let wf = w as f64;
    Ok(GammaEstimate {
        mean: value,
        err,
        err_err: err * ((wf + 0.5) / nf).sqrt(),
        tau_int,
        tau_int_err: 2.0 * tau_int * ((wf - tau_int + 0.5).max(0.0) / nf).sqrt(),
        window: w,
        window_converged: converged,
        n: n_total,
        zero_variance: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_series(n: usize) -> Vec<f64> {
        // A deterministic, autocorrelated, non-periodic series.
        let mut x = 0.0;
        (0..n)
            .map(|i| {
                x = 0.8 * x + ((i as f64 * 1.618).sin() * 43758.5453).fract();
                x
            })
            .collect()
    }

    #[test]
    fn fft_and_direct_autocovariance_agree() {
        let data = pseudo_series(3 * DIRECT_SUM_MAX_LEN);
        let mean = data.iter().sum::<f64>() / data.len() as f64;
        let by_fft = autocovariance(&[&data[..]], mean, 200);
        for t in [0usize, 1, 7, 200] {
            let direct: f64 = data[..data.len() - t]
                .iter()
                .zip(&data[t..])
                .map(|(a, b)| (a - mean) * (b - mean))
                .sum::<f64>()
                / (data.len() - t) as f64;
            assert!(
                (by_fft[t] - direct).abs() < 1e-12 * by_fft[0],
                "lag {t}: {} vs {direct}",
                by_fft[t]
            );
        }
    }

    #[test]
    fn autocorrelation_is_normalised_direct_gamma() {
        let data = pseudo_series(100);
        let rho = autocorrelation(&data, 10).unwrap();
        let mean = data.iter().sum::<f64>() / 100.0;
        let gamma = |t: usize| {
            data[..100 - t]
                .iter()
                .zip(&data[t..])
                .map(|(a, b)| (a - mean) * (b - mean))
                .sum::<f64>()
                / (100 - t) as f64
        };
        assert_eq!(rho.len(), 11);
        for (t, r) in rho.iter().enumerate() {
            assert!((r - gamma(t) / gamma(0)).abs() < 1e-14);
        }
        assert!(autocorrelation(&data, 100).is_err());
    }

    #[test]
    fn replicas_normalise_by_n_minus_r_t() {
        let a = [1.0, 2.0, 0.0, 3.0];
        let b = [2.0, -1.0, 1.0, 0.0];
        let mean = 1.0;
        let g = autocovariance(&[&a[..], &b[..]], mean, 2);
        // lag 1: a: (0)(1)+(1)(-1)+(-1)(2) = -3 ; b: (1)(-2)+(-2)(0)+(0)(-1) = -2
        assert!((g[1] - (-5.0 / 6.0)).abs() < 1e-15);
        // lag 0: a: 0+1+1+4 = 6 ; b: 1+4+0+1 = 6
        assert!((g[0] - 12.0 / 8.0).abs() < 1e-15);
    }

    #[test]
    fn iid_like_series_stops_at_first_nonpositive_tau() {
        let rho = [1.0, -0.1, 0.5, 0.5];
        assert_eq!(automatic_window(&rho, 100, 1.5), (1, true));
        let rho = [1.0, 0.9, 0.9, 0.9];
        assert_eq!(automatic_window(&rho, 100, 1.5), (3, false));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(gamma_method(&[]).is_err());
        assert!(gamma_method(&[1.0]).is_err());
        assert!(matches!(
            gamma_method(&[1.0, f64::NAN, 2.0]),
            Err(Error::NonFinite(_))
        ));
        assert!(gamma_method_replicas(&[]).is_err());
        assert!(gamma_method_derived(&[], |m| m[0]).is_err());
        let a = [1.0, 2.0, 3.0];
        let b = [1.0, 2.0];
        assert!(matches!(
            gamma_method_derived(&[&a, &b], |m| m[0] / m[1]),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            gamma_method_derived(&[&a], |m| 1.0 / (m[0] - 2.0)),
            Err(Error::NonFinite(_))
        ));
        assert!(GammaMethod::new(Window::Automatic { s: -1.0 }).is_err());
        let fixed = GammaMethod::new(Window::Fixed(5)).unwrap();
        assert!(fixed.estimate(&[&pseudo_series(8)]).is_err());
    }

    #[test]
    fn constant_series_has_undefined_error() {
        let e = gamma_method(&[0.1; 50]).unwrap();
        assert!((e.mean - 0.1).abs() < 1e-15);
        assert!(e.zero_variance);
        assert!(e.err.is_nan() && e.err_err.is_nan());
        assert!(e.tau_int.is_nan() && e.tau_int_err.is_nan());
        assert_eq!(e.caveats(), [GammaCaveat::ZeroVariance]);
        assert_eq!(e.verdict(), Verdict::Unreliable);
        assert!(e.caveat().unwrap().contains("does not fluctuate"));
        // serde_json writes NaN as null and reads it back as NaN.
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"err\":null"), "{json}");
        let back: GammaEstimate = serde_json::from_str(&json).unwrap();
        assert!(back.err.is_nan() && back.zero_variance);
    }

    #[test]
    fn derived_quantity_of_constant_series_is_undefined() {
        let a = [2.0; 40];
        let b: Vec<f64> = (0..40).map(|i| 1.0 + (i % 3) as f64).collect();
        // F depends only on the constant series: the projected fluctuations vanish.
        let e = gamma_method_derived(&[&a, &b], |m| m[0] * 3.0).unwrap();
        assert_eq!(e.mean, 6.0);
        assert!(e.zero_variance && e.err.is_nan());
        assert_eq!(e.verdict(), Verdict::Unreliable);
    }

    #[test]
    fn alternating_series_is_refused_not_reported() {
        let data: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(gamma_method(&data).is_err());
    }
}
