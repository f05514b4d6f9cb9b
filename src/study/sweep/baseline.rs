//! The HMC baseline of a sweep: per size a trajectory tuned with the first seed, then one
//! chain per seed, their τ_int and cost, and the dynamical exponent z fitted over sizes.

use std::path::Path;

use super::spec::{HmcBaseline, LoadedSweep, SweepPoint};
use super::tables::{ChainCost, HmcBaselineResult, HmcRow, write_hmc};
use crate::control::{Observer, Prefixed, StopToken};
use crate::error::{Error, Result};
use crate::io::{read_json, write_json};
use crate::parallel::Collective;
use crate::run::sample_with;
use crate::stats::power_law_fit;

/// Runs the HMC baseline (reusing finished rows) and writes `hmc.csv` and `hmc.json`;
/// `None` when stopped.
pub(super) fn run_baseline(
    sweep: &LoadedSweep,
    baseline: &HmcBaseline,
    folder: &Path,
    ranks: &dyn Collective,
    stop: &StopToken,
    observer: &mut dyn Observer,
) -> Result<Option<HmcBaselineResult>> {
    // One chain per (size, seed); the sizes are dealt to the ranks in turn, so that every
    // seed of a size runs on the rank that tuned its trajectory.
    let spec = &sweep.spec;
    let mut units: Vec<SweepPoint> = Vec::new();
    for point in spec.points()? {
        if !units.iter().any(|u| (u.l, u.seed) == (point.l, point.seed)) {
            units.push(point);
        }
    }
    let mut sizes: Vec<usize> = units.iter().map(|u| u.l).collect();
    sizes.dedup();
    let unit_file = |point: &SweepPoint| {
        folder
            .join("points")
            .join(format!("hmc-L{}-s{}", point.l, point.seed))
            .join("hmc.json")
    };
    let mut stopped = false;
    let mut tuned_at: Vec<(usize, f64, usize)> = Vec::new();
    for (u, point) in units.iter().enumerate() {
        let place = format!("{}/{}", u + 1, units.len());
        let size_index = sizes.iter().position(|&l| l == point.l).unwrap_or(0);
        let done = unit_file(point);
        if size_index % ranks.size() != ranks.rank() || done.is_file() {
            continue;
        }
        let dir = done.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut chain = spec.baseline_spec(point, baseline)?;
        let key = format!("L{} seed {}", point.l, point.seed);
        // One trajectory per size (tuned with its first seed), so that the seeds of a size
        // are replicas of one algorithm.
        let label = format!("[{place}] hmc {key}");
        let mut unit_observer = Prefixed::new(observer, &label);
        let (tau, md_steps) = match tuned_at.iter().find(|t| t.0 == point.l) {
            Some(&(_, tau, md_steps)) => (tau, md_steps),
            None => {
                let ranked = ["abs_m", "m2", "phi2", "energy"].map(String::from);
                let tuned = match crate::study::tune_hmc(
                    &chain,
                    &sweep.registry,
                    &ranked,
                    &mut unit_observer,
                    stop,
                ) {
                    Err(Error::Interrupted(_)) => {
                        stopped = true;
                        break;
                    }
                    other => other?,
                };
                tuned_at.push((point.l, tuned.tau, tuned.md_steps));
                (tuned.tau, tuned.md_steps)
            }
        };
        chain.kernel.tau = tau;
        chain.kernel.md_steps = md_steps;
        let report = sample_with(&chain, &sweep.registry, &mut unit_observer, stop)?;
        if report.interrupted {
            stopped = true;
            break;
        }
        let get = |name: &str| {
            report
                .observables
                .get(name)
                .map_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN), |e| {
                    (e.mean, e.err, e.tau_int, e.tau_int_err)
                })
        };
        let (_, _, tau_abs_m, tau_abs_m_err) = get("abs_m");
        let (_, _, tau_chi, tau_chi_err) = get("chi");
        let (xi, xi_err, tau_xi, tau_xi_err) = get("xi_2nd");
        let cost = ChainCost::of(&chain, &report);
        let row = HmcRow {
            l: point.l,
            beta: point.beta,
            seed: point.seed,
            tau,
            md_steps,
            acceptance: report.acceptance,
            seconds_per_step: cost.seconds_per_step,
            xi,
            xi_err,
            tau_abs_m,
            tau_abs_m_err,
            tau_chi,
            tau_chi_err,
            tau_xi,
            tau_xi_err,
            cost_per_independent: cost.cost_per_independent,
            cost_per_independent_err: cost.cost_per_independent_err,
            verdict: report.verdict,
        };
        write_json(&done, &row)?;
    }
    if ranks.any(stopped)? {
        return Ok(None);
    }
    let rows = units
        .iter()
        .map(|u| read_json::<HmcRow>(&unit_file(u), "HMC baseline row"))
        .collect::<Result<Vec<_>>>()?;
    let usable: Vec<&HmcRow> = rows
        .iter()
        .filter(|r| r.xi.is_finite() && r.tau_abs_m.is_finite() && r.tau_abs_m_err > 0.0)
        .collect();
    let (z_fit, z_fit_failure) = if usable.len() < 2 {
        (
            None,
            Some("a power law needs rows at two or more sizes".to_string()),
        )
    } else {
        let x: Vec<f64> = usable.iter().map(|r| r.xi).collect();
        let y: Vec<f64> = usable.iter().map(|r| r.tau_abs_m).collect();
        let e: Vec<f64> = usable.iter().map(|r| r.tau_abs_m_err).collect();
        match power_law_fit(&x, &y, &e) {
            Ok(fit) => (Some(fit), None),
            Err(err) => (None, Some(err.to_string())),
        }
    };
    let result = HmcBaselineResult {
        rows,
        z_fit,
        z_fit_failure,
    };
    if !ranks.is_root() {
        return Ok(Some(result));
    }
    write_hmc(folder, &result)?;
    Ok(Some(result))
}
