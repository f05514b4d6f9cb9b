//! The processes a run is spread over, and the few collective operations latflow needs
//! between them: [`Collective`], with [`SingleProcess`] (one process, every operation
//! trivial) and, with the `mpi` feature, `mpi::MpiRanks` (MPI ranks, e.g. under
//! `mpirun` or `srun`).
//!
//! What runs on several ranks:
//! - **data-parallel training** ([`crate::train::Trainer::with_ranks`]): rank r of R
//!   generates and differentiates its [`share`] of the rows of each batch, the gradients are summed over ranks in a fixed order, and every rank applies the same
//!   update;
//! - **replica chains**: one independent chain per rank, analysed together by the Γ-method
//!   for replicas;
//! - **sweeps**: the points of a grid dealt round-robin to the ranks.

#[cfg(feature = "mpi")]
pub mod mpi;

use crate::error::Result;

/// The number of processes an MPI launcher says it started (`OMPI_COMM_WORLD_SIZE` of
/// Open MPI, `PMI_SIZE` of MPICH's Hydra and Slurm's PMI-2, `MV2_COMM_WORLD_SIZE` of
/// MVAPICH), in builds with or without the `mpi` feature; `None` when started directly.
pub fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"]
        .iter()
        .filter_map(|name| std::env::var(name).ok()?.trim().parse::<usize>().ok())
        .max()
}

/// The processes of one run and their collective operations. Every rank must call the
/// collective operations in the same order with buffers of the same length (as MPI
/// requires); a rank that skips one leaves the others waiting.
pub trait Collective: Send + Sync {
    /// This process's index in 0..size.
    fn rank(&self) -> usize;

    /// The number of processes.
    fn size(&self) -> usize;

    /// Whether this is rank 0, the one that writes files and reports.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Replaces `values` on every rank by their element-wise sum over ranks. The summation
    /// order of each element is fixed by the rank count alone (not by timing or by the
    /// transport), so the result is reproducible; with two ranks it is a₀ + a₁, the sum a
    /// single process makes of two chunks.
    fn sum_f32(&self, values: &mut [f32]) -> Result<()>;

    /// [`Collective::sum_f32`] for f64 values.
    fn sum_f64(&self, values: &mut [f64]) -> Result<()>;

    /// Rank 0 receives every rank's `bytes` in rank order (its own first); the other ranks
    /// get an empty list.
    fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Every rank receives rank 0's `bytes` (the others' input is replaced).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<()>;

    /// Whether `flag` is set on any rank (the same answer on every rank).
    fn any(&self, flag: bool) -> Result<bool> {
        let mut value = [if flag { 1.0 } else { 0.0 }];
        self.sum_f64(&mut value)?;
        Ok(value[0] > 0.0)
    }

    /// Waits until every rank has reached this call.
    fn barrier(&self) -> Result<()>;
}

/// One process: sums, gathers and broadcasts leave the data as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn sum_f32(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn sum_f64(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }

    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// The rows [a, b) of `total` that part `index` of `parts` holds: contiguous and in order,
/// the first `total mod parts` parts holding one row more than the others. Batch chunks and
/// ranks split a batch this way, so rank r of R holds the rows of chunk r of a single
/// process with R chunks.
pub fn share(total: usize, parts: usize, index: usize) -> (usize, usize) {
    let parts = parts.max(1);
    let (q, r) = (total / parts, total % parts);
    let start = index * q + index.min(r);
    (start, start + q + usize::from(index < r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_total_in_order() {
        for total in [0, 1, 7, 64, 1000] {
            for parts in 1..9 {
                let mut next = 0;
                for i in 0..parts {
                    let (a, b) = share(total, parts, i);
                    assert_eq!(a, next);
                    assert!(b - a <= total / parts + 1);
                    next = b;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn a_single_process_keeps_its_data() {
        let one = SingleProcess;
        let mut v = [1.5f32, -2.0];
        one.sum_f32(&mut v).unwrap();
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!(one.gather_bytes(b"ab").unwrap(), vec![b"ab".to_vec()]);
        assert!(one.any(true).unwrap() && !one.any(false).unwrap());
        assert!(one.is_root() && one.size() == 1);
    }
}
