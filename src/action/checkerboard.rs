//! Checkerboard local Metropolis sweeps: every even site, then every odd site (parity of
//! Σ_μ x_μ), line by line along the last axis, the random numbers of a line drawn in one go
//! from a [`LaneStream`] of eight generators advanced together, seeded afresh from the
//! chain's generator at the start of every sweep.
//! [`Checkerboard::sweep_reference`] works through any action's `delta_local`; the φ⁴ sweep
//! in two dimensions updates half a row at a time in fixed-width chunks of f64 lanes, written
//! so that they vectorise, and takes exactly the same decisions.

use rand::Rng;

use crate::action::phi4::LocalCoefficients;
use crate::action::{Action, SweepTally};
use crate::error::{Error, Result};
use crate::lattice::Lattice;
use crate::rng::{SimRng, splitmix64};

/// The Metropolis decision of a checkerboard sweep for the action change ΔS = `delta` and
/// the uniform v = `v` in [0, 1): accepted when v < e^{−ΔS}, the exponential of the standard
/// library (a NaN ΔS is rejected).
#[inline]
pub fn checkerboard_accepts(delta: f64, v: f64) -> bool {
    v < (-delta).exp()
}

/// The layout of a checkerboard sweep on one lattice and its reusable buffers, so that a
/// sweep allocates nothing.
///
/// A line is a run of sites along the last axis (contiguous in memory); the sites of one
/// parity on a line are every other one. A sweep first seeds a [`LaneStream`] from the
/// chain's generator; then for each parity (even first), each line in increasing order and
/// each of the `hits` proposals per site, it draws the line's uniforms u (proposals
/// φ_x + δ(2u − 1), the first L_d/2 of L_d/2 rounded up to a multiple of [`LANES`]) and then
/// as many uniforms v (accepted when v < e^{−ΔS}, [`checkerboard_accepts`]) from that
/// stream, and updates the line's sites of that parity in increasing order. The neighbours of a site all have the
/// other parity, so the updates of one parity do not interact for a nearest-neighbour
/// action, and the fast sweeps update them lane by lane with the same numbers and
/// decisions as the reference sweep.
///
/// Every extent must be even: on a torus with an odd extent a site and its neighbour
/// across the boundary have the same parity.
#[derive(Clone, Debug)]
pub struct Checkerboard {
    extents: Vec<usize>,
    volume: usize,
    /// L_d, the sites of one line.
    line: usize,
    /// Parity of the first site of each line.
    line_parity: Vec<u8>,
    /// L_d/2 rounded up to whole chunks of [`LANES`].
    padded: usize,
    /// The uniforms of one line: L_d/2 for the proposals at the start, L_d/2 for the
    /// acceptance tests from `padded` on; the tests' padding lanes hold 2 (a rejection).
    uniforms: Vec<f64>,
    /// Two dimensions only: the even and the odd sites, each row `[ghost, L_1/2 values,
    /// ghost, padding]` of `padded + 2` entries; the ghosts repeat the row's last and first
    /// value (periodic neighbours), the padding holds zeros.
    halves: Vec<f64>,
    /// The neighbour sums of half a row (with padding).
    neighbours: Vec<f64>,
}

/// Smallest exponent the vectorised test evaluates: e^{−708} is still a normal number.
const EXP_MIN: f64 = -708.0;
/// The vectorised test decides v < e^{−ΔS} from an approximation E of the exponential
/// when v < E·(1 − 2⁻⁴⁰) or v ≥ E·(1 + 2⁻⁴⁰); the relative error of E is below 2·10⁻¹⁴
/// (and that of the library's exponential below 2⁻⁵²), so those decisions are the library's.
/// Between the two bounds (probability about 2⁻³⁹) the library's exponential decides.
const MARGIN: f64 = 1.0 / (1u64 << 40) as f64;
/// ln 2 = LN2_HI + LN2_LO (fdlibm's split): the high part has 32 significant bits, so that
/// n·LN2_HI is exact for the exponents n of [`exp_nonpositive`].
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// Lanes of a chunk of the vectorised sweep.
const LANES: usize = 8;

impl Checkerboard {
    /// Checks that `lattice` can be checkerboarded: every extent even (an error naming
    /// `sweep_order` and the extents otherwise).
    pub fn check(lattice: &Lattice) -> Result<()> {
        if lattice.extents().iter().any(|&l| l % 2 != 0) {
            return Err(Error::param(
                "sweep_order",
                format!(
                    "a checkerboard sweep needs even extents (across an odd extent a site's \
                     neighbour has its own parity), the lattice is {lattice}"
                ),
            ));
        }
        Ok(())
    }

    /// The layout and buffers for `lattice` (every extent even, see [`Checkerboard::check`]).
    pub fn new(lattice: &Lattice) -> Result<Self> {
        Self::check(lattice)?;
        let extents = lattice.extents().to_vec();
        let line = *extents
            .last()
            .expect("a lattice has at least one dimension");
        let volume = lattice.volume();
        let line_parity = (0..volume / line)
            .map(|l| lattice.parity(l * line))
            .collect();
        let half = line / 2;
        let padded = half.div_ceil(LANES) * LANES;
        let halves = if extents.len() == 2 {
            vec![0.0; 2 * extents[0] * (padded + 2)]
        } else {
            Vec::new()
        };
        let mut uniforms = vec![0.5; 2 * padded];
        uniforms[padded..].fill(2.0);
        Ok(Checkerboard {
            extents,
            volume,
            line,
            line_parity,
            padded,
            uniforms,
            halves,
            neighbours: vec![0.0; padded],
        })
    }

    /// Whether this layout belongs to `lattice`.
    pub fn fits(&self, lattice: &Lattice) -> bool {
        self.extents == lattice.extents()
    }

    /// Panics unless the layout belongs to `lattice` and `phi` has one value per site.
    fn check_field(&self, lattice: &Lattice, phi: &[f64]) {
        assert!(
            self.fits(lattice) && phi.len() == self.volume,
            "a checkerboard sweep laid out for {:?} got an action on {lattice} and a field \
             of {} values",
            self.extents,
            phi.len()
        );
    }

    /// One checkerboard sweep of `phi` with `hits` proposals per site and proposal
    /// half-width `step_size`, each site's change from [`Action::delta_local`]: the reference
    /// the fast sweeps reproduce, and exact for any action (each update sees the current
    /// field). Panics if the layout does not belong to the action's lattice or `phi` does
    /// not cover it.
    pub fn sweep_reference<A: Action + ?Sized>(
        &mut self,
        action: &A,
        phi: &mut [f64],
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        self.check_field(action.lattice(), phi);
        let (line, half) = (self.line, self.line / 2);
        let mut stream = LaneStream::seeded(rng);
        let mut tally = SweepTally::default();
        for parity in 0..2u8 {
            for (l, &first) in self.line_parity.iter().enumerate() {
                let start = l * line + usize::from((parity + first) % 2);
                for _ in 0..hits {
                    let (u, v) = draw_line(&mut stream, &mut self.uniforms, half, self.padded);
                    for (k, (&u, &v)) in u[..half].iter().zip(&v[..half]).enumerate() {
                        let site = start + 2 * k;
                        let new = phi[site] + step_size * (2.0 * u - 1.0);
                        let delta = action.delta_local(phi, site, new);
                        if checkerboard_accepts(delta, v) {
                            phi[site] = new;
                            tally.accepted += 1;
                            tally.delta_action += delta;
                        }
                    }
                }
            }
        }
        tally
    }

    /// The checkerboard sweep of the φ⁴ action with local coefficients `c` on `lattice`:
    /// vectorised in two dimensions, [`Checkerboard::sweep_reference`] through
    /// `delta_local` otherwise. The same decisions and field as the reference; the summed
    /// ΔS agrees to rounding (it is summed per lane). Panics as the reference does.
    pub(crate) fn sweep_phi4<A: Action + ?Sized>(
        &mut self,
        action: &A,
        c: LocalCoefficients,
        phi: &mut [f64],
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        if self.extents.len() != 2 {
            return self.sweep_reference(action, phi, step_size, hits, rng);
        }
        self.check_field(action.lattice(), phi);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the processor supports the features the function is compiled for.
                return unsafe { self.phi4_2d_avx512(c, phi, step_size, hits, rng) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: as above.
                return unsafe { self.phi4_2d_avx2(c, phi, step_size, hits, rng) };
            }
        }
        self.phi4_2d(c, phi, step_size, hits, rng)
    }

    /// [`Checkerboard::phi4_2d`] compiled with AVX-512 (8 f64 lanes).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn phi4_2d_avx512(
        &mut self,
        c: LocalCoefficients,
        phi: &mut [f64],
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        self.phi4_2d(c, phi, step_size, hits, rng)
    }

    /// [`Checkerboard::phi4_2d`] compiled with AVX2 (4 f64 lanes).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn phi4_2d_avx2(
        &mut self,
        c: LocalCoefficients,
        phi: &mut [f64],
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        self.phi4_2d(c, phi, step_size, hits, rng)
    }

    /// The two-dimensional φ⁴ sweep on the parity halves: the field is split into its even
    /// and odd sites (rows of L_1/2 with periodic ghost columns), so that the neighbours of
    /// half a row are contiguous slices (the other half's rows above and below, and its
    /// own row shifted by one), updated in whole chunks of [`LANES`] (padding lanes and
    /// ghosts draw v = 2, a rejection, and keep their values), and written back.
    #[inline(always)]
    fn phi4_2d(
        &mut self,
        c: LocalCoefficients,
        phi: &mut [f64],
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        let (rows, line) = (self.extents[0], self.extents[1]);
        let (half, padded) = (line / 2, self.padded);
        let width = padded + 2;
        let (even, odd) = self.halves.split_at_mut(rows * width);
        for (r, row) in phi.chunks_exact(line).enumerate() {
            let shift = r % 2;
            let (e, o) = (
                &mut even[r * width..(r + 1) * width],
                &mut odd[r * width..(r + 1) * width],
            );
            for k in 0..half {
                e[k + 1] = row[2 * k + shift];
                o[k + 1] = row[2 * k + 1 - shift];
            }
            set_ghosts(e, half);
            set_ghosts(o, half);
        }
        let mut stream = LaneStream::seeded(rng);
        let mut tally = LaneTally::default();
        for parity in 0..2 {
            let (own, other) = if parity == 0 {
                (&mut *even, &*odd)
            } else {
                (&mut *odd, &*even)
            };
            for r in 0..rows {
                // Site (r, 2k + s) of this parity; the neighbours in rows r ± 1 have the
                // same k, those at columns ± 1 sit at k + s and k + s − 1 of the other
                // half's row r.
                let s = (r + parity) % 2;
                let below = &other[((r + 1) % rows) * width + 1..][..padded];
                let above = &other[((r + rows - 1) % rows) * width + 1..][..padded];
                let same = &other[r * width..(r + 1) * width];
                let (right, left) = (&same[1 + s..][..padded], &same[s..][..padded]);
                let neighbours = &mut self.neighbours[..padded];
                // Σ_μ (φ_{x+μ} + φ_{x−μ}) summed as the scalar sweep sums it.
                for k in 0..padded {
                    neighbours[k] = (below[k] + above[k]) + (right[k] + left[k]);
                }
                let values = &mut own[r * width + 1..][..padded];
                for _ in 0..hits {
                    let (u, v) = draw_line(&mut stream, &mut self.uniforms, half, padded);
                    let chunks = values
                        .as_chunks_mut::<LANES>()
                        .0
                        .iter_mut()
                        .zip(neighbours.as_chunks::<LANES>().0)
                        .zip(u.as_chunks::<LANES>().0)
                        .zip(v.as_chunks::<LANES>().0);
                    for (((a, n), u), v) in chunks {
                        update_chunk(c, step_size, a, n, u, v, &mut tally);
                    }
                }
            }
            for row in own.chunks_exact_mut(width) {
                set_ghosts(row, half);
            }
        }
        for (r, row) in phi.chunks_exact_mut(line).enumerate() {
            let shift = r % 2;
            let (e, o) = (&even[r * width + 1..], &odd[r * width + 1..]);
            for k in 0..half {
                row[2 * k + shift] = e[k];
                row[2 * k + 1 - shift] = o[k];
            }
        }
        tally.finish()
    }
}

/// Draws the uniforms of one line into `buffer` (of 2 `padded` values, `padded` a multiple
/// of [`LANES`]): `padded` for the proposals, then `padded` for the acceptance tests, whose
/// lanes from `half` on are set to 2 (a rejection); returns the two runs.
#[inline(always)]
fn draw_line<'a>(
    stream: &mut LaneStream,
    buffer: &'a mut [f64],
    half: usize,
    padded: usize,
) -> (&'a [f64], &'a [f64]) {
    stream.fill(&mut buffer[..2 * padded]);
    buffer[padded + half..2 * padded].fill(2.0);
    buffer.split_at(padded)
}

/// Eight xoshiro256++ generators (lanes) advanced in lockstep, so that a block of eight
/// random words takes a few vector instructions. Seeded per sweep from the chain's
/// generator (each of the 32 state words is SplitMix64 of one of its draws), so
/// the chain's state stays its one generator and a sweep's numbers are a fixed function of
/// it; a lane's stream is the xoshiro256++ stream of its state (the lanes are independent
/// starting points of a generator of period 2²⁵⁶ − 1).
#[derive(Clone, Debug)]
pub struct LaneStream {
    /// State word i of lane j at `state[i][j]`.
    state: [[u64; LANES]; 4],
}

impl LaneStream {
    /// The lanes seeded from 32 draws of `rng`.
    pub fn seeded(rng: &mut SimRng) -> Self {
        let mut state = [[0u64; LANES]; 4];
        for word in &mut state {
            for x in word.iter_mut() {
                *x = splitmix64(rng.next_u64());
            }
        }
        for j in 0..LANES {
            // The all-zero state is xoshiro's one fixed point (probability 2⁻²⁵⁶).
            if state.iter().all(|w| w[j] == 0) {
                state[0][j] = 0x9E37_79B9_7F4A_7C15;
            }
        }
        LaneStream { state }
    }

    /// The next random word of every lane (xoshiro256++: rotl(s₀ + s₃, 23) + s₀, then the
    /// state update).
    #[inline(always)]
    pub fn next_words(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.state;
        let mut out = [0u64; LANES];
        for j in 0..LANES {
            out[j] = s0[j]
                .wrapping_add(s3[j])
                .rotate_left(23)
                .wrapping_add(s0[j]);
            let t = s1[j] << 17;
            s2[j] ^= s0[j];
            s3[j] ^= s1[j];
            s1[j] ^= s2[j];
            s0[j] ^= s3[j];
            s2[j] ^= t;
            s3[j] = s3[j].rotate_left(45);
        }
        out
    }

    /// Fills `out` (a multiple of eight long; a shorter tail is left alone) with
    /// uniforms in [0, 1) on the grid of 2⁻⁵²: the top 52 bits of a word as the mantissa of
    /// a number in [1, 2), minus 1 (exact, and the same on every build).
    #[inline(always)]
    pub fn fill(&mut self, out: &mut [f64]) {
        for chunk in out.as_chunks_mut::<LANES>().0 {
            let words = self.next_words();
            for (x, w) in chunk.iter_mut().zip(words) {
                *x = f64::from_bits((w >> 12) | 0x3FF0_0000_0000_0000) - 1.0;
            }
        }
    }
}

/// Sets the ghost columns of a half row `[ghost, n values, ghost, …]`: the last value
/// before the first, the first after the last.
#[inline(always)]
fn set_ghosts(row: &mut [f64], n: usize) {
    row[0] = row[n];
    row[n + 1] = row[1];
}

/// Accepted proposals and per-lane sums of their ΔS.
#[derive(Default)]
struct LaneTally {
    accepted: u32,
    delta: [f64; LANES],
}

impl LaneTally {
    fn finish(&self) -> SweepTally {
        SweepTally {
            accepted: self.accepted,
            delta_action: self.delta.iter().sum(),
        }
    }
}

/// Proposes and tests [`LANES`] independent sites at once: a_j → b_j = a_j + δ(2u_j − 1),
/// ΔS_j from the φ⁴ formula, accepted when v_j < e^{−ΔS_j} ([`decide`], and the library's
/// exponential for the rare lanes it leaves open).
#[inline(always)]
fn update_chunk(
    c: LocalCoefficients,
    step_size: f64,
    a: &mut [f64; LANES],
    n: &[f64; LANES],
    u: &[f64; LANES],
    v: &[f64; LANES],
    tally: &mut LaneTally,
) {
    const W: usize = LANES;
    let mut b = [0.0; W];
    let mut delta = [0.0; W];
    let mut accept = [false; W];
    let mut open = [false; W];
    for j in 0..W {
        b[j] = a[j] + step_size * (2.0 * u[j] - 1.0);
        delta[j] = c.delta(a[j], b[j], n[j]);
        (accept[j], open[j]) = decide(delta[j], v[j]);
    }
    if open.iter().any(|&o| o) {
        for j in 0..W {
            if open[j] {
                accept[j] = checkerboard_accepts(delta[j], v[j]);
            }
        }
    }
    let mut accepted = 0;
    for j in 0..W {
        let yes = accept[j];
        a[j] = if yes { b[j] } else { a[j] };
        tally.delta[j] += if yes { delta[j] } else { 0.0 };
        accepted += u32::from(yes);
    }
    tally.accepted += accepted;
}

/// The branch-free part of the test v < e^{−ΔS}: (accepted, open). When `open` is false,
/// `accepted` is the decision of [`checkerboard_accepts`]; `open` lanes (v within a relative
/// 2⁻⁴⁰ of e^{−ΔS}, ΔS > 708, or ΔS NaN) are left to it.
#[inline(always)]
fn decide(delta: f64, v: f64) -> (bool, bool) {
    let x = -delta;
    let in_range = x >= EXP_MIN;
    let x = if x < 0.0 { x } else { 0.0 };
    let x = if in_range { x } else { EXP_MIN };
    let e = exp_nonpositive(x);
    let yes = v < e * (1.0 - MARGIN);
    let no = v >= e * (1.0 + MARGIN);
    (yes && in_range, !(in_range && (yes || no)))
}

/// e^x for x in [−708, 0] without library calls or branches, relative error below 2·10⁻¹⁴:
/// x = n ln 2 + r with |r| ≤ ln 2 / 2 (Cody–Waite, ln 2 in two parts), e^r by its Taylor
/// polynomial of degree 11 (relative remainder at most e^{|r|} |r|¹²/12! < 9·10⁻¹⁵, the
/// rest rounding), and 2ⁿ built from its bits.
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    // Adding 1.5·2⁵² rounds to the nearest integer, which then sits in the low mantissa bits.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let shifted = x * std::f64::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 39_916_800.0;
    for inv_factorial in [
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + inv_factorial;
    }
    let exponent = (shifted.to_bits() as i64).wrapping_sub(ROUND.to_bits() as i64);
    p * f64::from_bits((exponent.wrapping_add(1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_from_seed;
    use rand::RngExt;

    #[test]
    fn the_exponential_is_within_its_bound() {
        let mut rng = rng_from_seed(1);
        let mut worst: f64 = 0.0;
        for i in 0..200_000 {
            let x = if i % 2 == 0 {
                -708.0 * rng.random::<f64>()
            } else {
                -2.0 * rng.random::<f64>()
            };
            let rel = (exp_nonpositive(x) / x.exp() - 1.0).abs();
            worst = worst.max(rel);
        }
        for x in [0.0, -0.0, -1e-300, EXP_MIN, -0.5 * std::f64::consts::LN_2] {
            worst = worst.max((exp_nonpositive(x) / x.exp() - 1.0).abs());
        }
        assert!(worst < 1e-14, "relative error {worst:e}");
        // The split of ln 2 is fdlibm's, and its high part has 32 significant bits.
        assert_eq!(LN2_HI.to_bits(), 0x3FE6_2E42_FEE0_0000);
        assert_eq!(LN2_LO.to_bits(), 0x3DEA_39EF_3579_3C76);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    /// The branch-free test agrees with the library's v < e^{−ΔS} wherever it decides,
    /// including v at and next to the library's value, and leaves the cases it cannot
    /// decide open.
    #[test]
    fn the_vectorised_decision_is_the_library_decision() {
        let mut rng = rng_from_seed(2);
        let check = |delta: f64, v: f64| {
            let (yes, open) = decide(delta, v);
            if !open {
                assert_eq!(yes, checkerboard_accepts(delta, v), "ΔS = {delta}, v = {v}");
            }
            open
        };
        let mut accepted = 0;
        for _ in 0..100_000 {
            let delta = 6.0 * rng.random::<f64>() - 1.0;
            let v = rng.random::<f64>();
            assert!(!check(delta, v));
            accepted += usize::from(decide(delta, v).0);
            let e = (-delta).exp();
            if e < 1.0 {
                // v exactly at the library's value (rejected) and just below it (accepted):
                // the approximation cannot tell them apart, so both stay open.
                assert!(check(delta, e));
                assert!(check(delta, e.next_down()));
            }
        }
        // Both outcomes occur (about a third of these proposals are accepted).
        assert!((20_000..50_000).contains(&accepted), "{accepted}");
        for delta in [f64::NAN, 710.0, 800.0, f64::INFINITY] {
            assert!(check(delta, 0.0), "ΔS = {delta} with v = 0 stays open");
            assert!(check(delta, 0.5));
        }
        // Downhill moves are accepted below 1 − 2⁻⁴⁰, and left open above.
        assert!(!check(-3.0, 0.999) && decide(-3.0, 0.999).0);
        assert!(!check(f64::NEG_INFINITY, 0.2) && decide(f64::NEG_INFINITY, 0.2).0);
        assert!(check(-3.0, 1.0f64.next_down()));
        assert!(decide(f64::NAN, 0.0) == (false, true));
    }

    /// The baseline, AVX2 and AVX-512 builds of the two-dimensional φ⁴ sweep (those the
    /// processor has) give the same field, tally and random stream to the bit.
    #[test]
    fn every_build_of_the_phi4_sweep_gives_the_same_numbers() {
        let lattice = Lattice::new(&[10, 26]).unwrap();
        let phi4 = crate::action::Phi4::hopping(lattice.clone(), 0.6, 0.4).unwrap();
        let c = phi4.local_coefficients();
        let mut rng = rng_from_seed(3);
        let phi0: Vec<f64> = (0..260).map(|_| 3.0 * rng.random::<f64>() - 1.5).collect();
        type Build =
            fn(&mut Checkerboard, LocalCoefficients, &mut [f64], &mut SimRng) -> SweepTally;
        let mut builds: Vec<(&str, Build)> =
            vec![("baseline", |b, c, phi, rng| b.phi4_2d(c, phi, 1.2, 2, rng))];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has AVX2.
                builds.push(("avx2", |b, c, phi, rng| unsafe {
                    b.phi4_2d_avx2(c, phi, 1.2, 2, rng)
                }));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the processor has AVX-512F.
                builds.push(("avx512", |b, c, phi, rng| unsafe {
                    b.phi4_2d_avx512(c, phi, 1.2, 2, rng)
                }));
            }
        }
        let run = |build: Build| {
            let mut board = Checkerboard::new(&lattice).unwrap();
            let mut phi = phi0.clone();
            let mut rng = rng_from_seed(4);
            let tally = build(&mut board, c, &mut phi, &mut rng);
            (phi, tally, rng.random::<u64>())
        };
        let (phi, tally, next) = run(builds[0].1);
        assert!(tally.accepted > 100 && phi != phi0, "{tally:?}");
        for (name, build) in &builds[1..] {
            assert_eq!(run(*build), (phi.clone(), tally, next), "{name}");
        }
    }

    /// Each lane of the sweep's stream is the xoshiro256++ stream of its state, and its
    /// uniforms lie in [0, 1) with mean ½ and variance 1/12 within 4σ.
    #[test]
    fn every_lane_is_a_xoshiro256plusplus_stream() {
        use rand::SeedableRng;
        let mut stream = LaneStream::seeded(&mut rng_from_seed(5));
        let mut lanes: Vec<SimRng> = (0..LANES)
            .map(|j| {
                let mut seed = [0u8; 32];
                for (i, word) in stream.state.iter().enumerate() {
                    seed[8 * i..8 * i + 8].copy_from_slice(&word[j].to_le_bytes());
                }
                SimRng::from_seed(seed)
            })
            .collect();
        for _ in 0..1000 {
            let words = stream.next_words();
            for (w, lane) in words.iter().zip(&mut lanes) {
                assert_eq!(*w, lane.next_u64());
            }
        }
        let n = 800_000;
        let mut u = vec![0.0; n];
        stream.fill(&mut u);
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().sum::<f64>() / n as f64;
        let var = u.iter().map(|x| (x - 0.5).powi(2)).sum::<f64>() / n as f64;
        // σ(mean) = √(1/12n), σ(var) = √(1/180n) for the uniform distribution.
        assert!(
            (mean - 0.5).abs() < 4.0 * (1.0 / (12.0 * n as f64)).sqrt(),
            "{mean}"
        );
        assert!(
            (var - 1.0 / 12.0).abs() < 4.0 * (1.0 / (180.0 * n as f64)).sqrt(),
            "{var}"
        );
        // Streams seeded from different chain states differ.
        let mut other = LaneStream::seeded(&mut rng_from_seed(6));
        assert_ne!(
            other.next_words(),
            LaneStream::seeded(&mut rng_from_seed(5)).next_words()
        );
    }

    #[test]
    fn odd_extents_are_refused_with_the_extents() {
        let err = Checkerboard::new(&Lattice::new(&[8, 7]).unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sweep_order") && text.contains("8x7"),
            "{text}"
        );
        assert!(Checkerboard::new(&Lattice::new(&[2, 4, 6]).unwrap()).is_ok());
    }
}
