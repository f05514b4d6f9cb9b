//! Detailed-balance checks for Metropolis-type kernels, usable in a user's own tests:
//! local Metropolis on pairs of states differing at one site, HMC through its
//! flip∘integrate involution (which must also preserve phase-space volume), and a
//! statistical check of any kernel's real [`Proposal::step`] from exactly sampled states
//! ([`kernel_balance`]).

use crate::action::Action;
use crate::error::{Error, Result};
use crate::kernel::{Hmc, LocalMetropolis, MoveInfo, Proposal, State};
use crate::rng::{SimRng, rng_from_seed};
use crate::testing::flow::log_abs_det;

/// The two sides of detailed balance in logs:
/// log p(x) + log T(x → y) against log p(y) + log T(y → x), with unnormalised p = e^{−S}.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BalanceCheck {
    /// log p(x) + log q(y|x) + log A(x → y).
    pub log_forward: f64,
    /// log p(y) + log q(x|y) + log A(y → x).
    pub log_backward: f64,
}

impl BalanceCheck {
    /// |log_forward − log_backward| (0 when both sides are −∞).
    pub fn log_discrepancy(&self) -> f64 {
        if self.log_forward == self.log_backward {
            0.0
        } else {
            (self.log_forward - self.log_backward).abs()
        }
    }

    /// Whether the two sides agree to `rel_tol` relative to max(1, |log_forward|).
    pub fn holds(&self, rel_tol: f64) -> bool {
        self.log_discrepancy() <= rel_tol * self.log_forward.abs().max(1.0)
    }
}

/// Detailed balance of one local Metropolis transition: x = `phi`, y = x with `site` set
/// to `new`. Uses the kernel's own proposal density and acceptance code, and the full
/// action for p (so a wrong `delta_local` shows up as a violation).
pub fn local_metropolis_balance<A: Action>(
    kernel: &LocalMetropolis<A>,
    phi: &[f64],
    site: usize,
    new: f64,
) -> Result<BalanceCheck> {
    let volume = kernel.action().lattice().volume();
    if phi.len() != volume {
        return Err(Error::Shape(format!(
            "field has {} values, lattice has {volume} sites",
            phi.len()
        )));
    }
    if site >= volume {
        return Err(Error::param(
            "site",
            format!("{site} is outside the lattice of {volume} sites"),
        ));
    }
    let old = phi[site];
    let mut moved = phi.to_vec();
    moved[site] = new;
    let action = kernel.action();
    let log_forward = -action.action(phi)
        + kernel.log_proposal_density(old, new)
        + kernel.log_acceptance(phi, site, new);
    let log_backward = -action.action(&moved)
        + kernel.log_proposal_density(new, old)
        + kernel.log_acceptance(&moved, site, old);
    Ok(BalanceCheck {
        log_forward,
        log_backward,
    })
}

/// The result of checking one HMC transition x = (φ, π) → x' = flip(integrate(x)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HmcBalanceCheck {
    /// max |x'' − x| over φ and π, where x'' = flip(integrate(x')): 0 for an exact
    /// involution, rounding-sized in practice.
    pub involution_error: f64,
    /// ΔH = H(x') − H(x) of the forward move.
    pub delta_h: f64,
    /// e^{−H(x)} A(x → x') against e^{−H(x')} A(x' → x), in logs, with A from the
    /// kernel's own acceptance code and A(x' → x) from actually integrating x'.
    pub balance: BalanceCheck,
}

/// Applies flip∘integrate to (φ, π) in place with `steps` steps of the kernel's
/// integrator, returning H at the result.
fn flip_integrate<A: Action>(
    hmc: &Hmc<A>,
    phi: &mut [f64],
    momentum: &mut [f64],
    steps: usize,
) -> f64 {
    let mut force = vec![0.0; phi.len()];
    hmc.action().force(phi, &mut force);
    hmc.integrate(phi, momentum, &mut force, steps);
    for p in momentum.iter_mut() {
        *p = -*p;
    }
    hmc.hamiltonian(phi, momentum)
}

fn check_lengths<A: Action>(hmc: &Hmc<A>, phi: &[f64], momentum: &[f64]) -> Result<()> {
    let volume = hmc.action().lattice().volume();
    if phi.len() != volume || momentum.len() != volume {
        return Err(Error::Shape(format!(
            "field has {} and momentum {} values, lattice has {volume} sites",
            phi.len(),
            momentum.len()
        )));
    }
    Ok(())
}

/// Detailed balance of one HMC transition from (φ, π) with `steps` integrator steps.
pub fn hmc_balance<A: Action>(
    hmc: &Hmc<A>,
    phi: &[f64],
    momentum: &[f64],
    steps: usize,
) -> Result<HmcBalanceCheck> {
    check_lengths(hmc, phi, momentum)?;
    let h0 = hmc.hamiltonian(phi, momentum);
    let (mut phi1, mut pi1) = (phi.to_vec(), momentum.to_vec());
    let h1 = flip_integrate(hmc, &mut phi1, &mut pi1, steps);
    let (mut phi2, mut pi2) = (phi1.clone(), pi1.clone());
    let h2 = flip_integrate(hmc, &mut phi2, &mut pi2, steps);
    let involution_error = phi2
        .iter()
        .zip(phi)
        .chain(pi2.iter().zip(momentum))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    Ok(HmcBalanceCheck {
        involution_error,
        delta_h: h1 - h0,
        balance: BalanceCheck {
            log_forward: -h0 + Hmc::<A>::log_acceptance(h1 - h0),
            log_backward: -h1 + Hmc::<A>::log_acceptance(h2 - h1),
        },
    })
}

/// log |det ∂x'/∂x| of the map x = (φ, π) → x' = flip(integrate(x)), from a central
/// fourth-order finite-difference Jacobian with step `h` (0 for a volume-preserving map).
/// Costs 8|Λ| integrations and a dense (2|Λ|)² determinant: for small lattices only.
pub fn hmc_log_jacobian<A: Action>(
    hmc: &Hmc<A>,
    phi: &[f64],
    momentum: &[f64],
    steps: usize,
    h: f64,
) -> Result<f64> {
    check_lengths(hmc, phi, momentum)?;
    if !(h > 0.0 && h.is_finite()) {
        return Err(Error::param("h", format!("must be positive, got {h}")));
    }
    let v = phi.len();
    let n = 2 * v;
    let mut jac = vec![0.0; n * n];
    let image = |x: &[f64]| -> Vec<f64> {
        let (mut f, mut p) = (x[..v].to_vec(), x[v..].to_vec());
        flip_integrate(hmc, &mut f, &mut p, steps);
        f.extend_from_slice(&p);
        f
    };
    let start: Vec<f64> = phi.iter().chain(momentum).copied().collect();
    let shifted = |j: usize, by: f64| -> Vec<f64> {
        let mut x = start.clone();
        x[j] += by;
        image(&x)
    };
    for j in 0..n {
        // Fourth-order central difference: error O(h⁴) instead of O(h²).
        let (p1, m1) = (shifted(j, h), shifted(j, -h));
        let (p2, m2) = (shifted(j, 2.0 * h), shifted(j, -2.0 * h));
        for i in 0..n {
            jac[i * n + j] = (8.0 * (p1[i] - m1[i]) - (p2[i] - m2[i])) / (12.0 * h);
        }
    }
    Ok(log_abs_det(&mut jac, n))
}

/// A chi-square statistic and its degrees of freedom.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChiSquare {
    /// The statistic.
    pub statistic: f64,
    /// Its degrees of freedom (0 when there was nothing to compare).
    pub dof: usize,
}

impl ChiSquare {
    /// The statistic as a z-score, approximately standard normal under the null hypothesis
    /// (Wilson–Hilferty: (χ²/k)^{1/3} is close to normal with mean 1 − 2/9k and variance
    /// 2/9k); z > 4 is a 4σ excess. NaN when `dof` is 0.
    pub fn z(&self) -> f64 {
        if self.dof == 0 {
            return f64::NAN;
        }
        let k = self.dof as f64;
        let var = 2.0 / (9.0 * k);
        ((self.statistic / k).cbrt() - (1.0 - var)) / var.sqrt()
    }
}

/// What [`kernel_balance`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelBalanceCheck {
    /// Bowker's symmetry statistic of the joint histogram N of (bin of O(x), bin of O(y)):
    /// Σ_{i<j} (N_ij − N_ji)² / (N_ij + N_ji) over the bin pairs that occurred. Detailed
    /// balance makes the pair (x, y) exchangeable when x ~ e^{−S}, so N is symmetric up to
    /// noise.
    pub symmetry: ChiSquare,
    /// The histogram of O(y) against that of O(x′) for independent exact samples x′:
    /// Σ_i (a_i − b_i)² / (a_i + b_i). Any kernel that leaves e^{−S} invariant passes it.
    pub stationarity: ChiSquare,
    /// Pairs (x, y) drawn.
    pub samples: usize,
    /// Fraction of the steps that changed O (a kernel that never moves passes trivially).
    pub moved: f64,
}

impl KernelBalanceCheck {
    /// Whether both statistics lie below `z_max` standard deviations (e.g. 4) and there
    /// was something to test (some moves, some off-diagonal bin pairs).
    pub fn holds(&self, z_max: f64) -> bool {
        self.moved > 0.0
            && self.symmetry.dof > 0
            && self.stationarity.dof > 0
            && self.symmetry.z() < z_max
            && self.stationarity.z() < z_max
    }
}

/// Detailed balance of a kernel's real [`Proposal::step`], checked statistically.
///
/// Draws `samples` states x exactly from e^{−S} with `exact_sample` (e.g. the free field's
/// FFT sampler), makes one step x → y of `kernel` from each, and bins the observable O of
/// x, of y and of a fresh exact sample x′ with the bin `edges` (increasing; values below the
/// first or above the last edge fall into two outer bins). Returns the symmetry statistic of
/// the (O(x), O(y)) pairs — which tests detailed balance — and the stationarity statistic
/// of O(y) against O(x′) — which tests only that e^{−S} is left invariant, and is the one to
/// use for kernels that are not reversible (cycles, sequential sweeps on lattices without a
/// symmetry reversing the sweep order). Each pair is independent of the others, so both
/// statistics are chi-square distributed for a correct kernel; a kernel whose acceptance
/// or proposal is wrong shows up as a large z-score once `samples` is large enough.
///
/// `action` gives the state's cached S; the generator is seeded with `seed`. The kernel
/// should not be adapting.
pub fn kernel_balance<K, A>(
    kernel: &mut K,
    action: &A,
    exact_sample: &mut dyn FnMut(&mut SimRng, &mut [f64]) -> Result<()>,
    observable: &dyn Fn(&[f64]) -> f64,
    edges: &[f64],
    samples: usize,
    seed: u64,
) -> Result<KernelBalanceCheck>
where
    K: Proposal + ?Sized,
    A: Action + ?Sized,
{
    let increasing = edges.windows(2).all(|w| w[0] < w[1]);
    if edges.is_empty() || !increasing || edges.iter().any(|e| e.is_nan()) {
        return Err(Error::param(
            "edges",
            "bin edges must be a non-empty increasing sequence",
        ));
    }
    if samples == 0 {
        return Err(Error::param("samples", "must be at least 1"));
    }
    let bins = edges.len() + 1;
    let bin_of = |value: f64| edges.partition_point(|&e| e <= value);
    let mut rng = rng_from_seed(seed);
    let mut state = State::zero(action);
    let mut fresh = state.phi().to_vec();
    let mut moves: Vec<MoveInfo> = Vec::new();
    let mut joint = vec![0u64; bins * bins];
    let (mut after, mut reference) = (vec![0u64; bins], vec![0u64; bins]);
    let mut moved = 0usize;
    for _ in 0..samples {
        state.change(|phi, s| {
            exact_sample(&mut rng, phi)?;
            *s = action.action(phi);
            Ok::<(), Error>(())
        })?;
        let before = observable(state.phi());
        moves.clear();
        kernel.step(&mut state, &mut rng, &mut moves);
        let now = observable(state.phi());
        if !(before.is_finite() && now.is_finite()) {
            return Err(Error::NonFinite("observable of a kernel step".into()));
        }
        moved += usize::from(now != before);
        let (i, j) = (bin_of(before), bin_of(now));
        joint[i * bins + j] += 1;
        after[j] += 1;
        exact_sample(&mut rng, &mut fresh)?;
        reference[bin_of(observable(&fresh))] += 1;
    }
    let mut symmetry = ChiSquare {
        statistic: 0.0,
        dof: 0,
    };
    for i in 0..bins {
        for j in i + 1..bins {
            add_difference(&mut symmetry, joint[i * bins + j], joint[j * bins + i]);
        }
    }
    let mut stationarity = ChiSquare {
        statistic: 0.0,
        dof: 0,
    };
    for (&a, &b) in after.iter().zip(&reference) {
        add_difference(&mut stationarity, a, b);
    }
    // Two histograms of the same total: one constraint.
    stationarity.dof = stationarity.dof.saturating_sub(1);
    Ok(KernelBalanceCheck {
        symmetry,
        stationarity,
        samples,
        moved: moved as f64 / samples as f64,
    })
}

/// Adds (a − b)² / (a + b) of two counts expected equal, when either is non-zero.
fn add_difference(chi: &mut ChiSquare, a: u64, b: u64) {
    if a + b > 0 {
        let d = a as f64 - b as f64;
        chi.statistic += d * d / (a + b) as f64;
        chi.dof += 1;
    }
}
