//! MPI ranks as a [`Collective`] (the `mpi` feature, on the system's MPI library).
//!
//! [`MpiRanks::init`] initialises MPI once per process; dropping the value finalises it.
//! The sums run as a ring all-reduce written here over point-to-point messages: the vector
//! is cut into one segment per rank, each segment is accumulated around the ring starting at
//! its own rank (a reduce-scatter of R − 1 steps) and the sums are passed on around the ring
//! (an all-gather of R − 1 steps). Every rank sends and receives 2(R − 1)/R of the vector,
//! the bandwidth optimum, and each element is summed in an order fixed by the rank count, so
//! the result never depends on message timing or on the MPI library's choice of algorithm.

use std::sync::Mutex;

use ::mpi::Threading;
use ::mpi::datatype::Equivalence;
use ::mpi::environment::Universe;
use ::mpi::point_to_point::send_receive_into;
use ::mpi::topology::{Communicator, SimpleCommunicator};
use ::mpi::traits::{Destination, Root, Source};

use crate::error::{Error, Result};
use crate::parallel::{Collective, share};

/// Environment variables set by the common MPI launchers (Open MPI's `mpirun`, MPICH's
/// Hydra, PMIx and PMI-2 as used by Slurm's `srun`, MVAPICH): a process that sees none of
/// them was started directly and runs alone.
pub const LAUNCHER_VARIABLES: [&str; 5] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_SIZE",
    "PMI_RANK",
    "MV2_COMM_WORLD_SIZE",
];

/// Whether this process was started by an MPI launcher (see [`LAUNCHER_VARIABLES`]).
pub fn launched_by_mpi() -> bool {
    LAUNCHER_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

/// The ranks of `MPI_COMM_WORLD`.
pub struct MpiRanks {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Serialises the MPI calls of this value's methods, whichever thread makes them.
    lock: Mutex<()>,
    /// Kept for its `Drop`, which finalises MPI; declared last so it is dropped last.
    _universe: Universe,
}

// SAFETY: MPI is initialised with at least MPI_THREAD_SERIALIZED (checked in `init`), which
// allows any thread to call MPI as long as calls never overlap; every method takes `lock`
// for its whole MPI exchange, so calls from different threads are serialised.
unsafe impl Send for MpiRanks {}
// SAFETY: as for `Send`: shared references only reach MPI through the serialising lock.
unsafe impl Sync for MpiRanks {}

impl MpiRanks {
    /// Initialises MPI (asking for MPI_THREAD_MULTIPLE, accepting MPI_THREAD_SERIALIZED).
    /// Errors when MPI is already initialised in this process or provides less thread
    /// support.
    pub fn init() -> Result<Self> {
        let (universe, provided) = ::mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| {
                Error::Communication("MPI is already initialised in this process".into())
            })?;
        if provided < Threading::Serialized {
            return Err(Error::Communication(format!(
                "the MPI library provides thread support {provided:?}; latflow needs at least \
                 Serialized (MPI_THREAD_SERIALIZED)"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank(), world.size());
        Ok(MpiRanks {
            world,
            rank: usize::try_from(rank).unwrap_or(0),
            size: usize::try_from(size).unwrap_or(1),
            lock: Mutex::new(()),
            _universe: universe,
        })
    }

    /// Ends every rank of the job with exit code `code` (`MPI_Abort`): what a rank does on an
    /// error, so that the others do not wait for it forever.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ring all-reduce described in the module documentation.
    fn ring_sum<T>(&self, values: &mut [T])
    where
        T: Equivalence + Copy + Default + std::ops::Add<Output = T>,
    {
        let (n, r) = (self.size, self.rank);
        if n < 2 {
            return;
        }
        let _guard = self.guard();
        let next = self.world.process_at_rank(((r + 1) % n) as i32);
        let previous = self.world.process_at_rank(((r + n - 1) % n) as i32);
        let len = values.len();
        let segment = |k: usize| share(len, n, k % n);
        let mut buffer = vec![T::default(); values.len().div_ceil(n)];
        // Reduce-scatter: at step s rank r passes on segment r − s and adds its own values
        // to segment r − s − 1, so segment k is summed in the order k, k + 1, …, k − 1.
        for s in 0..n - 1 {
            let (sa, sb) = segment(r + n - s);
            let (ra, rb) = segment(r + 2 * n - s - 1);
            let received = &mut buffer[..rb - ra];
            send_receive_into(&values[sa..sb], &next, received, &previous);
            for (v, &x) in values[ra..rb].iter_mut().zip(received.iter()) {
                *v = x + *v;
            }
        }
        // All-gather: rank r now holds the whole sum of segment r + 1 and passes sums on.
        for s in 0..n - 1 {
            let (sa, sb) = segment(r + 1 + n - s);
            let (ra, rb) = segment(r + n - s);
            let received = &mut buffer[..rb - ra];
            send_receive_into(&values[sa..sb], &next, received, &previous);
            values[ra..rb].copy_from_slice(received);
        }
    }
}

impl Collective for MpiRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f32(&self, values: &mut [f32]) -> Result<()> {
        self.ring_sum(values);
        Ok(())
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.ring_sum(values);
        Ok(())
    }

    fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let _guard = self.guard();
        if self.rank != 0 {
            self.world.process_at_rank(0).send(bytes);
            return Ok(Vec::new());
        }
        let mut all = vec![bytes.to_vec()];
        for r in 1..self.size {
            let (received, _) = self.world.process_at_rank(r as i32).receive_vec::<u8>();
            all.push(received);
        }
        Ok(all)
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<()> {
        let _guard = self.guard();
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let len = usize::try_from(len)
            .map_err(|_| Error::Communication(format!("a broadcast of {len} bytes")))?;
        bytes.resize(len, 0);
        root.broadcast_into(&mut bytes[..]);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let _guard = self.guard();
        ::mpi::collective::CommunicatorCollectives::barrier(&self.world);
        Ok(())
    }
}
