//! The state a kernel moves: the field, its cached action, a generation that changes
//! whenever the field does, and the force where a kernel computed it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::action::Action;
use crate::error::{Error, Result};

/// Generations are drawn from one process-wide counter, so two states never share a
/// generation unless one is a clone of the other with the same field.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn fresh_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// The state of a chain: the field φ, its action S(φ), a generation number and, where a
/// kernel computed it, the force ∂S/∂φ at φ.
///
/// The field changes only through methods that give the state a new generation, so a
/// kernel that caches something about a state (a flow's log-density, HMC's force) knows it
/// is still valid by comparing generations instead of whole fields. A clone keeps the
/// generation: it holds the same field.
#[derive(Clone, Debug)]
pub struct State {
    phi: Vec<f64>,
    action: f64,
    generation: u64,
    /// ∂S/∂φ at `phi` when `force_valid`; a buffer of length |Λ| or empty.
    force: Vec<f64>,
    force_valid: bool,
}

impl PartialEq for State {
    /// Two states are equal when their fields and actions are.
    fn eq(&self, other: &Self) -> bool {
        self.phi == other.phi && self.action.to_bits() == other.action.to_bits()
    }
}

impl State {
    /// A state for `phi` with its action computed; the length must match the lattice and
    /// every value be finite.
    pub fn new<A: Action + ?Sized>(action: &A, phi: Vec<f64>) -> Result<Self> {
        let v = action.lattice().volume();
        if phi.len() != v {
            return Err(Error::Shape(format!(
                "field has {} values, lattice has {v} sites",
                phi.len()
            )));
        }
        if let Some(site) = phi.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!(
                "initial field (value {} at site {site})",
                phi[site]
            )));
        }
        let s = action.action(&phi);
        Ok(State::from_parts(phi, s))
    }

    /// The cold start φ = 0.
    pub fn zero<A: Action + ?Sized>(action: &A) -> Self {
        let phi = vec![0.0; action.lattice().volume()];
        let s = action.action(&phi);
        State::from_parts(phi, s)
    }

    /// A state from a field and its action, trusted to belong together.
    fn from_parts(phi: Vec<f64>, action: f64) -> Self {
        State {
            phi,
            action,
            generation: fresh_generation(),
            force: Vec::new(),
            force_valid: false,
        }
    }

    /// The field, one value per site.
    #[inline]
    pub fn phi(&self) -> &[f64] {
        &self.phi
    }

    /// S(φ), kept current by every kernel.
    #[inline]
    pub fn action(&self) -> f64 {
        self.action
    }

    /// A number that changes whenever the field does (and stays when it does not, e.g.
    /// after a rejected proposal).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The field and its action as owned values.
    pub fn into_field(self) -> (Vec<f64>, f64) {
        (self.phi, self.action)
    }

    /// Changes the field in place: `change` gets the field and its action and must leave
    /// the action equal to S of the new field. The state gets a new generation and loses
    /// its force.
    #[inline]
    pub fn change<R>(&mut self, change: impl FnOnce(&mut [f64], &mut f64) -> R) -> R {
        let out = change(&mut self.phi, &mut self.action);
        self.touch();
        out
    }

    /// Copies `phi` (of the state's length) in with its action `action`; a new generation,
    /// no force.
    pub fn assign(&mut self, phi: &[f64], action: f64) {
        self.phi.copy_from_slice(phi);
        self.action = action;
        self.touch();
    }

    /// Swaps the field with `phi` (of the state's length), whose action is `action`, and,
    /// when given, the force buffer with `force` (∂S/∂φ at the new field); a new
    /// generation. The caller's buffers receive the old field (and force buffer).
    pub fn swap_in(&mut self, phi: &mut Vec<f64>, action: f64, force: Option<&mut Vec<f64>>) {
        debug_assert_eq!(phi.len(), self.phi.len());
        std::mem::swap(&mut self.phi, phi);
        self.action = action;
        self.touch();
        if let Some(force) = force {
            debug_assert_eq!(force.len(), self.phi.len());
            std::mem::swap(&mut self.force, force);
            self.force_valid = true;
        }
    }

    /// The force ∂S/∂φ at the current field, when a kernel computed it since the field last
    /// changed.
    pub fn force(&self) -> Option<&[f64]> {
        self.force_valid.then_some(self.force.as_slice())
    }

    /// The force ∂S/∂φ at the current field, computed with `action` unless it is cached.
    pub fn force_or_compute<A: Action + ?Sized>(&mut self, action: &A) -> &[f64] {
        if !self.force_valid {
            self.force.resize(self.phi.len(), 0.0);
            action.force(&self.phi, &mut self.force);
            self.force_valid = true;
        }
        &self.force
    }

    /// Marks the field as changed: a new generation, no force.
    fn touch(&mut self) {
        self.generation = fresh_generation();
        self.force_valid = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Phi4;
    use crate::lattice::Lattice;

    #[test]
    fn every_change_gives_a_new_generation_and_drops_the_force() {
        let action = Phi4::hopping(Lattice::new(&[4, 4]).unwrap(), 0.5, 0.5).unwrap();
        let mut state = State::zero(&action);
        let other = State::zero(&action);
        assert_ne!(state.generation(), other.generation());
        let clone = state.clone();
        assert_eq!(clone.generation(), state.generation());
        assert!(state.force().is_none());
        let expected: Vec<f64> = {
            let mut f = vec![0.0; 16];
            action.force(state.phi(), &mut f);
            f
        };
        assert_eq!(state.force_or_compute(&action), expected.as_slice());
        assert!(state.force().is_some());
        let g = state.generation();
        state.change(|phi, s| {
            phi[3] = 1.0;
            *s = action.action(phi);
        });
        assert_ne!(state.generation(), g);
        assert!(state.force().is_none());
        assert_eq!(state.action(), action.action(state.phi()));
        let g = state.generation();
        let mut phi = vec![0.5; 16];
        let mut force = vec![0.0; 16];
        action.force(&phi, &mut force);
        let s = action.action(&phi);
        state.swap_in(&mut phi, s, Some(&mut force));
        assert_ne!(state.generation(), g);
        assert_eq!(state.phi(), &[0.5; 16]);
        assert!(state.force().is_some());
        assert_eq!(phi[3], 1.0);
    }
}
