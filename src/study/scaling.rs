//! The training-cost analysis of a sweep: acceptance and τ_rej of the trained flows against
//! the training budget |Φ_train| per lattice size (averaged over seeds), the budget at which
//! τ_rej reaches a target per size, and a power law of that budget in ξ.
//!
//! Between two budgets C_a < C_b of a size whose mean τ_rej brackets the target T, the
//! excess ε = τ_rej − ½ (τ_rej = ½ + Σ_t P(t consecutive rejections), so ε = 0 for a
//! perfect flow) is interpolated as a power of the budget, ln ε linear in ln C, and the
//! target budget is where ε = T − ½. Its error propagates the
//! errors of the two τ_rej values through that interpolation: the spread over seeds when a
//! budget was trained with several (the training's own variance, usually the larger part),
//! else the chain's Γ-method error. The budget in seconds is interpolated with the same
//! weights. The fit C_T(ξ) = A (ξ/ξ_ref)^a is [`power_law_fit`] over the sizes that reached
//! the target; ξ is the HMC baseline's ξ_2nd when the sweep ran one, else L/4 (the
//! reference line's ξ ≈ L/4).

use serde::{Deserialize, Serialize};

use super::sweep::SweepRow;
use crate::stats::{PowerLawFit, Verdict, nan_if_null, power_law_fit};

/// The τ_rej a sweep's training-cost analysis asks the flows to reach, unless its runcard
/// says otherwise.
pub const DEFAULT_TARGET_TAU_REJ: f64 = 2.0;

/// The trained flows of one size at one budget, averaged over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetPoint {
    /// L.
    pub l: usize,
    /// |Φ_train| = batch × iterations.
    pub configs_seen: u64,
    /// Seeds (and mixtures of batch, iterations and learning rate with this product)
    /// averaged.
    pub runs: usize,
    /// Mean acceptance of the flow chains.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// Its error: the spread over runs / √runs (NaN for one run).
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance_err: f64,
    /// Mean τ_rej.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej: f64,
    /// Its error: the spread over runs / √runs, or the chain's error for one run.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej_err: f64,
    /// Mean training seconds.
    pub train_seconds: f64,
}

/// The budget at which one size's flows reach the target τ_rej.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostToTarget {
    /// L.
    pub l: usize,
    /// The ξ the fit uses.
    pub xi: f64,
    /// Training configurations to reach the target.
    pub configs: f64,
    /// Its error.
    pub configs_err: f64,
    /// Training seconds to reach it.
    pub seconds: f64,
    /// Its error.
    pub seconds_err: f64,
}

/// The training-cost analysis of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingCost {
    /// The training method analysed (empty for a sweep without named methods).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// The target τ_rej.
    pub target_tau_rej: f64,
    /// Every (size, budget) averaged over seeds, by size then budget.
    pub budgets: Vec<BudgetPoint>,
    /// The sizes whose budgets bracket the target.
    pub costs: Vec<CostToTarget>,
    /// The sizes whose budgets do not, with the reason.
    pub unbracketed: Vec<(usize, String)>,
    /// C_T(ξ) = A (ξ/ξ_ref)^a over `costs`, when at least two sizes have one.
    pub fit: Option<PowerLawFit>,
    /// Why there is no fit.
    pub fit_failure: Option<String>,
}

/// Analyses the rows of a sweep: see the module documentation. `xi_of(L)` gives the ξ of
/// each size.
pub fn training_cost(rows: &[SweepRow], xi_of: &dyn Fn(usize) -> f64, target: f64) -> TrainingCost {
    let mut keys: Vec<(usize, u64)> = rows.iter().map(|r| (r.point.l, r.configs_seen)).collect();
    keys.sort_unstable();
    keys.dedup();
    let budgets: Vec<BudgetPoint> = keys
        .iter()
        .map(|&(l, configs_seen)| {
            let group: Vec<&SweepRow> = rows
                .iter()
                .filter(|r| r.point.l == l && r.configs_seen == configs_seen)
                .collect();
            let (acceptance, acceptance_err) = mean_and_error(group.iter().map(|r| r.acceptance));
            let (tau_rej, spread_err) = mean_and_error(group.iter().map(|r| r.tau_rej));
            let tau_rej_err = if group.len() > 1 {
                spread_err
            } else {
                group[0].tau_rej_err
            };
            BudgetPoint {
                l,
                configs_seen,
                runs: group.len(),
                acceptance,
                acceptance_err,
                tau_rej,
                tau_rej_err,
                train_seconds: group.iter().map(|r| r.train_seconds).sum::<f64>()
                    / group.len() as f64,
            }
        })
        .collect();
    let mut sizes: Vec<usize> = keys.iter().map(|k| k.0).collect();
    sizes.dedup();
    let (mut costs, mut unbracketed) = (Vec::new(), Vec::new());
    for l in sizes {
        let points: Vec<&BudgetPoint> = budgets
            .iter()
            .filter(|b| b.l == l && b.tau_rej.is_finite())
            .collect();
        match cost_at(&points, target) {
            Ok((configs, seconds, relative_err)) => costs.push(CostToTarget {
                l,
                xi: xi_of(l),
                configs,
                configs_err: configs * relative_err,
                seconds,
                seconds_err: seconds * relative_err,
            }),
            Err(reason) => unbracketed.push((l, reason)),
        }
    }
    let (fit, fit_failure) = if costs.len() < 2 {
        (
            None,
            Some(format!(
                "{} size(s) reached τ_rej = {target} between two budgets; a power law needs two",
                costs.len()
            )),
        )
    } else {
        let x: Vec<f64> = costs.iter().map(|c| c.xi).collect();
        let y: Vec<f64> = costs.iter().map(|c| c.configs).collect();
        let e: Vec<f64> = costs.iter().map(|c| c.configs_err).collect();
        match power_law_fit(&x, &y, &e) {
            Ok(fit) => (Some(fit), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    TrainingCost {
        method: String::new(),
        target_tau_rej: target,
        budgets,
        costs,
        unbracketed,
        fit,
        fit_failure,
    }
}

/// Mean and standard error of the mean (NaN for fewer than two values).
fn mean_and_error(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = values.collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// τ_rej of a chain without correlations (every proposal accepted): the limit of a perfect
/// flow.
const UNCORRELATED_TAU: f64 = 0.5;

/// The budget (configurations, seconds, relative error) at which the τ_rej of `points`
/// (one size, sorted by budget) reaches `target`, or why it cannot be told.
fn cost_at(points: &[&BudgetPoint], target: f64) -> Result<(f64, f64, f64), String> {
    let excess = |tau: f64| (tau - UNCORRELATED_TAU).max(1e-6).ln();
    let reached = points.iter().position(|p| p.tau_rej <= target);
    let b = match reached {
        None => {
            return Err(match points.last() {
                Some(p) => format!(
                    "not reached: τ_rej = {:.3} at the largest budget, {} configurations",
                    p.tau_rej, p.configs_seen
                ),
                None => "no finite τ_rej".to_string(),
            });
        }
        Some(0) => {
            return Err(format!(
                "reached already at the smallest budget, {} configurations (τ_rej = {:.3}): \
                 smaller budgets would bracket it",
                points[0].configs_seen, points[0].tau_rej
            ));
        }
        Some(b) => b,
    };
    let (pa, pb) = (points[b - 1], points[b]);
    let (xa, xb) = ((pa.configs_seen as f64).ln(), (pb.configs_seen as f64).ln());
    let (ya, yb, yt) = (excess(pa.tau_rej), excess(pb.tau_rej), excess(target));
    if yb >= ya {
        return Err(format!(
            "τ_rej does not fall between {} and {} configurations",
            pa.configs_seen, pb.configs_seen
        ));
    }
    let s = (xb - xa) / (yb - ya);
    let w = (yt - ya) / (yb - ya);
    let xt = xa + (yt - ya) * s;
    // δ ln ε = δτ / (τ − ½); a missing error counts as none.
    let dy = |p: &BudgetPoint| {
        let e = p.tau_rej_err / (p.tau_rej - UNCORRELATED_TAU).max(1e-6);
        if e.is_finite() { e } else { 0.0 }
    };
    let dxa = s * (yt - yb) / (yb - ya) * dy(pa);
    let dxb = -s * (yt - ya) / (yb - ya) * dy(pb);
    let relative_err = (dxa * dxa + dxb * dxb).sqrt();
    let seconds =
        ((1.0 - w) * pa.train_seconds.max(1e-12).ln() + w * pb.train_seconds.max(1e-12).ln()).exp();
    Ok((xt.exp(), seconds, relative_err))
}

/// One kernel at one size in a sweep's sampler comparison: the points of that size at its
/// largest training budget, averaged over seeds, against the HMC baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerAtSize {
    /// The kernel expression.
    pub kernel: String,
    /// L.
    pub l: usize,
    /// |Φ_train| of the flows compared (the size's largest budget).
    pub configs_seen: u64,
    /// The points averaged.
    pub runs: usize,
    /// Seconds per independent configuration, sampling alone.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost: f64,
    /// Its error (the chains' errors combined).
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_err: f64,
    /// Mean training seconds of the flows.
    pub training_seconds: f64,
    /// With the training spread over `amortise_over` independent configurations: c + T/N.
    #[serde(deserialize_with = "nan_if_null")]
    pub amortised_cost: f64,
    /// Tuned HMC's seconds per independent configuration at this size (mean over seeds).
    #[serde(deserialize_with = "nan_if_null")]
    pub hmc_cost: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub hmc_cost_err: f64,
}

/// Where a kernel's cost ratio to HMC crosses 1, from a power law of the ratio in L.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crossover {
    /// The kernel expression.
    pub kernel: String,
    /// Whether the ratio is of the amortised cost (else of the sampling cost alone).
    pub amortised: bool,
    /// r(L) = A (L/L_ref)^b fitted to the ratios c/c_HMC.
    pub fit: Option<PowerLawFit>,
    /// L* where the fitted ratio is 1.
    pub crossover_l: Option<f64>,
    /// Its error (linear propagation of the fit's errors and correlation).
    pub crossover_l_err: Option<f64>,
    /// The finding in words.
    pub finding: String,
}

/// The sampler comparison of a sweep: every kernel run on the points against the HMC
/// baseline, per size, and the extrapolated sizes where they cross.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerComparison {
    /// The training method of the flows compared (empty for a sweep without named
    /// methods).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// N of the amortised cost c + T/N.
    pub amortise_over: f64,
    /// Per kernel and size.
    pub sizes: Vec<SamplerAtSize>,
    /// Per kernel, sampling alone and amortised.
    pub crossovers: Vec<Crossover>,
}

/// Mean of values and the error of the mean from their own errors, √(Σσ²)/n.
fn mean_with_errors(values: &[(f64, f64)]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|v| v.0).sum::<f64>() / n;
    let err = values.iter().map(|v| v.1 * v.1).sum::<f64>().sqrt() / n;
    (mean, err)
}

/// Compares every kernel of the sweep's points (the flow chain and `sample.kernels`) with
/// the HMC baseline `hmc`: per size, the points at the size's largest training budget,
/// averaged over seeds; then, per kernel and for the sampling cost alone and the cost with
/// the training amortised over `amortise_over` independent configurations, the ratio
/// r(L) = c/c_HMC is fitted by a power law A (L/L_ref)^b and solved for r(L*) = 1,
/// L* = L_ref A^{−1/b}, with the error of ln L* = ln L_ref − ln A / b propagated from
/// those of A and b and their correlation.
pub fn sampler_comparison(
    rows: &[SweepRow],
    hmc: &[super::HmcRow],
    amortise_over: f64,
) -> SamplerComparison {
    let mut sizes_l: Vec<usize> = rows.iter().map(|r| r.point.l).collect();
    sizes_l.sort_unstable();
    sizes_l.dedup();
    let mut kernels: Vec<String> = Vec::new();
    for r in rows {
        for c in &r.samplers {
            if !kernels.contains(&c.kernel) {
                kernels.push(c.kernel.clone());
            }
        }
    }
    let mut sizes = Vec::new();
    for &l in &sizes_l {
        let hmc_rows: Vec<(f64, f64)> = hmc
            .iter()
            .filter(|h| h.l == l && h.cost_per_independent.is_finite())
            .map(|h| (h.cost_per_independent, h.cost_per_independent_err))
            .collect();
        let (hmc_cost, hmc_cost_err) = if hmc_rows.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            mean_with_errors(&hmc_rows)
        };
        let at_l: Vec<&SweepRow> = rows.iter().filter(|r| r.point.l == l).collect();
        let Some(budget) = at_l.iter().map(|r| r.configs_seen).max() else {
            continue;
        };
        let best: Vec<&SweepRow> = at_l
            .into_iter()
            .filter(|r| r.configs_seen == budget)
            .collect();
        for kernel in &kernels {
            let costs: Vec<(f64, f64, f64)> = best
                .iter()
                .filter_map(|r| {
                    r.samplers
                        .iter()
                        .find(|c| &c.kernel == kernel && c.verdict != Verdict::Unreliable)
                        .map(|c| {
                            (
                                c.cost_per_independent,
                                c.cost_per_independent_err,
                                r.train_seconds,
                            )
                        })
                })
                .filter(|c| c.0.is_finite())
                .collect();
            if costs.is_empty() {
                continue;
            }
            let (cost, cost_err) =
                mean_with_errors(&costs.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>());
            let training_seconds = costs.iter().map(|c| c.2).sum::<f64>() / costs.len() as f64;
            sizes.push(SamplerAtSize {
                kernel: kernel.clone(),
                l,
                configs_seen: budget,
                runs: costs.len(),
                cost,
                cost_err,
                training_seconds,
                amortised_cost: cost + training_seconds / amortise_over,
                hmc_cost,
                hmc_cost_err,
            });
        }
    }
    let mut crossovers = Vec::new();
    for kernel in &kernels {
        for amortised in [false, true] {
            let points: Vec<(f64, f64, f64)> = sizes
                .iter()
                .filter(|s| &s.kernel == kernel && s.hmc_cost.is_finite() && s.cost_err > 0.0)
                .map(|s| {
                    let c = if amortised { s.amortised_cost } else { s.cost };
                    let r = c / s.hmc_cost;
                    let rel =
                        ((s.cost_err / c).powi(2) + (s.hmc_cost_err / s.hmc_cost).powi(2)).sqrt();
                    (s.l as f64, r, r * rel)
                })
                .collect();
            crossovers.push(crossover(kernel, amortised, &points));
        }
    }
    SamplerComparison {
        method: String::new(),
        amortise_over,
        sizes,
        crossovers,
    }
}

/// The crossover of one kernel from its (L, ratio, error) points.
fn crossover(kernel: &str, amortised: bool, points: &[(f64, f64, f64)]) -> Crossover {
    let none = |finding: String| Crossover {
        kernel: kernel.to_string(),
        amortised,
        fit: None,
        crossover_l: None,
        crossover_l_err: None,
        finding,
    };
    let x: Vec<f64> = points.iter().map(|p| p.0).collect();
    let y: Vec<f64> = points.iter().map(|p| p.1).collect();
    let e: Vec<f64> = points.iter().map(|p| p.2).collect();
    if points.len() < 2 {
        return none("no extrapolation: the ratio to HMC is known at fewer than two sizes".into());
    }
    let fit = match power_law_fit(&x, &y, &e) {
        Ok(fit) => fit,
        Err(err) => return none(format!("no extrapolation: {err}")),
    };
    let (a, b) = (fit.amplitude, fit.exponent);
    let growth = format!("c/c_HMC ∝ L^({b:.2} ± {:.2})", fit.exponent_err);
    if a.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || b.abs() < 2.0 * fit.exponent_err
    {
        return Crossover {
            fit: Some(fit),
            ..none(format!(
                "no crossover extrapolated: {growth}, an exponent within 2σ of 0"
            ))
        };
    }
    let ln_l = fit.x_ref.ln() - a.ln() / b;
    let d_a = -1.0 / (a * b);
    let d_b = a.ln() / (b * b);
    let (s_a, s_b) = (fit.amplitude_err, fit.exponent_err);
    let var =
        (d_a * s_a).powi(2) + (d_b * s_b).powi(2) + 2.0 * d_a * d_b * fit.correlation * s_a * s_b;
    let l_star = ln_l.exp();
    let l_err = l_star * var.max(0.0).sqrt();
    let (lo, hi) = x.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let side = if b < 0.0 {
        "cheaper than HMC beyond"
    } else {
        "cheaper than HMC below"
    };
    // Beyond a factor of 2 from the sizes measured the power law is no prediction.
    let place = if l_star > 2.0 * hi || l_star < lo / 2.0 {
        format!(
            "far outside the sizes measured, L = {lo}…{hi}: the fit gives the trend, not a size"
        )
    } else if l_star > hi {
        "extrapolated".to_string()
    } else if l_star < lo {
        "extrapolated below the sizes measured".to_string()
    } else {
        "within the sizes measured".to_string()
    };
    Crossover {
        kernel: kernel.to_string(),
        amortised,
        fit: Some(fit),
        crossover_l: Some(l_star),
        crossover_l_err: Some(l_err),
        finding: format!(
            "{growth}: {side} L* = {} ± {} ({place})",
            super::report::sig(l_star, 3),
            super::report::sig(l_err, 2)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Verdict;
    use crate::study::sweep::SweepPoint;

    /// A row whose τ_rej follows τ − ½ = (C0(L)/C)^0.7 with C0 = 1000 (L/4)^4.5 exactly.
    fn row(l: usize, configs: u64, seed: u64, wobble: f64) -> SweepRow {
        let c0 = 1000.0 * (l as f64 / 4.0).powf(4.5);
        let tau = 0.5 + (c0 / configs as f64).powf(0.7) * wobble;
        SweepRow {
            point: SweepPoint {
                l,
                beta: 0.5,
                lambda: 0.5,
                batch: 100,
                iterations: (configs / 100) as usize,
                lr: 0.01,
                seed,
                method: String::new(),
            },
            n_params: 10,
            configs_seen: configs,
            train_seconds: configs as f64 * 1e-4,
            acceptance: 1.0 / tau,
            ess: 0.5,
            tau_rej: tau,
            tau_rej_err: 0.02 * (tau - 0.5),
            tau_int_abs_m: tau,
            tau_int_abs_m_err: 0.1,
            longest_rejection_run: 3,
            verdict: Verdict::Reliable,
            samplers: Vec::new(),
        }
    }

    #[test]
    fn the_cost_exponent_of_exact_power_laws_is_recovered() {
        let mut rows = Vec::new();
        for l in [6, 8, 10, 12] {
            for k in 0..16 {
                rows.push(row(l, 1000 << k, 1, 1.0));
            }
        }
        let cost = training_cost(&rows, &|l| l as f64 / 4.0, 2.0);
        assert_eq!(cost.costs.len(), 4, "{:?}", cost.unbracketed);
        for c in &cost.costs {
            // τ = 2 where (C0/C)^0.7 = 3/2.
            let exact = 1000.0 * c.xi.powf(4.5) / 1.5f64.powf(1.0 / 0.7);
            assert!((c.configs / exact - 1.0).abs() < 1e-9, "{c:?}");
            // The seconds follow the budget (1e-4 s per configuration).
            assert!((c.seconds / (exact * 1e-4) - 1.0).abs() < 1e-9, "{c:?}");
            assert!(c.configs_err > 0.0 && c.configs_err < 0.1 * c.configs);
        }
        let fit = cost.fit.unwrap();
        assert!((fit.exponent - 4.5).abs() < 1e-6, "{fit:?}");
        assert!(fit.exponent_err > 0.0 && fit.exponent_err < 0.2, "{fit:?}");
    }

    #[test]
    fn seeds_are_averaged_and_sizes_without_a_bracket_say_why() {
        let mut rows = Vec::new();
        for k in 0..6 {
            rows.push(row(8, 1000 << k, 1, 0.9));
            rows.push(row(8, 1000 << k, 2, 1.1));
        }
        // L = 16 never gets there; L = 4 is there from the start.
        rows.push(row(16, 1000, 1, 1.0));
        rows.push(row(16, 2000, 1, 1.0));
        rows.push(row(4, 1_000_000, 1, 1.0));
        rows.push(row(4, 2_000_000, 1, 1.0));
        let cost = training_cost(&rows, &|l| l as f64 / 4.0, 2.0);
        let point = cost
            .budgets
            .iter()
            .find(|b| b.l == 8 && b.configs_seen == 4000)
            .unwrap();
        assert_eq!(point.runs, 2);
        let exact = 0.5 + (1000.0 * 2f64.powf(4.5) / 4000.0).powf(0.7);
        assert!((point.tau_rej - exact).abs() < 1e-9);
        // Two seeds at ±10 % of the excess: spread 0.2 (τ − ½)/√2 … over √2.
        assert!((point.tau_rej_err - 0.1 * (exact - 0.5)).abs() < 1e-9);
        assert_eq!(cost.costs.len(), 1);
        assert_eq!(cost.costs[0].l, 8);
        let reasons: Vec<&str> = cost.unbracketed.iter().map(|u| u.1.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("reached already")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.starts_with("not reached")),
            "{reasons:?}"
        );
        assert!(cost.fit.is_none() && cost.fit_failure.is_some());
    }

    /// Ratio points r(L) = A (L/8)^b with relative error `rel`, optionally perturbed.
    fn ratios(a: f64, b: f64, rel: f64, noise: &[f64]) -> Vec<(f64, f64, f64)> {
        [6.0, 8.0, 10.0, 12.0]
            .iter()
            .zip(noise)
            .map(|(&l, &z)| {
                let r = a * (l / 8.0f64).powf(b);
                (l, r * (1.0 + rel * z), r * rel)
            })
            .collect()
    }

    #[test]
    fn a_crossover_far_from_the_sizes_measured_is_called_so() {
        // r = 2 (L/8)^-0.2 crosses 1 at L = 8 · 2^5 = 256, far beyond L = 6…12.
        let far = crossover("flow", false, &ratios(2.0, -0.2, 0.01, &[0.0; 4]));
        assert!((far.crossover_l.unwrap() - 256.0).abs() < 1e-6 * 256.0);
        assert!(far.finding.contains("far outside"), "{}", far.finding);
        // A rising ratio above 1 crosses at a tiny L.
        let below = crossover("flow", false, &ratios(2.0, 0.5, 0.01, &[0.0; 4]));
        assert!(below.crossover_l.unwrap() < 3.0);
        assert!(below.finding.contains("far outside"), "{}", below.finding);
        // Within a factor of 2 it is an extrapolation.
        let near = crossover("flow", false, &ratios(2.0, -1.5, 0.01, &[0.0; 4]));
        assert!(!near.finding.contains("far outside"), "{}", near.finding);
    }

    #[test]
    fn the_crossover_of_an_exact_power_law_is_recovered_with_a_correct_error() {
        use rand_distr::{Distribution, StandardNormal};
        // r = 2 (L/8)^-1.5 crosses 1 at L* = 8 · 2^(1/1.5).
        let (a, b, rel) = (2.0, -1.5, 0.05);
        let exact = 8.0 * 2.0f64.powf(1.0 / 1.5);
        let x = crossover("flow", false, &ratios(a, b, rel, &[0.0; 4]));
        let l_star = x.crossover_l.unwrap();
        assert!((l_star - exact).abs() < 1e-6 * exact, "{l_star} vs {exact}");
        assert!(x.finding.contains("beyond"), "{}", x.finding);
        assert!(x.finding.contains("extrapolated"), "{}", x.finding);
        let err = x.crossover_l_err.unwrap();
        // The propagated error against the spread of L* over data drawn with those errors.
        let mut rng = crate::rng_from_seed(5);
        let draws: Vec<f64> = (0..400)
            .map(|_| {
                let noise: Vec<f64> = (0..4).map(|_| StandardNormal.sample(&mut rng)).collect();
                crossover("flow", false, &ratios(a, b, rel, &noise))
                    .crossover_l
                    .unwrap()
            })
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let spread = (draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>()
            / (draws.len() - 1) as f64)
            .sqrt();
        // The spread of 400 draws is known to about 1/√800 ≈ 3.5 %; the linear
        // propagation is exact only to first order in the 5 % errors.
        assert!(
            (err / spread - 1.0).abs() < 0.15,
            "propagated {err}, spread {spread}"
        );
    }

    #[test]
    fn a_ratio_that_grows_has_its_crossover_below() {
        let x = crossover("flow+local", true, &ratios(0.5, 2.0, 0.02, &[0.0; 4]));
        let exact = 8.0 * 2.0f64.powf(0.5);
        assert!((x.crossover_l.unwrap() - exact).abs() < 1e-6 * exact);
        assert!(x.finding.contains("below L*"), "{}", x.finding);
        assert!(
            x.finding.contains("within the sizes measured"),
            "{}",
            x.finding
        );
        let one = crossover("flow", false, &ratios(0.5, 2.0, 0.02, &[0.0; 4])[..1]);
        assert!(one.crossover_l.is_none() && one.finding.contains("fewer than two"));
    }
}
