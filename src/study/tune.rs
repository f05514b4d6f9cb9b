//! Choosing an HMC trajectory by a pilot scan: short chains over a grid of trajectory
//! lengths τ and molecular-dynamics steps, ranked by the force evaluations one effectively
//! independent configuration costs.

use serde::{Deserialize, Serialize};

use crate::control::{Observer, Part, StopToken};
use crate::error::{Error, Result};
use crate::run::{Registry, SampleSpec, sample_with};
use crate::stats::{Verdict, nan_if_null};

/// The trajectory lengths τ of the scan.
pub const TUNE_TAUS: [f64; 4] = [0.5, 1.0, 2.0, 3.0];
/// The molecular-dynamics steps per trajectory of the scan.
pub const TUNE_MD_STEPS: [usize; 3] = [4, 8, 16];
/// Measured trajectories of each pilot chain.
pub const PILOT_N: usize = 4_000;
/// Thermalisation trajectories of each pilot chain.
pub const PILOT_THERM: usize = 500;

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

/// The outcome of [`tune_hmc`]: the chosen trajectory and every pilot chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HmcTuning {
    /// The chosen trajectory length.
    pub tau: f64,
    /// The chosen MD steps.
    pub md_steps: usize,
    /// Every pilot chain, in scan order.
    pub pilots: Vec<PilotRun>,
}

/// Runs a pilot chain of [`PILOT_N`] trajectories (after [`PILOT_THERM`]) for every
/// τ in [`TUNE_TAUS`] and MD step count in [`TUNE_MD_STEPS`], with `base`'s lattice, action,
/// integrator and seed, and picks the setting with the fewest force evaluations per
/// effectively independent configuration, md_steps · 2 max τ_int over `observables`, among
/// the chains that are not unreliable and accept at least 30 %. Deterministic for a seed
/// (no timing enters the choice). `observer` sees one stage, `pilot scan`, in
/// trajectories; a stop ends the scan with [`Error::Interrupted`].
pub fn tune_hmc(
    base: &SampleSpec,
    registry: &Registry,
    observables: &[String],
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<HmcTuning> {
    let per_pilot = PILOT_N + PILOT_THERM;
    let total = per_pilot * TUNE_TAUS.len() * TUNE_MD_STEPS.len();
    observer.begin("pilot scan", total as u64, "trajectories");
    let mut pilots = Vec::new();
    for &tau in &TUNE_TAUS {
        for &md_steps in &TUNE_MD_STEPS {
            let mut spec = base.clone();
            spec.kernel.tau = tau;
            spec.kernel.md_steps = md_steps;
            spec.n = PILOT_N;
            spec.therm = PILOT_THERM;
            spec.thin = 1;
            let offset = (pilots.len() * per_pilot) as u64;
            let report = sample_with(&spec, registry, &mut Part::new(observer, offset), stop)?;
            if report.interrupted {
                observer.end("stopped");
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
            pilots.push(PilotRun {
                tau,
                md_steps,
                acceptance: report.acceptance,
                cost: md_steps as f64 * 2.0 * tau_max,
                tau_max,
                slowest,
                verdict: report.verdict,
            });
        }
    }
    let best = pilots
        .iter()
        .filter(|p| p.verdict != Verdict::Unreliable && p.acceptance >= 0.3 && p.cost.is_finite())
        .min_by(|a, b| a.cost.total_cmp(&b.cost))
        .ok_or_else(|| {
            Error::param(
                "tune",
                "no HMC setting of the pilot scan gave a usable chain (acceptance ≥ 0.3, \
                 defined errors): set tau and md_steps by hand",
            )
        })?;
    observer.end(&format!("τ = {}, {} MD steps", best.tau, best.md_steps));
    Ok(HmcTuning {
        tau: best.tau,
        md_steps: best.md_steps,
        pilots: pilots.clone(),
    })
}
