//! Detailed-balance checks for Metropolis-type kernels, usable in a user's own property
//! tests: local Metropolis on pairs of states differing at one site, and HMC through its
//! flip∘integrate involution (which must also preserve phase-space volume).

use crate::action::Action;
use crate::error::{Error, Result};
use crate::kernel::{Hmc, LocalMetropolis};
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
