//! Periodic hypercubic lattices in any dimension: extents, site indexing, neighbour
//! tables, checkerboard parity and lattice momenta. Every other module asks the lattice
//! for indices; nobody recomputes them.
//!
//! Sites are numbered lexicographically with the *last* coordinate fastest, so that a
//! configuration stored as `[f64; volume]` is a C-ordered array of shape `extents`.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A periodic lattice with extents `L_1 × … × L_d`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "Vec<usize>", into = "Vec<usize>")]
pub struct Lattice {
    extents: Vec<usize>,
    strides: Vec<usize>,
    volume: usize,
    /// `fwd[site * d + mu]` = site + e_mu (periodic).
    fwd: Vec<usize>,
    /// `bwd[site * d + mu]` = site − e_mu (periodic).
    bwd: Vec<usize>,
    /// 0 for even sites (Σ x_μ even), 1 for odd.
    parity: Vec<u8>,
}

impl PartialEq for Lattice {
    fn eq(&self, other: &Self) -> bool {
        self.extents == other.extents
    }
}
impl Eq for Lattice {}

impl Lattice {
    /// A lattice with the given extents; every extent must be at least 2.
    pub fn new(extents: &[usize]) -> Result<Self> {
        if extents.is_empty() {
            return Err(Error::InvalidLattice(
                "at least one dimension is needed".into(),
            ));
        }
        if let Some(&l) = extents.iter().find(|&&l| l < 2) {
            return Err(Error::InvalidLattice(format!(
                "every extent must be at least 2, got {l} in {extents:?}"
            )));
        }
        let volume = extents
            .iter()
            .try_fold(1usize, |v, &l| v.checked_mul(l))
            .filter(|&v| v <= u32::MAX as usize)
            .ok_or_else(|| {
                Error::InvalidLattice(format!("{} has more than 2³² sites", extents_text(extents)))
            })?;
        let d = extents.len();
        let bytes = Self::table_bytes(volume, d);
        if bytes > LARGE_TABLES {
            crate::limits::check_memory(
                "lattice",
                &format!("a {} lattice's neighbour tables", extents_text(extents)),
                bytes,
            )
            .map_err(|e| match e {
                Error::InvalidParameter { reason, .. } => Error::InvalidLattice(reason),
                other => other,
            })?;
        }
        let mut strides = vec![1usize; d];
        for mu in (0..d.saturating_sub(1)).rev() {
            strides[mu] = strides[mu + 1] * extents[mu + 1];
        }
        let mut fwd = vec![0usize; volume * d];
        let mut bwd = vec![0usize; volume * d];
        let mut parity = vec![0u8; volume];
        let mut x = vec![0usize; d];
        for site in 0..volume {
            let mut rem = site;
            for mu in 0..d {
                x[mu] = rem / strides[mu];
                rem %= strides[mu];
            }
            parity[site] = (x.iter().sum::<usize>() % 2) as u8;
            for mu in 0..d {
                let up = if x[mu] + 1 == extents[mu] {
                    site + strides[mu] - extents[mu] * strides[mu]
                } else {
                    site + strides[mu]
                };
                let down = if x[mu] == 0 {
                    site + (extents[mu] - 1) * strides[mu]
                } else {
                    site - strides[mu]
                };
                fwd[site * d + mu] = up;
                bwd[site * d + mu] = down;
            }
        }
        Ok(Lattice {
            extents: extents.to_vec(),
            strides,
            volume,
            fwd,
            bwd,
            parity,
        })
    }

    /// Bytes of the neighbour and parity tables of a lattice of `volume` sites in `d`
    /// dimensions (what [`Lattice::new`] allocates).
    fn table_bytes(volume: usize, d: usize) -> u128 {
        let per_site = 2 * d as u128 * std::mem::size_of::<usize>() as u128 + 1;
        volume as u128 * per_site
    }

    /// A `d`-dimensional lattice with all extents equal to `l`.
    pub fn hypercubic(d: usize, l: usize) -> Result<Self> {
        if l >= 2 && d > u32::BITS as usize {
            return Err(Error::InvalidLattice(format!(
                "{d} dimensions of extent {l} have more than 2³² sites"
            )));
        }
        Self::new(&vec![l; d])
    }

    /// Number of dimensions d.
    pub fn dim(&self) -> usize {
        self.extents.len()
    }

    /// The extents L_1..L_d.
    pub fn extents(&self) -> &[usize] {
        &self.extents
    }

    /// Number of sites |Λ|.
    pub fn volume(&self) -> usize {
        self.volume
    }

    /// Writes the coordinates of `site` into `out` (length d).
    pub fn coords(&self, site: usize, out: &mut [usize]) {
        let mut rem = site;
        for (mu, o) in out.iter_mut().enumerate() {
            *o = rem / self.strides[mu];
            rem %= self.strides[mu];
        }
    }

    /// The site with coordinates `x` (each taken modulo its extent).
    pub fn site(&self, x: &[usize]) -> usize {
        x.iter()
            .zip(&self.extents)
            .zip(&self.strides)
            .map(|((&xi, &l), &s)| (xi % l) * s)
            .sum()
    }

    /// The neighbour site + e_mu.
    #[inline]
    pub fn fwd(&self, site: usize, mu: usize) -> usize {
        self.fwd[site * self.extents.len() + mu]
    }

    /// The neighbour site − e_mu.
    #[inline]
    pub fn bwd(&self, site: usize, mu: usize) -> usize {
        self.bwd[site * self.extents.len() + mu]
    }

    /// The forward-neighbour table, `[site * d + mu]`; `volume · d` entries, each a site
    /// index below the volume.
    pub fn fwd_table(&self) -> &[usize] {
        &self.fwd
    }

    /// The backward-neighbour table, `[site * d + mu]`; `volume · d` entries, each a site
    /// index below the volume.
    pub fn bwd_table(&self) -> &[usize] {
        &self.bwd
    }

    /// The forward and backward neighbour tables as one `[usize; D]` row per site, when
    /// `D` is the lattice dimension (`None` otherwise, and for `D = 0`).
    ///
    /// Every entry is a site index below [`Lattice::volume`], and each table has exactly
    /// `volume` rows: the construction guarantees both, and the tables never change.
    #[allow(clippy::type_complexity)]
    pub fn neighbour_rows<const D: usize>(&self) -> Option<(&[[usize; D]], &[[usize; D]])> {
        if D == 0 || D != self.dim() {
            return None;
        }
        let (fwd, _) = self.fwd.as_chunks::<D>();
        let (bwd, _) = self.bwd.as_chunks::<D>();
        Some((fwd, bwd))
    }

    /// Checkerboard parity of a site: 0 when Σ_μ x_μ is even, 1 when odd.
    #[inline]
    pub fn parity(&self, site: usize) -> u8 {
        self.parity[site]
    }

    /// The sites of the given parity, in increasing order.
    pub fn sites_of_parity(&self, parity: u8) -> Vec<usize> {
        (0..self.volume)
            .filter(|&s| self.parity[s] == parity)
            .collect()
    }

    /// Lattice momentum p_μ = 2π n_μ / L_μ of the mode with index `n` along `mu`.
    pub fn momentum(&self, n: usize, mu: usize) -> f64 {
        2.0 * PI * n as f64 / self.extents[mu] as f64
    }

    /// p̂² = Σ_μ 4 sin²(p_μ/2) of the momentum mode numbered like a site (mode `k` has
    /// coordinates n_μ = coords(k)).
    pub fn phat2(&self, k: usize) -> f64 {
        let mut rem = k;
        let mut sum = 0.0;
        for mu in 0..self.dim() {
            let n = rem / self.strides[mu];
            rem %= self.strides[mu];
            let s = (PI * n as f64 / self.extents[mu] as f64).sin();
            sum += 4.0 * s * s;
        }
        sum
    }

    /// p̂² for every momentum mode, indexed like sites.
    pub fn phat2_table(&self) -> Vec<f64> {
        (0..self.volume).map(|k| self.phat2(k)).collect()
    }
}

/// Neighbour tables below this size (64 MiB) are built without asking the system for memory.
const LARGE_TABLES: u128 = 64 << 20;

/// Extents as the user writes them, `8x8`.
fn extents_text(extents: &[usize]) -> String {
    let parts: Vec<String> = extents.iter().map(|l| l.to_string()).collect();
    parts.join("x")
}

impl fmt::Display for Lattice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", extents_text(&self.extents))
    }
}

impl FromStr for Lattice {
    type Err = Error;

    /// Parses `"8x8"`, `"16x8x8"` or `"12"` (one dimension).
    fn from_str(s: &str) -> Result<Self> {
        let extents = s
            .split(['x', 'X'])
            .map(|p| {
                p.trim().parse::<usize>().map_err(|_| {
                    Error::InvalidLattice(format!("`{s}` is not of the form LxL or LxLxL"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Lattice::new(&extents)
    }
}

impl TryFrom<Vec<usize>> for Lattice {
    type Error = Error;
    fn try_from(extents: Vec<usize>) -> Result<Self> {
        Lattice::new(&extents)
    }
}

impl From<Lattice> for Vec<usize> {
    fn from(l: Lattice) -> Vec<usize> {
        l.extents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_periodic_and_inverse() {
        let lat = Lattice::new(&[3, 4, 5]).unwrap();
        let mut x = [0usize; 3];
        for s in 0..lat.volume() {
            lat.coords(s, &mut x);
            assert_eq!(lat.site(&x), s);
            for mu in 0..3 {
                assert_eq!(lat.bwd(lat.fwd(s, mu), mu), s);
                let mut y = x;
                y[mu] = (y[mu] + 1) % lat.extents()[mu];
                assert_eq!(lat.fwd(s, mu), lat.site(&y));
            }
        }
    }

    #[test]
    fn neighbour_rows_match_the_flat_tables() {
        let lat = Lattice::new(&[3, 4, 5]).unwrap();
        assert!(lat.neighbour_rows::<2>().is_none());
        assert!(lat.neighbour_rows::<0>().is_none());
        let (fwd, bwd) = lat.neighbour_rows::<3>().unwrap();
        assert_eq!((fwd.len(), bwd.len()), (lat.volume(), lat.volume()));
        for s in 0..lat.volume() {
            for mu in 0..3 {
                assert_eq!(fwd[s][mu], lat.fwd(s, mu));
                assert_eq!(bwd[s][mu], lat.bwd(s, mu));
            }
        }
    }

    #[test]
    fn checkerboard_neighbours_have_opposite_parity() {
        let lat = Lattice::new(&[4, 6]).unwrap();
        for s in 0..lat.volume() {
            for mu in 0..2 {
                assert_ne!(lat.parity(s), lat.parity(lat.fwd(s, mu)));
            }
        }
        assert_eq!(lat.sites_of_parity(0).len(), 12);
    }

    #[test]
    fn bad_extents_are_refused() {
        assert!(Lattice::new(&[]).is_err());
        assert!(Lattice::new(&[8, 1]).is_err());
        assert!("8x".parse::<Lattice>().is_err());
        assert!("axb".parse::<Lattice>().is_err());
        assert_eq!("8x6".parse::<Lattice>().unwrap().extents(), &[8, 6]);
    }

    #[test]
    fn serde_round_trip_keeps_extents() {
        let lat = Lattice::new(&[6, 8]).unwrap();
        let s = serde_json::to_string(&lat).unwrap();
        assert_eq!(s, "[6,8]");
        let back: Lattice = serde_json::from_str(&s).unwrap();
        assert_eq!(back, lat);
        assert!(serde_json::from_str::<Lattice>("[6,1]").is_err());
    }

    #[test]
    fn phat2_of_zero_mode_is_zero_and_max_is_4d() {
        let lat = Lattice::new(&[4, 4]).unwrap();
        assert_eq!(lat.phat2(0), 0.0);
        let k = lat.site(&[2, 2]);
        assert!((lat.phat2(k) - 8.0).abs() < 1e-12);
    }
}
