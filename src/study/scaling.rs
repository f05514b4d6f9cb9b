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
use crate::stats::{PowerLawFit, nan_if_null, power_law_fit};

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
}
