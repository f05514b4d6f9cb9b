//! The comparison a study ends with: every observable of every sampler against the exact
//! value (free field) or the runcard's `[reference]`, the pulls between samplers, and the
//! conclusion in words — the cheapest sampler per independent configuration with the cost
//! ratios, whether the flow's training pays back, whether the samplers agree (the largest
//! pairwise pull) and, on a line of its own, how reliable the chains are.
//!
//! A pull between estimates a ± σ_a and b ± σ_b is (a − b)/√(σ_a² + σ_b²); against a
//! reference r ± σ_r it is (a − r)/√(σ_a² + σ_r²). Samplers agree when every pairwise pull
//! is below [`AGREEMENT_SIGMAS`] in size.

use serde::{Deserialize, Serialize};

use super::analysis::{Payback, SamplerAnalysis};
use super::report::{TimeUnit, sig};
use super::spec::{OBSERVABLE_ORDER, StudySpec};
use crate::stats::{Verdict, nan_if_null};

/// Samplers agree when no pairwise pull reaches this many standard errors.
pub const AGREEMENT_SIGMAS: f64 = 4.0;

/// A pull between two estimates of one observable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pull {
    /// The observable.
    pub observable: String,
    /// The first sampler.
    pub a: String,
    /// The second sampler, or `exact` / `reference`.
    pub b: String,
    /// (a − b)/√(σ_a² + σ_b²).
    #[serde(deserialize_with = "nan_if_null")]
    pub pull: f64,
}

/// One observable across the samplers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservableComparison {
    /// The observable's code name (`phi2`, `chi`, …).
    pub observable: String,
    /// The exact or reference value with its error (0 for exact), when there is one.
    pub reference: Option<[f64; 2]>,
    /// Where the reference comes from: `exact` (free field) or `reference` (the runcard).
    pub reference_source: Option<String>,
    /// Per sampler (in the study's order), the pull against the reference (NaN without one
    /// or without an error).
    pub pulls: Vec<f64>,
    /// The largest pairwise pull between samplers, in size.
    pub largest_pairwise: Option<Pull>,
    /// The pairs of samplers whose pull is defined (both with an error).
    #[serde(default)]
    pub pairs: usize,
}

/// The study's conclusion, in numbers and sentences.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conclusion {
    /// The sampler with the lowest cost per independent configuration among those whose
    /// chains are not unreliable.
    pub cheapest: Option<String>,
    /// Every other sampler's cost per independent configuration over the cheapest's.
    pub cost_ratios: Vec<(String, f64)>,
    /// The largest pull between two samplers over every observable compared.
    pub largest_pull: Option<Pull>,
    /// The pairwise pulls compared.
    pub pulls_compared: usize,
    /// Whether every pairwise pull is below [`AGREEMENT_SIGMAS`].
    pub samplers_agree: Option<bool>,
    /// Cost and payback in one or two sentences.
    pub verdict: String,
    /// Agreement of the samplers in a sentence.
    pub agreement: String,
    /// The chains' reliability in a sentence (apart from the verdict on the samplers).
    pub reliability: String,
}

/// (a − b)/√(σ_a² + σ_b²); NaN when the combined error is not positive.
pub fn pull(a: (f64, f64), b: (f64, f64)) -> f64 {
    let sigma = a.1.hypot(b.1);
    if sigma > 0.0 && sigma.is_finite() && a.0.is_finite() && b.0.is_finite() {
        (a.0 - b.0) / sigma
    } else {
        f64::NAN
    }
}

/// Every reported observable across the samplers, in [`OBSERVABLE_ORDER`].
pub fn compare_observables(
    spec: &StudySpec,
    samplers: &[SamplerAnalysis],
) -> Vec<ObservableComparison> {
    let exact = samplers.first().and_then(|s| s.report.exact.as_ref());
    OBSERVABLE_ORDER
        .iter()
        .filter(|name| {
            samplers
                .iter()
                .any(|s| s.report.observables.contains_key(**name))
        })
        .map(|&name| {
            let (reference, source) =
                match (exact.and_then(|x| x.get(name)), spec.reference.get(name)) {
                    (Some(&v), _) => (Some([v, 0.0]), Some("exact".to_string())),
                    (None, Some(r)) => {
                        let (v, e) = r.value_and_error();
                        (Some([v, e]), Some("reference".to_string()))
                    }
                    _ => (None, None),
                };
            let estimate = |s: &SamplerAnalysis| {
                s.report
                    .observables
                    .get(name)
                    .map_or((f64::NAN, f64::NAN), |e| (e.mean, e.err))
            };
            let pulls = samplers
                .iter()
                .map(|s| reference.map_or(f64::NAN, |[v, e]| pull(estimate(s), (v, e))))
                .collect();
            let mut largest: Option<Pull> = None;
            let mut pairs = 0;
            for (i, a) in samplers.iter().enumerate() {
                for b in &samplers[i + 1..] {
                    let p = pull(estimate(a), estimate(b));
                    pairs += usize::from(p.is_finite());
                    if p.is_finite() && largest.as_ref().is_none_or(|l| p.abs() > l.pull.abs()) {
                        largest = Some(Pull {
                            observable: name.to_string(),
                            a: a.name.clone(),
                            b: b.name.clone(),
                            pull: p,
                        });
                    }
                }
            }
            ObservableComparison {
                observable: name.to_string(),
                reference,
                reference_source: source,
                pulls,
                largest_pairwise: largest,
                pairs,
            }
        })
        .collect()
}

/// The conclusion from the samplers, the observables compared and the paybacks.
pub fn conclude(
    samplers: &[SamplerAnalysis],
    comparison: &[ObservableComparison],
    payback: &[Payback],
) -> Conclusion {
    let trusted: Vec<&SamplerAnalysis> = samplers
        .iter()
        .filter(|s| {
            s.report.verdict != Verdict::Unreliable
                && s.cost_per_independent.is_finite()
                && s.cost_per_independent > 0.0
        })
        .collect();
    let cheapest = trusted
        .iter()
        .min_by(|a, b| a.cost_per_independent.total_cmp(&b.cost_per_independent))
        .copied();
    let mut cost_ratios: Vec<(String, f64)> = match cheapest {
        Some(c) => trusted
            .iter()
            .filter(|s| s.name != c.name)
            .map(|s| {
                (
                    s.name.clone(),
                    s.cost_per_independent / c.cost_per_independent,
                )
            })
            .collect(),
        None => Vec::new(),
    };
    cost_ratios.sort_by(|a, b| a.1.total_cmp(&b.1));

    let mut verdict = match cheapest {
        Some(c) => {
            let unit = TimeUnit::for_values([c.cost_per_independent]);
            let others = cost_ratios
                .iter()
                .map(|(name, r)| format!("{name} {}×", ratio_text(*r)))
                .collect::<Vec<_>>()
                .join(", ");
            let others = if others.is_empty() {
                String::new()
            } else {
                format!("; the others cost {others} as much")
            };
            format!(
                "Cheapest per independent configuration: {} at {}{others}.",
                c.name,
                unit.pm(c.cost_per_independent, c.cost_per_independent_err)
            )
        }
        None => "No sampler has a trustworthy cost per independent configuration.".to_string(),
    };
    for p in payback {
        let unit = TimeUnit::for_values([p.training_seconds]);
        let training = unit.text(p.training_seconds);
        let sentence = match (&p.reason, p.break_even) {
            (None, Some(n)) => format!(
                " The flow's training ({training}) pays back for {} after {} independent \
                 configurations, against {}.",
                p.sampler,
                count_text(n),
                p.baseline
            ),
            (Some(reason), _) if reason.starts_with("never") => format!(
                " The flow's training ({training}) never pays back for {}: an independent \
                 configuration costs {}× as much as with {}.",
                p.sampler,
                ratio_text(p.cost / p.baseline_cost),
                p.baseline
            ),
            (Some(reason), _) => format!(
                " The payback of {} is {}.",
                p.sampler,
                reason.replacen(": ", " — ", 1)
            ),
            (None, None) => String::new(),
        };
        verdict.push_str(&sentence);
    }

    let pulls: Vec<&Pull> = comparison
        .iter()
        .filter_map(|c| c.largest_pairwise.as_ref())
        .collect();
    let pulls_compared = comparison.iter().map(|c| c.pairs).sum();
    let largest_pull = pulls
        .iter()
        .max_by(|a, b| a.pull.abs().total_cmp(&b.pull.abs()))
        .map(|p| (*p).clone());
    let samplers_agree = largest_pull
        .as_ref()
        .map(|p| p.pull.abs() < AGREEMENT_SIGMAS);
    let agreement = match (&largest_pull, samplers_agree) {
        (Some(p), Some(true)) => format!(
            "All samplers agree: the largest of {pulls_compared} pairwise pulls is {}σ \
             ({} of {} against {}).",
            sig(p.pull.abs(), 2),
            p.observable,
            p.a,
            p.b
        ),
        (Some(p), _) => format!(
            "The samplers disagree: {} of {} and {} differ by {}σ (the largest of \
             {pulls_compared} pairwise pulls; {AGREEMENT_SIGMAS}σ is the limit).",
            p.observable,
            p.a,
            p.b,
            sig(p.pull.abs(), 2)
        ),
        _ => "Agreement cannot be told: no two samplers have estimates with errors.".into(),
    };

    let reliability = reliability_text(samplers);
    Conclusion {
        cheapest: cheapest.map(|c| c.name.clone()),
        cost_ratios,
        largest_pull,
        pulls_compared,
        samplers_agree,
        verdict,
        agreement,
        reliability,
    }
}

/// The chains' verdicts in a sentence, naming the findings of those that are not reliable.
fn reliability_text(samplers: &[SamplerAnalysis]) -> String {
    let mut groups = Vec::new();
    for verdict in [Verdict::Reliable, Verdict::Warning, Verdict::Unreliable] {
        let members: Vec<String> = samplers
            .iter()
            .filter(|s| s.report.verdict == verdict)
            .map(|s| {
                let codes: Vec<&str> = s
                    .report
                    .diagnostics
                    .findings
                    .iter()
                    .map(|f| f.code.as_str())
                    .collect();
                if codes.is_empty() {
                    s.name.clone()
                } else {
                    format!("{}: {}", s.name, codes.join(", "))
                }
            })
            .collect();
        if !members.is_empty() {
            let what = match verdict {
                Verdict::Reliable => "reliable",
                Verdict::Warning => "with warnings",
                Verdict::Unreliable => "unreliable (errors undefined)",
            };
            groups.push(format!("{} {what} ({})", members.len(), members.join("; ")));
        }
    }
    if samplers
        .iter()
        .all(|s| s.report.verdict == Verdict::Reliable)
    {
        format!(
            "Chains: all {} reliable; no diagnostic found a problem.",
            samplers.len()
        )
    } else {
        format!("Chains: {}.", groups.join(", "))
    }
}

/// A cost ratio: two significant figures, more for ratios near 1.
fn ratio_text(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}")
    } else {
        sig(r, 2)
    }
}

/// A count such as a break-even number of configurations, to two significant figures
/// (`3.2·10⁴` from 10⁵ on).
pub(crate) fn count_text(n: f64) -> String {
    if n.is_finite() && n >= 1e5 {
        let k = n.log10().floor() as i32;
        format!("{}·10{}", sig(n / 10f64.powi(k), 2), superscript(k))
    } else {
        sig(n, 2)
    }
}

fn superscript(n: i32) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            d => ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'][d as usize - '0' as usize],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_combine_the_errors_in_quadrature() {
        assert!((pull((1.0, 0.3), (0.0, 0.4)) - 2.0).abs() < 1e-12);
        assert!(pull((1.0, 0.0), (0.0, 0.0)).is_nan());
        assert!(pull((f64::NAN, 1.0), (0.0, 1.0)).is_nan());
    }

    #[test]
    fn counts_read_as_powers_of_ten() {
        assert_eq!(count_text(320.0), "320");
        assert_eq!(count_text(32_000.0), "32000");
        assert_eq!(count_text(3.24e6), "3.2·10⁶");
    }
}
