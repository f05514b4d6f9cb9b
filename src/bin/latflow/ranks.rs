//! The processes of a run: MPI ranks when started by an MPI launcher, else this one.

use std::sync::Arc;

use anyhow::{Result, bail};

/// The processes of this run: MPI ranks when the program was started by an MPI launcher
/// (`mpirun`, `srun`; built with the `mpi` feature), else this process alone.
pub(crate) struct Ranks {
    pub(crate) shared: Arc<dyn latflow::parallel::Collective>,
    #[cfg(feature = "mpi")]
    pub(crate) mpi: Option<Arc<latflow::parallel::mpi::MpiRanks>>,
}

impl Ranks {
    #[cfg(feature = "mpi")]
    pub(crate) fn init() -> latflow::Result<Ranks> {
        use latflow::parallel::mpi::{MpiRanks, launched_by_mpi};
        if !launched_by_mpi() {
            return Ok(Ranks::single());
        }
        let mpi = Arc::new(MpiRanks::init()?);
        Ok(Ranks {
            shared: mpi.clone(),
            mpi: Some(mpi),
        })
    }

    /// This process alone; a build without MPI started by an MPI launcher as one of
    /// several processes is refused (each would run the whole job into the same files).
    #[cfg(not(feature = "mpi"))]
    pub(crate) fn init() -> latflow::Result<Ranks> {
        match latflow::parallel::launcher_world_size() {
            Some(size) if size > 1 => Err(latflow::Error::Incompatible(format!(
                "this latflow was built without MPI, and an MPI launcher started it as one of \
                 {size} processes: each would run the whole job into the same files. Build it \
                 with MPI (`cargo build --release --features mpi`, see docs/parallel.md), or \
                 start it once without mpirun/srun"
            ))),
            _ => Ok(Ranks::single()),
        }
    }

    pub(crate) fn single() -> Ranks {
        Ranks {
            shared: Arc::new(latflow::parallel::SingleProcess),
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// Ends the other ranks too after an error on this one (they would otherwise wait for
    /// it in their next collective operation).
    pub(crate) fn abort_others(&self) {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi
            && latflow::parallel::Collective::size(mpi.as_ref()) > 1
        {
            mpi.abort(1);
        }
    }

    /// Refuses a command that does not run over several ranks yet.
    pub(crate) fn require_single(&self, command: &str) -> Result<()> {
        if self.shared.size() > 1 {
            bail!(
                "latflow {command} runs as one process; over MPI ranks, run `latflow train`, \
                 `latflow sample` or `latflow sweep` (this job has {} ranks)",
                self.shared.size()
            );
        }
        Ok(())
    }
}
