//! Choosing an HMC trajectory by a pilot scan that adapts to the lattice: first the step
//! size ε for an acceptance in the window 0.6–0.9, then trajectories of lengths τ on a
//! doubling grid that reaches about half the lattice's extent (and is widened when the best
//! sits on its edge), each ranked by the force evaluations one effectively independent
//! configuration costs.

use serde::{Deserialize, Serialize};

use crate::control::{Observer, Part, StopToken};
use crate::error::{Error, Result};
use crate::rng::splitmix64;
use crate::run::{Registry, SampleSpec, sample_with};
use crate::stats::{Verdict, nan_if_null};

/// Measured trajectories of each pilot chain of the trajectory scan.
pub const PILOT_N: usize = 4_000;
/// Thermalisation trajectories of each pilot chain of the trajectory scan.
pub const PILOT_THERM: usize = 500;
/// Measured and thermalisation trajectories of each step-size probe.
pub const PROBE_N: usize = 300;
/// Thermalisation trajectories of each step-size probe.
pub const PROBE_THERM: usize = 100;
/// The acceptance window the step size is chosen for.
pub const ACCEPTANCE_WINDOW: (f64, f64) = (0.6, 0.9);
/// The step-size probes look for the largest step whose acceptance reaches this value.
pub const TARGET_ACCEPTANCE: f64 = 0.7;
/// The shortest trajectory of the scan.
pub const SHORTEST_TAU: f64 = 0.5;
/// How many times the trajectory grid may be widened past an edge.
pub const MAX_WIDENINGS: usize = 3;

/// One step-size probe: HMC with trajectory length 1 and step ε.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepProbe {
    /// The step size ε.
    pub step_size: f64,
    /// MD steps of the probe's trajectories (1/ε rounded).
    pub md_steps: usize,
    /// Its acceptance.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
}

/// One pilot chain of the scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PilotRun {
    /// Trajectory length τ.
    pub tau: f64,
    /// MD steps per trajectory.
    pub md_steps: usize,
    /// Acceptance.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// The largest τ_int among the observables ranked (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_max: f64,
    /// The observable with that τ_int.
    pub slowest: String,
    /// Force evaluations per effectively independent configuration, md_steps · 2τ_max
    /// (NaN when the chain's errors are undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub cost: f64,
    /// The chain's verdict.
    pub verdict: Verdict,
}

/// The outcome of [`tune_hmc`]: the chosen trajectory, every probe and pilot chain, and
/// why this trajectory was chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HmcTuning {
    /// The chosen trajectory length.
    pub tau: f64,
    /// The chosen MD steps.
    pub md_steps: usize,
    /// Every pilot chain of the trajectory scan, in scan order.
    pub pilots: Vec<PilotRun>,
    /// The step size ε the trajectories were built from (MD steps = τ/ε rounded).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub step_size: f64,
    /// The step-size probes, in the order they ran.
    #[serde(default)]
    pub probes: Vec<StepProbe>,
    /// How often the trajectory grid was widened because its best point sat on an edge.
    #[serde(default)]
    pub widened: usize,
    /// Why this trajectory, in a sentence (empty for older folders).
    #[serde(default)]
    pub reason: String,
}

fn nan() -> f64 {
    f64::NAN
}

/// Runs the pilot scan for `base`'s lattice, action, integrator and seed and picks the
/// trajectory with the fewest force evaluations per effectively independent configuration,
/// md_steps · 2 max τ_int over `observables`:
///
/// 1. the step size: short probes ([`PROBE_N`] trajectories of length 1, ε = 1/MD steps)
///    halve or double ε from ¼ until they bracket [`TARGET_ACCEPTANCE`], then bisect the
///    bracket geometrically down to 20 % (at most 12 probes); the largest ε whose
///    acceptance reaches the target is kept (inside [`ACCEPTANCE_WINDOW`]);
/// 2. the trajectory: a pilot chain of [`PILOT_N`] trajectories (after [`PILOT_THERM`]) for
///    every τ = ½, 1, 2, … up to about half the largest extent (at least 2), with
///    round(τ/ε) MD steps; when the cheapest usable chain (not unreliable, acceptance at
///    least 0.3; a reliable one if any is) has the longest (or shortest) τ of the grid, the
///    grid grows by one τ beyond that edge, up to [`MAX_WIDENINGS`] times.
///
/// Deterministic for a seed (no timing enters the choice). `observer` sees the stages
/// `step size` (in probes) and `pilot scan` (in trajectories); a stop ends the scan with
/// [`Error::Interrupted`].
pub fn tune_hmc(
    base: &SampleSpec,
    registry: &Registry,
    observables: &[String],
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<HmcTuning> {
    let (step_size, probes) = tune_step_size(base, registry, observer, stop)?;
    let extent = base.lattice.extents().iter().copied().max().unwrap_or(1) as f64;
    let longest = (extent / 2.0).max(2.0);
    let mut taus = Vec::new();
    let mut tau = SHORTEST_TAU;
    while tau <= longest * 1.000_001 {
        taus.push(tau);
        tau *= 2.0;
    }
    let per_pilot = (PILOT_N + PILOT_THERM) as u64;
    let mut pilots: Vec<PilotRun> = Vec::new();
    let mut widened = 0;
    let mut edge_note = String::new();
    loop {
        let todo: Vec<f64> = taus
            .iter()
            .copied()
            .filter(|t| !pilots.iter().any(|p| p.tau == *t))
            .collect();
        let stage = if widened == 0 {
            "pilot scan".to_string()
        } else {
            format!("pilot scan, widened ×{widened}")
        };
        observer.begin(&stage, per_pilot * todo.len() as u64, "trajectories");
        for (k, &tau) in todo.iter().enumerate() {
            let md_steps = ((tau / step_size).round() as usize).max(1);
            let pilot = pilot_chain(
                base,
                registry,
                observables,
                tau,
                md_steps,
                &mut Part::new(observer, k as u64 * per_pilot),
                stop,
            );
            match pilot {
                Ok(p) => pilots.push(p),
                Err(e) => {
                    observer.end("stopped");
                    return Err(e);
                }
            }
        }
        observer.end("done");
        let best = cheapest(&pilots).ok_or_else(|| {
            Error::param(
                "tune",
                "no HMC trajectory of the pilot scan gave a usable chain (acceptance ≥ 0.3, \
                 defined errors): set tau and md_steps by hand",
            )
        })?;
        let (lo, hi) = (taus[0], taus[taus.len() - 1]);
        if widened < MAX_WIDENINGS && best.tau == hi {
            taus.push(hi * 2.0);
            widened += 1;
            edge_note.push_str(&format!(
                " The best sat at the longest τ = {hi}, so τ = {} was added.",
                hi * 2.0
            ));
        } else if widened < MAX_WIDENINGS && best.tau == lo && lo > 0.1 {
            taus.insert(0, lo / 2.0);
            widened += 1;
            edge_note.push_str(&format!(
                " The best sat at the shortest τ = {lo}, so τ = {} was added.",
                lo / 2.0
            ));
        } else {
            if (best.tau == hi || best.tau == lo) && widened == MAX_WIDENINGS {
                edge_note.push_str(&format!(
                    " It still sits on the grid's edge after {MAX_WIDENINGS} widenings: a \
                     longer scan may find a cheaper trajectory."
                ));
            }
            break;
        }
    }
    let best = cheapest(&pilots)
        .cloned()
        .ok_or_else(|| Error::param("tune", "no usable HMC trajectory in the pilot scan"))?;
    pilots.sort_by(|a, b| a.tau.total_cmp(&b.tau));
    let reason = format!(
        "τ = {} with {} MD steps (ε = {:.4}, acceptance {:.3}): the fewest force evaluations \
         per independent configuration, {:.0} = {} × 2τ_int({}) with τ_int = {:.2}, among \
         {} trajectories from τ = {} to {}.{edge_note}",
        best.tau,
        best.md_steps,
        best.tau / best.md_steps as f64,
        best.acceptance,
        best.cost,
        best.md_steps,
        best.slowest,
        best.tau_max,
        pilots.len(),
        pilots.first().map_or(f64::NAN, |p| p.tau),
        pilots.last().map_or(f64::NAN, |p| p.tau),
    );
    Ok(HmcTuning {
        tau: best.tau,
        md_steps: best.md_steps,
        pilots,
        step_size,
        probes,
        widened,
        reason,
    })
}

/// The cheapest usable pilot chain: not unreliable, accepting at least 0.3, with a cost;
/// among them the reliable ones first (a pilot with a warning is usually too short for its
/// τ_int, which it then underestimates).
fn cheapest(pilots: &[PilotRun]) -> Option<&PilotRun> {
    let usable = || {
        pilots.iter().filter(|p| {
            p.verdict != Verdict::Unreliable && p.acceptance >= 0.3 && p.cost.is_finite()
        })
    };
    let by_cost =
        |a: &&PilotRun, b: &&PilotRun| a.cost.total_cmp(&b.cost).then(a.tau.total_cmp(&b.tau));
    usable()
        .filter(|p| p.verdict == Verdict::Reliable)
        .min_by(by_cost)
        .or_else(|| usable().min_by(by_cost))
}

/// Probes step sizes with trajectories of length 1 until the acceptance lies in the window.
fn tune_step_size(
    base: &SampleSpec,
    registry: &Registry,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<(f64, Vec<StepProbe>)> {
    const MAX_PROBES: usize = 12;
    let per_probe = (PROBE_N + PROBE_THERM) as u64;
    observer.begin("step size", per_probe * MAX_PROBES as u64, "trajectories");
    let mut probes: Vec<StepProbe> = Vec::new();
    let mut probe = |md_steps: usize, probes: &mut Vec<StepProbe>| -> Result<bool> {
        let mut spec = base.clone();
        spec.kernel.tau = 1.0;
        spec.kernel.md_steps = md_steps;
        spec.n = PROBE_N;
        spec.therm = PROBE_THERM;
        spec.thin = 1;
        spec.chains = 1;
        spec.seed = splitmix64(base.seed ^ (0x5354_4550 + probes.len() as u64));
        let offset = probes.len() as u64 * per_probe;
        let report = sample_with(&spec, registry, &mut Part::new(observer, offset), stop)?;
        if report.interrupted {
            return Err(Error::Interrupted(
                "stopped during the HMC step-size probes".into(),
            ));
        }
        probes.push(StepProbe {
            step_size: 1.0 / md_steps as f64,
            md_steps,
            acceptance: report.acceptance,
        });
        Ok(report.acceptance >= TARGET_ACCEPTANCE)
    };
    // Bracket: `good` accepts at least the target, `bad` (fewer steps) does not.
    let (mut good, mut bad): (Option<usize>, Option<usize>) = (None, None);
    let mut md_steps = 4usize;
    let outcome = (|| -> Result<()> {
        loop {
            if probe(md_steps, &mut probes)? {
                good = Some(md_steps);
                if md_steps == 1 || bad.is_some() {
                    break;
                }
                md_steps /= 2;
            } else {
                bad = Some(md_steps);
                if good.is_some() {
                    break;
                }
                md_steps = md_steps.saturating_mul(2);
            }
            if probes.len() >= MAX_PROBES {
                return Ok(());
            }
        }
        // Geometric bisection between the bracket's ends.
        while let (Some(g), Some(b)) = (good, bad) {
            if probes.len() >= MAX_PROBES || g <= b + 1 || g as f64 <= 1.2 * b as f64 {
                break;
            }
            let mid = ((g * b) as f64).sqrt().round() as usize;
            let mid = mid.clamp(b + 1, g - 1);
            if probe(mid, &mut probes)? {
                good = Some(mid);
            } else {
                bad = Some(mid);
            }
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        observer.end("stopped");
        return Err(e);
    }
    // The largest step reaching the target, or else the smallest step tried.
    let chosen = good.unwrap_or_else(|| probes.iter().map(|p| p.md_steps).max().unwrap_or(1));
    let accepted = probes
        .iter()
        .find(|p| p.md_steps == chosen)
        .map_or(f64::NAN, |p| p.acceptance);
    let step = 1.0 / chosen as f64;
    let (low, high) = ACCEPTANCE_WINDOW;
    let note = if (low..=high).contains(&accepted) {
        ""
    } else {
        " (outside the window)"
    };
    observer.end(&format!("ε = {step:.4}, acceptance {accepted:.3}{note}"));
    Ok((step, probes))
}

/// One pilot chain of the trajectory scan.
fn pilot_chain(
    base: &SampleSpec,
    registry: &Registry,
    observables: &[String],
    tau: f64,
    md_steps: usize,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<PilotRun> {
    let mut spec = base.clone();
    spec.kernel.tau = tau;
    spec.kernel.md_steps = md_steps;
    spec.n = PILOT_N;
    spec.therm = PILOT_THERM;
    spec.thin = 1;
    spec.chains = 1;
    let report = sample_with(&spec, registry, observer, stop)?;
    if report.interrupted {
        return Err(Error::Interrupted(
            "stopped during the HMC pilot scan".into(),
        ));
    }
    let (slowest, tau_max) = observables
        .iter()
        .filter_map(|name| report.observables.get(name).map(|e| (name, e.tau_int)))
        .fold((String::new(), f64::NAN), |(n, best), (name, t)| {
            if best.is_nan() || t > best {
                (name.clone(), t)
            } else {
                (n, best)
            }
        });
    Ok(PilotRun {
        tau,
        md_steps,
        acceptance: report.acceptance,
        cost: md_steps as f64 * 2.0 * tau_max,
        tau_max,
        slowest,
        verdict: report.verdict,
    })
}
