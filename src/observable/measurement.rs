//! A ready-made measurement set for scalar field ensembles: records the standard
//! per-configuration observables of a chain (plus any user observables) and turns their
//! series into named Γ-method estimates, primary and derived (χ, Binder cumulant, ξ three
//! ways), for one chain or for independent replicas.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Observable;
use super::correlator::{LowestMomentumCorrelator, ZeroMomentumCorrelator};
use super::energy::ising_energy;
use super::estimators::{
    binder_cumulant, susceptibility, xi_cosh_fit, xi_effective, xi_second_moment,
};
use super::field::{field_squared, magnetisation};
use crate::error::{Error, Result};
use crate::lattice::Lattice;
use crate::stats::{
    GammaEstimate, MIN_REPLICA_LEN, gamma_method_derived_replicas, gamma_method_replicas,
};

/// Positions of the fixed series.
const M: usize = 0;
const ABS_M: usize = 1;
const M2: usize = 2;
const M4: usize = 3;
const PHI2: usize = 4;
const ENERGY: usize = 5;
const FIXED: [&str; 6] = ["m", "abs_m", "m2", "m4", "phi2", "energy"];

/// The series of one chain: m, |m|, m², m⁴, ⟨φ²⟩, the Ising energy, G̃(q̂_μ) for each
/// direction (`"G_p_min[μ]"`), Ĝ(t) for t = 0..L (`"G_hat[t]"`, averaged over directions
/// on a hypercubic lattice, along direction 0 otherwise), then any added observables.
///
/// ```
/// use latflow::Lattice;
/// use latflow::observable::Measurements;
/// use rand::RngExt;
///
/// let lattice = Lattice::new(&[4, 4])?;
/// let mut measurements = Measurements::new(&lattice);
/// let mut rng = latflow::rng_from_seed(3);
/// for _ in 0..100 {
///     let phi: Vec<f64> = (0..16).map(|_| rng.random::<f64>() - 0.5).collect();
///     measurements.record(&phi)?;
/// }
/// let summary = measurements.summary()?;
/// let chi = summary.get("chi").expect("χ is always estimated");
/// assert!(chi.err > 0.0);
/// # Ok::<(), latflow::Error>(())
/// ```
pub struct Measurements {
    lattice: Lattice,
    zero_momentum: ZeroMomentumCorrelator,
    lowest_momentum: LowestMomentumCorrelator,
    extra: Vec<Box<dyn Observable>>,
    names: Vec<String>,
    series: Vec<Vec<f64>>,
    scratch: Vec<f64>,
    /// One configuration's values of every series, reused by [`Measurements::record`].
    values: Vec<f64>,
    replayed: bool,
}

impl Measurements {
    /// An empty measurement set for configurations on `lattice`.
    pub fn new(lattice: &Lattice) -> Self {
        let zero_momentum = ZeroMomentumCorrelator::new(lattice)
            .or_else(|_| ZeroMomentumCorrelator::along(lattice, 0))
            .expect("direction 0 exists on every lattice");
        let mut names: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
        names.extend((0..lattice.dim()).map(|mu| format!("G_p_min[{mu}]")));
        names.extend((0..zero_momentum.extent()).map(|t| format!("G_hat[{t}]")));
        let series = vec![Vec::new(); names.len()];
        Measurements {
            lattice: lattice.clone(),
            lowest_momentum: LowestMomentumCorrelator::new(lattice),
            zero_momentum,
            extra: Vec::new(),
            names,
            series,
            scratch: Vec::new(),
            values: Vec::new(),
            replayed: false,
        }
    }

    /// Adds a user observable (each component becomes a series, `"name"` or `"name[i]"`);
    /// only before the first configuration is recorded.
    pub fn add(&mut self, observable: Box<dyn Observable>) -> Result<()> {
        if !self.is_empty() {
            return Err(Error::param(
                "observable",
                "observables must be added before the first measurement",
            ));
        }
        let k = observable.components();
        let name = observable.name().to_string();
        if k == 1 {
            self.names.push(name);
        } else {
            self.names.extend((0..k).map(|i| format!("{name}[{i}]")));
        }
        self.series.extend((0..k).map(|_| Vec::new()));
        self.extra.push(observable);
        Ok(())
    }

    /// A measurement set replayed from stored series: `names` and `series` as
    /// [`Measurements::names`] and [`Measurements::series`] gave them for a run on `lattice`
    /// (the fixed series first, then any added observables). It can be summarised, cut
    /// ([`Measurements::skip`]) and read, not extended: [`Measurements::record`] refuses.
    pub fn from_series(
        lattice: &Lattice,
        names: Vec<String>,
        series: Vec<Vec<f64>>,
    ) -> Result<Self> {
        let mut replayed = Measurements::new(lattice);
        let fixed = replayed.names.len();
        if names.len() < fixed || names[..fixed] != replayed.names[..] {
            return Err(Error::Incompatible(format!(
                "stored series do not begin with the {fixed} standard series of a {lattice} lattice ({})",
                replayed.names.join(", ")
            )));
        }
        if names.len() != series.len() {
            return Err(Error::Shape(format!(
                "{} series names for {} series",
                names.len(),
                series.len()
            )));
        }
        let n = series.first().map_or(0, Vec::len);
        if let Some(k) = series.iter().position(|s| s.len() != n) {
            return Err(Error::Shape(format!(
                "series `{}` has {} values, `{}` has {n}",
                names[k],
                series[k].len(),
                names[0]
            )));
        }
        if series.iter().flatten().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite("stored series".into()));
        }
        replayed.names = names;
        replayed.series = series;
        replayed.replayed = true;
        Ok(replayed)
    }

    /// Drops the first `k` measurements of every series (e.g. a longer thermalisation cut).
    pub fn skip(&mut self, k: usize) {
        for s in &mut self.series {
            s.drain(..k.min(s.len()));
        }
    }

    /// Measures one configuration.
    pub fn record(&mut self, phi: &[f64]) -> Result<()> {
        let mut values = std::mem::take(&mut self.values);
        let result = self.measure_into(phi, &mut values);
        if result.is_ok() {
            for (series, &value) in self.series.iter_mut().zip(&values) {
                series.push(value);
            }
        }
        self.values = values;
        result
    }

    /// The value of every series (in the order of [`Measurements::names`]) for one
    /// configuration, written to `out` (resized to the number of series) without recording
    /// it.
    pub fn measure_into(&mut self, phi: &[f64], out: &mut Vec<f64>) -> Result<()> {
        if self.replayed {
            return Err(Error::param(
                "measurements",
                "a measurement set replayed from stored series cannot record new configurations",
            ));
        }
        let volume = self.lattice.volume();
        if phi.len() != volume {
            return Err(Error::Shape(format!(
                "field has {} values, lattice has {volume} sites",
                phi.len()
            )));
        }
        if phi.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite("measured field".into()));
        }
        let m = magnetisation(phi);
        out.clear();
        out.extend([
            m,
            m.abs(),
            m * m,
            m.powi(4),
            field_squared(phi),
            ising_energy(&self.lattice, phi),
        ]);
        let correlators: [&mut dyn Observable; 2] =
            [&mut self.lowest_momentum, &mut self.zero_momentum];
        for observable in correlators
            .into_iter()
            .chain(self.extra.iter_mut().map(|b| &mut **b))
        {
            let k = observable.components();
            self.scratch.resize(k, 0.0);
            observable.measure(phi, &mut self.scratch);
            out.extend_from_slice(&self.scratch);
        }
        Ok(())
    }

    /// Number of configurations recorded.
    pub fn len(&self) -> usize {
        self.series[0].len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of all series, in recording order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The recorded series of one name.
    pub fn series(&self, name: &str) -> Option<&[f64]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|k| self.series[k].as_slice())
    }

    /// Γ-method estimates of this chain (see [`Measurements::summarise`]).
    pub fn summary(&self) -> Result<Summary> {
        Self::summarise(&[self])
    }

    /// Γ-method estimates from independent replicas measured alike: the primary
    /// quantities `phi2`, `m`, `abs_m`, `m2`, `energy`, every added observable and
    /// `m_positive` (the fraction of configurations with m > 0, ½ for a Z2-symmetric
    /// ensemble: a lost mode shows as 0 or 1), and the derived `chi` (|Λ|(⟨m²⟩ − ⟨m⟩²)),
    /// `binder`, `xi_2nd`, `xi_eff[t]` for 1 ≤ t < L/2, `xi_eff` (the value at
    /// t = max(1, ⌊L/4⌋)) and `xi_fit` (cosh fit of Ĝ_conn on max(1, ⌊L/4⌋)..=⌊L/2⌋).
    /// A quantity whose analysis fails (e.g. a noisy arcosh argument below 1) is listed
    /// under [`Summary::failures`]; too few measurements are an error.
    pub fn summarise(replicas: &[&Measurements]) -> Result<Summary> {
        let first = replicas
            .first()
            .ok_or_else(|| Error::param("replicas", "no measurements given"))?;
        if let Some(r) = replicas
            .iter()
            .position(|m| m.lattice != first.lattice || m.names != first.names)
        {
            return Err(Error::Incompatible(format!(
                "replica {r} measured other observables or another lattice than replica 0"
            )));
        }
        if let Some(r) = replicas.iter().position(|m| m.len() < MIN_REPLICA_LEN) {
            return Err(Error::param(
                "measurements",
                format!(
                    "replica {r} has {} configurations, at least {MIN_REPLICA_LEN} are needed",
                    replicas[r].len()
                ),
            ));
        }
        let volume = first.lattice.volume();
        let d = first.lattice.dim();
        let extent = first.zero_momentum.extent();
        let gq = FIXED.len();
        let g_hat = gq + d;
        let mut summary = Summary::default();

        let primary: Vec<usize> = [PHI2, M, ABS_M, M2, ENERGY]
            .into_iter()
            .chain(g_hat + extent..first.names.len())
            .collect();
        for k in primary {
            let views: Vec<&[f64]> = replicas.iter().map(|m| m.series[k].as_slice()).collect();
            summary.push(&first.names[k], gamma_method_replicas(&views));
        }
        // The fraction of configurations with m > 0: ½ unless a Z2 mode is missed.
        let positive: Vec<Vec<f64>> = replicas
            .iter()
            .map(|m| {
                m.series[M]
                    .iter()
                    .map(|&x| if x > 0.0 { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let views: Vec<&[f64]> = positive.iter().map(Vec::as_slice).collect();
        summary.push("m_positive", gamma_method_replicas(&views));

        let derived = |indices: &[usize], f: &dyn Fn(&[f64]) -> f64| {
            let per_replica: Vec<Vec<&[f64]>> = replicas
                .iter()
                .map(|m| indices.iter().map(|&k| m.series[k].as_slice()).collect())
                .collect();
            let views: Vec<&[&[f64]]> = per_replica.iter().map(Vec::as_slice).collect();
            gamma_method_derived_replicas(&views, f)
        };
        summary.push("chi", derived(&[M, M2], &susceptibility(volume)));
        summary.push("binder", derived(&[M2, M4], &binder_cumulant));
        let mut indices = vec![M, M2];
        indices.extend(gq..gq + d);
        summary.push(
            "xi_2nd",
            derived(&indices, &xi_second_moment(&first.lattice)),
        );

        let xi_eff = xi_effective(volume, extent);
        let t_star = (extent / 4).max(1);
        for t in 1..extent.div_ceil(2) {
            let result = derived(&[M, g_hat + t - 1, g_hat + t, g_hat + t + 1], &xi_eff);
            let name = format!("xi_eff[{t}]");
            if t == t_star {
                summary.push_all(&["xi_eff", &name], result);
            } else {
                summary.push_all(&[&name], result);
            }
        }
        let (t_min, t_max) = (t_star, extent / 2);
        if t_min < t_max {
            let mut indices = vec![M];
            indices.extend(g_hat..g_hat + extent);
            let fit = xi_cosh_fit(volume, extent, t_min, t_max);
            summary.push("xi_fit", derived(&indices, &fit));
        }
        Ok(summary)
    }
}

/// A named Γ-method estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedEstimate {
    /// The quantity's name.
    pub name: String,
    /// Its estimate.
    pub estimate: GammaEstimate,
}

/// A quantity whose analysis failed, with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The quantity's name.
    pub name: String,
    /// Why it could not be estimated.
    pub reason: String,
}

/// The named estimates of an ensemble, in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The estimates that succeeded.
    pub estimates: Vec<NamedEstimate>,
    /// The quantities that could not be estimated.
    pub failures: Vec<Failure>,
}

impl Summary {
    /// The estimate of `name`, if it succeeded.
    pub fn get(&self, name: &str) -> Option<&GammaEstimate> {
        self.estimates
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.estimate)
    }

    fn push(&mut self, name: &str, result: Result<GammaEstimate>) {
        self.push_all(&[name], result);
    }

    /// Records one result under several names.
    fn push_all(&mut self, names: &[&str], result: Result<GammaEstimate>) {
        for name in names {
            let name = name.to_string();
            match &result {
                Ok(estimate) => self.estimates.push(NamedEstimate {
                    name,
                    estimate: *estimate,
                }),
                Err(e) => self.failures.push(Failure {
                    name,
                    reason: e.to_string(),
                }),
            }
        }
    }
}

impl fmt::Display for Summary {
    /// One line per quantity: name, mean ± error, τ_int ± error and the window; then the
    /// failures with their reasons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .estimates
            .iter()
            .map(|e| e.name.len())
            .chain(self.failures.iter().map(|e| e.name.len()))
            .max()
            .unwrap_or(0);
        for NamedEstimate { name, estimate: e } in &self.estimates {
            writeln!(
                f,
                "{name:<width$}  {:>14.8e} ± {:<10.3e}  τ_int {:>8.3} ± {:<7.3}  W {}{}",
                e.mean,
                e.err,
                e.tau_int,
                e.tau_int_err,
                e.window,
                if e.window_converged {
                    ""
                } else {
                    " (window not converged)"
                }
            )?;
        }
        for Failure { name, reason } in &self.failures {
            writeln!(f, "{name:<width$}  failed: {reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observable::TwoPoint;

    fn field(volume: usize, k: usize) -> Vec<f64> {
        (0..volume)
            .map(|x| ((x * 7919 + k * 104_729) as f64 * 0.618).sin())
            .collect()
    }

    #[test]
    fn added_observables_become_named_series_and_estimates() {
        let lattice = Lattice::new(&[4, 2]).unwrap();
        let mut m = Measurements::new(&lattice);
        m.add(Box::new(TwoPoint::momentum(&lattice))).unwrap();
        for k in 0..50 {
            m.record(&field(8, k)).unwrap();
        }
        assert!(m.add(Box::new(TwoPoint::position(&lattice))).is_err());
        assert_eq!(m.series("G_p[0]").unwrap().len(), 50);
        assert_eq!(m.series("G_hat[3]").unwrap().len(), 50);
        assert!(m.series("G_hat[4]").is_none());
        // G̃(0) = |Λ| m² configuration by configuration.
        for (g0, m2) in m
            .series("G_p[0]")
            .unwrap()
            .iter()
            .zip(m.series("m2").unwrap())
        {
            assert!((g0 - 8.0 * m2).abs() < 1e-12);
        }
        let summary = m.summary().unwrap();
        assert!(summary.get("G_p[7]").is_some());
        let text = summary.to_string();
        assert!(text.contains("chi") && text.contains("G_p[7]"));
    }

    #[test]
    fn mismatched_or_short_replicas_are_refused() {
        let a = Measurements::new(&Lattice::new(&[4, 4]).unwrap());
        let mut b = Measurements::new(&Lattice::new(&[4, 2]).unwrap());
        b.record(&field(8, 0)).unwrap();
        assert!(Measurements::summarise(&[]).is_err());
        assert!(matches!(
            Measurements::summarise(&[&a, &a]),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            Measurements::summarise(&[&b, &a]),
            Err(Error::Incompatible(_))
        ));
        assert!(matches!(b.record(&field(16, 0)), Err(Error::Shape(_))));
    }
}
