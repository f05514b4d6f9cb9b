//! Checks of an [`Action`] implementation: the force against exact forward-mode derivatives
//! of a formula for S (or central finite differences of `action` when no formula is given),
//! `delta_local` against differences of `action`, `action_and_force` against `action` and
//! `force`, and the Z2 symmetry S(−φ) = S(φ) when it is claimed.
//!
//! ```
//! use latflow::action::Phi4;
//! use latflow::tape::Dual;
//! use latflow::testing::{ActionCheckOptions, ActionFormula, check_action};
//!
//! let action = Phi4::hopping(latflow::Lattice::new(&[4, 4])?, 0.5, 1.2)?;
//! let formula = |phi: &[Dual]| action.eval(phi);
//! let options = ActionCheckOptions {
//!     formula: Some(&formula),
//!     z2_symmetric: true,
//!     ..ActionCheckOptions::default()
//! };
//! let report = check_action(&action, &options).expect("φ⁴ is consistent");
//! assert!(report.max_force_error < 1e-12);
//! # Ok::<(), latflow::Error>(())
//! ```

use std::fmt;

use num_traits::Zero;
use rand::RngExt;

use crate::action::{Action, FreeField, Phi4};
use crate::flow::Real;
use crate::rng::rng_from_seed;
use crate::tape::Dual;

/// An action written once for any float type, so that forward-mode [`Dual`] numbers give
/// its exact derivatives: the reference [`check_action`] checks a force against.
pub trait ActionFormula {
    /// S(φ) for a field of the lattice's volume.
    fn eval<T: Real>(&self, phi: &[T]) -> T;
}

impl ActionFormula for Phi4 {
    /// The general form Σ_x [−κ φ_x Σ_μ φ_{x+μ} + μ φ_x² + g φ_x⁴] + c·|Λ|.
    fn eval<T: Real>(&self, phi: &[T]) -> T {
        let lattice = self.lattice();
        let d = lattice.dim();
        let cast = |x: f64| T::from_f64(x).unwrap_or_else(T::nan);
        let (kappa, mass, quartic) = (
            cast(self.kappa()),
            cast(self.mass_term()),
            cast(self.quartic_term()),
        );
        let mut s = T::zero();
        for (&x, fwd) in phi.iter().zip(lattice.fwd_table().chunks_exact(d)) {
            let forward = fwd.iter().fold(T::zero(), |acc, &f| acc + phi[f]);
            let x2 = x * x;
            s = s + x * (mass * x - kappa * forward) + quartic * x2 * x2;
        }
        s + cast(self.constant_per_site() * phi.len() as f64)
    }
}

impl ActionFormula for FreeField {
    /// The free field as its φ⁴ form with g0 = 0.
    fn eval<T: Real>(&self, phi: &[T]) -> T {
        self.as_phi4().eval(phi)
    }
}

/// S(φ) as a function of dual numbers (see [`ActionCheckOptions::formula`]).
pub type DualAction<'a> = dyn Fn(&[Dual]) -> Dual + 'a;

/// What [`check_action`] compares the force with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceReference {
    /// Exact derivatives of the user's formula by forward mode.
    ForwardMode,
    /// Central finite differences of [`Action::action`].
    FiniteDifferences,
}

/// Options of [`check_action`]. Fields are drawn uniformly in (−`field_scale`,
/// `field_scale`) from `seed`; each local change adds a uniform draw from the same range.
pub struct ActionCheckOptions<'a> {
    /// Random field configurations to check at.
    pub configurations: usize,
    /// Seed of the configurations and of the local changes.
    pub seed: u64,
    /// Half-width of the uniform field values.
    pub field_scale: f64,
    /// S(φ) written over dual numbers (e.g. `|phi| action.eval(phi)` for an
    /// [`ActionFormula`]): the force is then checked against its exact derivatives.
    pub formula: Option<&'a DualAction<'a>>,
    /// Whether the action claims S(−φ) = S(φ) (checked, with F(−φ) = −F(φ), if so).
    pub z2_symmetric: bool,
    /// Relative tolerance of the comparisons that hold to rounding (formula value, forward-mode
    /// force, `delta_local`, `action_and_force`, Z2); see [`check_action`].
    pub rtol: f64,
    /// Step h of the central differences.
    pub step: f64,
    /// Relative tolerance of the finite-difference force check.
    pub finite_difference_rtol: f64,
}

impl Default for ActionCheckOptions<'_> {
    /// 4 configurations from seed 0 with |φ| < 1.5, no formula, no Z2 claim, rtol 1e-10,
    /// h = 1e-5 and a finite-difference rtol of 1e-6.
    fn default() -> Self {
        ActionCheckOptions {
            configurations: 4,
            seed: 0,
            field_scale: 1.5,
            formula: None,
            z2_symmetric: false,
            rtol: 1e-10,
            step: 1e-5,
            finite_difference_rtol: 1e-6,
        }
    }
}

/// What a passing [`check_action`] compared, with the largest deviations seen (each in units
/// of its scale, so that the check's tolerance applies to it directly).
#[derive(Clone, Debug, PartialEq)]
pub struct ActionCheckReport {
    /// The reference the force was checked against.
    pub force_reference: ForceReference,
    /// Configurations checked.
    pub configurations: usize,
    /// max over configurations and sites of |F_x − reference_x| / (1 + ‖reference‖∞).
    pub max_force_error: f64,
    /// max over configurations and sites of |ΔS_local − (S(φ') − S(φ))| / (1 + |S| + |S'|).
    pub max_delta_local_error: f64,
    /// Whether the Z2 symmetry was checked.
    pub z2_checked: bool,
}

/// The first inconsistency [`check_action`] found, naming the configuration and site.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ActionCheckFailure {
    /// The options cannot be used (e.g. a non-positive step or scale).
    Options(String),
    /// The formula's value differs from [`Action::action`].
    FormulaValue {
        /// Configuration index.
        configuration: usize,
        /// The formula's S.
        formula: f64,
        /// `action(φ)`.
        action: f64,
    },
    /// The force differs from its reference at a site.
    Force {
        /// Configuration index.
        configuration: usize,
        /// The site.
        site: usize,
        /// `force(φ)` at the site.
        force: f64,
        /// The reference's ∂S/∂φ at the site.
        expected: f64,
        /// What the reference was.
        reference: ForceReference,
    },
    /// `delta_local` differs from the difference of two `action` calls.
    DeltaLocal {
        /// Configuration index.
        configuration: usize,
        /// The site changed.
        site: usize,
        /// Its new value.
        new: f64,
        /// `delta_local(φ, site, new)`.
        delta_local: f64,
        /// S(φ') − S(φ).
        difference: f64,
    },
    /// `action_and_force` returned another S than `action`.
    ActionAndForceValue {
        /// Configuration index.
        configuration: usize,
        /// S from `action_and_force`.
        combined: f64,
        /// S from `action`.
        action: f64,
    },
    /// `action_and_force` wrote another force than `force` at a site.
    ActionAndForceForce {
        /// Configuration index.
        configuration: usize,
        /// The site.
        site: usize,
        /// The force from `action_and_force`.
        combined: f64,
        /// The force from `force`.
        force: f64,
    },
    /// The action claimed Z2 symmetry but S(−φ) ≠ S(φ) (or F(−φ) ≠ −F(φ) at `site`).
    Z2 {
        /// Configuration index.
        configuration: usize,
        /// The site whose force is not odd; `None` when the actions differ.
        site: Option<usize>,
        /// S(φ) (or F_site(φ)).
        at_phi: f64,
        /// S(−φ) (or −F_site(−φ)).
        at_minus_phi: f64,
    },
    /// A NaN or infinity from the action at a configuration.
    NonFinite {
        /// Configuration index.
        configuration: usize,
        /// Which quantity.
        what: &'static str,
    },
}

impl ActionCheckFailure {
    /// The site the failure concerns, if it concerns one.
    pub fn site(&self) -> Option<usize> {
        match *self {
            ActionCheckFailure::Force { site, .. }
            | ActionCheckFailure::DeltaLocal { site, .. }
            | ActionCheckFailure::ActionAndForceForce { site, .. } => Some(site),
            ActionCheckFailure::Z2 { site, .. } => site,
            _ => None,
        }
    }
}

impl fmt::Display for ActionCheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionCheckFailure::Options(reason) => write!(f, "unusable options: {reason}"),
            ActionCheckFailure::FormulaValue {
                configuration,
                formula,
                action,
            } => write!(
                f,
                "configuration {configuration}: the formula gives S = {formula}, action() {action}"
            ),
            ActionCheckFailure::Force {
                configuration,
                site,
                force,
                expected,
                reference,
            } => write!(
                f,
                "configuration {configuration}, site {site}: force {force} but {reference:?} \
                 gives {expected}"
            ),
            ActionCheckFailure::DeltaLocal {
                configuration,
                site,
                new,
                delta_local,
                difference,
            } => write!(
                f,
                "configuration {configuration}, site {site} set to {new}: delta_local \
                 {delta_local} but S(φ') − S(φ) = {difference}"
            ),
            ActionCheckFailure::ActionAndForceValue {
                configuration,
                combined,
                action,
            } => write!(
                f,
                "configuration {configuration}: action_and_force gives S = {combined}, \
                 action() {action}"
            ),
            ActionCheckFailure::ActionAndForceForce {
                configuration,
                site,
                combined,
                force,
            } => write!(
                f,
                "configuration {configuration}, site {site}: action_and_force writes force \
                 {combined}, force() {force}"
            ),
            ActionCheckFailure::Z2 {
                configuration,
                site: None,
                at_phi,
                at_minus_phi,
            } => write!(
                f,
                "configuration {configuration}: Z2 symmetry claimed but S(φ) = {at_phi}, \
                 S(−φ) = {at_minus_phi}"
            ),
            ActionCheckFailure::Z2 {
                configuration,
                site: Some(site),
                at_phi,
                at_minus_phi,
            } => write!(
                f,
                "configuration {configuration}, site {site}: Z2 symmetry claimed but \
                 F(φ) = {at_phi}, −F(−φ) = {at_minus_phi}"
            ),
            ActionCheckFailure::NonFinite {
                configuration,
                what,
            } => write!(f, "configuration {configuration}: {what} is not finite"),
        }
    }
}

impl std::error::Error for ActionCheckFailure {}

/// Checks an action's methods against each other on random configurations (see
/// [`ActionCheckOptions`]):
///
/// - with a formula: S_formula(φ) = S(φ) and F_x = ∂S_formula/∂φ_x by forward mode, each to
///   `rtol` — `|Δ| ≤ rtol·(1 + |S|)`, `|ΔF_x| ≤ rtol·(1 + ‖F_ref‖∞)`;
/// - without: F_x against [S(φ + h e_x) − S(φ − h e_x)] / 2h, with
///   `|ΔF_x| ≤ finite_difference_rtol·(1 + ‖F_ref‖∞)` (truncation O(h² S''') and rounding
///   O(ε|S|/h) are about 1e-9 for h = 1e-5 and actions of order 100; a wrong term is of
///   order one);
/// - at every site, a random new value: `delta_local` against S(φ') − S(φ), to
///   `rtol·(1 + |S(φ)| + |S(φ')|)`;
/// - `action_and_force` against `action` and `force`, to `rtol` as above;
/// - if `z2_symmetric`: S(−φ) = S(φ) and F(−φ) = −F(φ), to `rtol`.
///
/// The default rtol, 1e-10, is far above the rounding of sums of order-one terms over
/// small lattices (~1e-14) and far below any error in a formula.
pub fn check_action<A: Action + ?Sized>(
    action: &A,
    options: &ActionCheckOptions<'_>,
) -> Result<ActionCheckReport, ActionCheckFailure> {
    let valid = |x: f64| x.is_finite() && x > 0.0;
    if !(valid(options.field_scale)
        && valid(options.step)
        && valid(options.rtol)
        && valid(options.finite_difference_rtol))
    {
        return Err(ActionCheckFailure::Options(
            "field_scale, step and the tolerances must be positive and finite".into(),
        ));
    }
    let volume = action.lattice().volume();
    let scale = options.field_scale;
    let rtol = options.rtol;
    let mut rng = rng_from_seed(options.seed);
    let mut report = ActionCheckReport {
        force_reference: if options.formula.is_some() {
            ForceReference::ForwardMode
        } else {
            ForceReference::FiniteDifferences
        },
        configurations: options.configurations,
        max_force_error: 0.0,
        max_delta_local_error: 0.0,
        z2_checked: options.z2_symmetric,
    };
    let mut force = vec![0.0; volume];
    let mut reference = vec![0.0; volume];
    let mut combined_force = vec![0.0; volume];
    let mut probe = vec![Dual::zero(); volume];
    for configuration in 0..options.configurations {
        let phi: Vec<f64> = (0..volume)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let s = action.action(&phi);
        let non_finite = |what| ActionCheckFailure::NonFinite {
            configuration,
            what,
        };
        if !s.is_finite() {
            return Err(non_finite("S(φ)"));
        }
        action.force(&phi, &mut force);
        if force.iter().any(|f| !f.is_finite()) {
            return Err(non_finite("the force"));
        }

        // The force against its reference.
        let mut value = phi.clone();
        match options.formula {
            Some(formula) => {
                for (p, &x) in probe.iter_mut().zip(&phi) {
                    *p = Dual::constant(x);
                }
                for (site, r) in reference.iter_mut().enumerate() {
                    probe[site] = Dual::variable(phi[site]);
                    let sd = formula(&probe);
                    probe[site] = Dual::constant(phi[site]);
                    if site == 0 && !within(sd.value() - s, rtol * (1.0 + s.abs())) {
                        return Err(ActionCheckFailure::FormulaValue {
                            configuration,
                            formula: sd.value(),
                            action: s,
                        });
                    }
                    *r = sd.tangent();
                }
            }
            None => {
                let h = options.step;
                for (site, r) in reference.iter_mut().enumerate() {
                    value[site] = phi[site] + h;
                    let up = action.action(&value);
                    value[site] = phi[site] - h;
                    let down = action.action(&value);
                    value[site] = phi[site];
                    *r = (up - down) / (2.0 * h);
                }
            }
        }
        let tol = match options.formula {
            Some(_) => rtol,
            None => options.finite_difference_rtol,
        };
        let norm = 1.0 + reference.iter().fold(0.0f64, |m, r| m.max(r.abs()));
        for (site, (&f, &r)) in force.iter().zip(&reference).enumerate() {
            let error = (f - r).abs() / norm;
            if !within(error, tol) {
                return Err(ActionCheckFailure::Force {
                    configuration,
                    site,
                    force: f,
                    expected: r,
                    reference: report.force_reference,
                });
            }
            report.max_force_error = report.max_force_error.max(error);
        }

        // delta_local against differences of the action.
        for site in 0..volume {
            let new = phi[site] + rng.random_range(-scale..scale);
            let delta = action.delta_local(&phi, site, new);
            value[site] = new;
            let s_new = action.action(&value);
            value[site] = phi[site];
            let difference = s_new - s;
            let error = (delta - difference).abs() / (1.0 + s.abs() + s_new.abs());
            if !within(error, rtol) {
                return Err(ActionCheckFailure::DeltaLocal {
                    configuration,
                    site,
                    new,
                    delta_local: delta,
                    difference,
                });
            }
            report.max_delta_local_error = report.max_delta_local_error.max(error);
        }

        // action_and_force against action and force.
        let combined = action.action_and_force(&phi, &mut combined_force);
        if !within(combined - s, rtol * (1.0 + s.abs())) {
            return Err(ActionCheckFailure::ActionAndForceValue {
                configuration,
                combined,
                action: s,
            });
        }
        let force_norm = 1.0 + force.iter().fold(0.0f64, |m, f| m.max(f.abs()));
        for (site, (&c, &f)) in combined_force.iter().zip(&force).enumerate() {
            if !within(c - f, rtol * force_norm) {
                return Err(ActionCheckFailure::ActionAndForceForce {
                    configuration,
                    site,
                    combined: c,
                    force: f,
                });
            }
        }

        // The claimed Z2 symmetry.
        if options.z2_symmetric {
            let flipped: Vec<f64> = phi.iter().map(|x| -x).collect();
            let s_flipped = action.action(&flipped);
            if !within(s_flipped - s, rtol * (1.0 + s.abs())) {
                return Err(ActionCheckFailure::Z2 {
                    configuration,
                    site: None,
                    at_phi: s,
                    at_minus_phi: s_flipped,
                });
            }
            action.force(&flipped, &mut combined_force);
            for (site, (&f, &g)) in force.iter().zip(&combined_force).enumerate() {
                if !within(f + g, rtol * force_norm) {
                    return Err(ActionCheckFailure::Z2 {
                        configuration,
                        site: Some(site),
                        at_phi: f,
                        at_minus_phi: -g,
                    });
                }
            }
        }
    }
    Ok(report)
}

/// |difference| ≤ allowed, false for NaN.
fn within(difference: f64, allowed: f64) -> bool {
    difference.abs() <= allowed
}
