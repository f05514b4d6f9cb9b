//! Lattice actions S(φ): the [`Action`] trait that every sampler and the flow trainer work
//! with, and its implementations (φ⁴ in its three conventions, the free field).

use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand::{Rng, RngExt};

use crate::lattice::Lattice;
use crate::rng::SimRng;

mod checkerboard;
mod free;
mod phi4;

pub use checkerboard::{Checkerboard, LaneStream, checkerboard_accepts};
pub use free::{FreeField, FreeFieldSampler};
pub use phi4::{Phi4, Phi4Conversion, Phi4Couplings, Phi4Form};

/// What a Metropolis sweep did: how many proposals it accepted and the summed action
/// change S(φ_after) − S(φ_before).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SweepTally {
    /// Accepted single-site proposals.
    pub accepted: u32,
    /// Sum of ΔS over the accepted proposals.
    pub delta_action: f64,
}

/// The Metropolis decision for an action change ΔS = `delta`: accepts when ΔS ≤ 0
/// without drawing, otherwise draws u ~ U[0, 1) and accepts when u < e^{−ΔS}.
#[inline(always)]
pub fn metropolis_accepts<R: Rng + ?Sized>(delta: f64, rng: &mut R) -> bool {
    delta <= 0.0 || rng.random::<f64>() < (-delta).exp()
}

/// The reference single-site Metropolis sweep through [`Action::delta_local`]: the default
/// body of [`Action::metropolis_sweep`], and the fallback of its specialisations.
pub fn single_site_sweep<A, R, P>(
    action: &A,
    phi: &mut [f64],
    sites: &[usize],
    hits: u32,
    rng: &mut R,
    mut propose: P,
) -> SweepTally
where
    A: Action + ?Sized,
    R: Rng + ?Sized,
    P: FnMut(f64, &mut R) -> f64,
{
    let mut tally = SweepTally::default();
    for &site in sites {
        for _ in 0..hits {
            let new = propose(phi[site], rng);
            let delta = action.delta_local(phi, site, new);
            if metropolis_accepts(delta, rng) {
                phi[site] = new;
                tally.accepted += 1;
                tally.delta_action += delta;
            }
        }
    }
    tally
}

/// A real scalar field theory on a lattice, with weight e^{−S(φ)}.
///
/// All quantities are f64. A user's own action implements this trait and then works with
/// every kernel and with flow training.
pub trait Action: Send + Sync {
    /// The lattice the field lives on.
    fn lattice(&self) -> &Lattice;

    /// S(φ).
    fn action(&self, phi: &[f64]) -> f64;

    /// Writes the force ∂S/∂φ_x into `out`.
    fn force(&self, phi: &[f64], out: &mut [f64]);

    /// S(φ') − S(φ) where φ' equals φ except φ'_site = `new`.
    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64;

    /// Single-site Metropolis updates of `phi` at each site of `sites` in turn, `hits`
    /// times per site: `propose(old, rng)` gives the new value, accepted by
    /// [`metropolis_accepts`] on [`Action::delta_local`].
    ///
    /// Implementations may reorganise the work (hoist dispatch, reuse the neighbour sum
    /// across hits) but must draw the same random numbers and take the same decisions as
    /// this default body. Panics if a site lies outside `phi`.
    fn metropolis_sweep<R, P>(
        &self,
        phi: &mut [f64],
        sites: &[usize],
        hits: u32,
        rng: &mut R,
        propose: P,
    ) -> SweepTally
    where
        Self: Sized,
        R: Rng + ?Sized,
        P: FnMut(f64, &mut R) -> f64,
    {
        single_site_sweep(self, phi, sites, hits, rng, propose)
    }

    /// One checkerboard sweep of `phi` (see [`Checkerboard`] for the order and the random
    /// stream): `hits` proposals φ_x + δ(2u − 1), δ = `step_size`, per site, accepted when
    /// v < e^{−ΔS} ([`checkerboard_accepts`]).
    ///
    /// The default is [`Checkerboard::sweep_reference`] through [`Action::delta_local`].
    /// Implementations may vectorise it but must draw the same random numbers and take the
    /// same decisions (the summed ΔS may differ by rounding). Panics if `board` was laid out
    /// for another lattice or `phi` does not cover the lattice.
    fn checkerboard_sweep(
        &self,
        phi: &mut [f64],
        board: &mut Checkerboard,
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        board.sweep_reference(self, phi, step_size, hits, rng)
    }

    /// S(φ) and the force in one pass (override where it saves work).
    fn action_and_force(&self, phi: &[f64], out: &mut [f64]) -> f64 {
        self.force(phi, out);
        self.action(phi)
    }

    /// S for every row of a batch `[n, volume]`.
    fn action_batch(&self, phis: ArrayView2<f64>, mut out: ArrayViewMut1<f64>) {
        for (row, o) in phis.outer_iter().zip(out.iter_mut()) {
            *o = match row.as_slice() {
                Some(s) => self.action(s),
                None => self.action(&row.to_vec()),
            };
        }
    }

    /// S and ∂S/∂φ for every row of a batch; returns nothing, writes `actions` and `forces`.
    fn action_and_force_batch(
        &self,
        phis: ArrayView2<f64>,
        mut actions: ArrayViewMut1<f64>,
        mut forces: ArrayViewMut2<f64>,
    ) {
        let v = self.lattice().volume();
        let mut buf_phi = vec![0.0; v];
        let mut buf_f = vec![0.0; v];
        for ((row, a), mut f) in phis
            .outer_iter()
            .zip(actions.iter_mut())
            .zip(forces.outer_iter_mut())
        {
            for (b, &x) in buf_phi.iter_mut().zip(row.iter()) {
                *b = x;
            }
            *a = self.action_and_force(&buf_phi, &mut buf_f);
            for (o, &x) in f.iter_mut().zip(&buf_f) {
                *o = x;
            }
        }
    }
}

/// An action behind a shared pointer is the action itself: `Arc<dyn Action>` (an action
/// chosen at run time, e.g. from a runcard) works with every kernel and with training.
///
/// Every method forwards to the pointee (a pointee's vectorised
/// [`Action::checkerboard_sweep`] included), except [`Action::metropolis_sweep`], which
/// cannot reach a pointee's specialised sweep through `dyn` and uses the reference sweep over
/// [`Action::delta_local`]; build local Metropolis on the concrete action where its sweep is
/// specialised.
impl<A: Action + ?Sized> Action for std::sync::Arc<A> {
    fn lattice(&self) -> &Lattice {
        (**self).lattice()
    }

    fn action(&self, phi: &[f64]) -> f64 {
        (**self).action(phi)
    }

    fn force(&self, phi: &[f64], out: &mut [f64]) {
        (**self).force(phi, out)
    }

    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        (**self).delta_local(phi, site, new)
    }

    fn checkerboard_sweep(
        &self,
        phi: &mut [f64],
        board: &mut Checkerboard,
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        (**self).checkerboard_sweep(phi, board, step_size, hits, rng)
    }

    fn action_and_force(&self, phi: &[f64], out: &mut [f64]) -> f64 {
        (**self).action_and_force(phi, out)
    }

    fn action_batch(&self, phis: ArrayView2<f64>, out: ArrayViewMut1<f64>) {
        (**self).action_batch(phis, out)
    }

    fn action_and_force_batch(
        &self,
        phis: ArrayView2<f64>,
        actions: ArrayViewMut1<f64>,
        forces: ArrayViewMut2<f64>,
    ) {
        (**self).action_and_force_batch(phis, actions, forces)
    }
}
