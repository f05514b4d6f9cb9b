//! Multiscale flows: a [`CoarseLayer`] runs a flow on the sublattice of the sites whose
//! coordinates are all even (a lattice of half the extents) and leaves the other sites
//! alone; refinement blocks ([`Partition::Refine`](crate::flow::Partition::Refine)) then
//! transform those other sites conditioned on the coarse ones. Nested, these give a flow
//! that draws a coarse field first and adds finer levels to it, with
//! log q(φ) = log q_c(φ_c) + log q(φ_f | φ_c) exact at every level.

use std::sync::Arc;

use crate::error::Result;
use crate::flow::conv::coarse_lattice;
use crate::flow::layers::Layer;
use crate::lattice::Lattice;

/// Layers applied to the coarse sublattice of a lattice (the sites whose coordinates are
/// all even), as a flow on the lattice of half the extents; the other sites pass through.
///
/// With x_c the coarse sites and x_f the others, the map is (x_c, x_f) → (g(x_c), x_f), so
/// its Jacobian is block-diagonal with the identity on the fine sites and
/// log|det| = log|det ∂g/∂x_c|. Shifting the field by an even vector 2a shifts the coarse
/// field by a, so the layer commutes with the even translations whenever its inner
/// layers commute with all translations of the coarse lattice.
#[derive(Clone)]
pub struct CoarseLayer {
    lattice: Lattice,
    sites: Arc<[usize]>,
    layers: Vec<Layer>,
}

impl CoarseLayer {
    /// The layer on the coarse sublattice of `fine`, with inner layers built by
    /// `build_inner` for the coarse lattice. Refused (naming the extents) unless every
    /// extent of `fine` is even.
    pub fn new(
        fine: &Lattice,
        build_inner: impl FnOnce(&Lattice) -> Result<Vec<Layer>>,
    ) -> Result<Self> {
        let lattice = coarse_lattice(fine, 2)?;
        let sites = coarse_sites(fine, &lattice);
        let layers = build_inner(&lattice)?;
        Ok(CoarseLayer {
            lattice,
            sites: sites.into(),
            layers,
        })
    }

    /// The coarse lattice the inner layers act on.
    pub fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    /// The fine site of every coarse site (coarse site y at fine coordinates 2y), in the
    /// coarse lattice's order.
    pub fn sites(&self) -> &Arc<[usize]> {
        &self.sites
    }

    /// The inner layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
}

/// The fine site at coordinates 2y of every site y of `coarse`.
fn coarse_sites(fine: &Lattice, coarse: &Lattice) -> Vec<usize> {
    let d = fine.dim();
    let (mut y, mut x) = (vec![0usize; d], vec![0usize; d]);
    (0..coarse.volume())
        .map(|c| {
            coarse.coords(c, &mut y);
            for (x, &y) in x.iter_mut().zip(&y) {
                *x = 2 * y;
            }
            fine.site(&x)
        })
        .collect()
}

/// The two active sets of a refinement block on `lattice`: the even-parity sites that are
/// not all-even, then the odd-parity sites. Refused (naming the extents) unless every
/// extent is even.
pub(crate) fn refine_partition(lattice: &Lattice) -> Result<(Vec<usize>, Vec<usize>)> {
    coarse_lattice(lattice, 2)?;
    let d = lattice.dim();
    let mut x = vec![0usize; d];
    let mut first = Vec::new();
    for s in lattice.sites_of_parity(0) {
        lattice.coords(s, &mut x);
        if x.iter().any(|c| c % 2 == 1) {
            first.push(s);
        }
    }
    Ok((first, lattice.sites_of_parity(1)))
}

/// Checks that a multiscale flow of `levels` levels fits `lattice`: every extent divisible
/// by 2^levels, else an [`Error::InvalidLattice`](crate::Error::InvalidLattice) naming the
/// lattice and the levels.
pub fn check_levels(lattice: &Lattice, levels: usize) -> Result<()> {
    if levels == 0 {
        return Ok(());
    }
    let factor = u32::try_from(levels)
        .ok()
        .and_then(|l| 1usize.checked_shl(l))
        .unwrap_or(0);
    if factor == 0 || lattice.extents().iter().any(|l| !l.is_multiple_of(factor)) {
        return Err(crate::Error::InvalidLattice(format!(
            "a multiscale flow of {levels} levels needs extents divisible by 2^{levels}; the \
             {lattice} lattice has extents {:?}",
            lattice.extents()
        )));
    }
    Ok(())
}
