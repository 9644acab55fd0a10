//! [`Collective`] over MPI (rsmpi, bound to the system's Open MPI or MPICH): the world of
//! processes `mpirun -n N` started.
//!
//! MPI is initialised with `MPI_THREAD_SERIALIZED`: any thread may call, one at a time. A
//! mutex around the communicator makes that so, which is what lets [`Mpi`] be shared.

use super::Collective;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};
use std::sync::{Mutex, MutexGuard};

/// The MPI world of this job. Dropping the last reference finalises MPI.
pub struct Mpi {
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    /// Processes on this machine, and this one's number among them.
    local: (usize, usize),
    /// Declared last: finalises MPI after the communicator is gone.
    _universe: Universe,
}

// SAFETY: MPI was initialised with MPI_THREAD_SERIALIZED, and every call on the communicator
// is made while holding `world`'s mutex, so no two threads ever call MPI at once.
unsafe impl Send for Mpi {}
// SAFETY: as for Send: shared access goes through the mutex.
unsafe impl Sync for Mpi {}

impl Mpi {
    /// Initialises MPI.
    ///
    /// # Errors
    /// When MPI is already initialised, or cannot give serialised threading.
    pub fn init() -> Result<Self, String> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or("MPI could not be initialised (was it initialised already?)")?;
        if threading < mpi::Threading::Serialized {
            return Err(format!(
                "this MPI offers only {threading:?} threading; deepcat needs MPI_THREAD_SERIALIZED"
            ));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let node = world.split_shared(world.rank());
        let local = (node.size() as usize, node.rank() as usize);
        Ok(Mpi {
            world: Mutex::new(world),
            rank,
            size,
            local,
            _universe: universe,
        })
    }

    fn world(&self) -> MutexGuard<'_, SimpleCommunicator> {
        // A panic while holding the lock leaves the communicator as valid as before.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn local(&self) -> (usize, usize) {
        self.local
    }

    fn sum_f32(&self, values: &mut [f32]) {
        let send = values.to_vec();
        self.world()
            .all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn sum_f64(&self, values: &mut [f64]) {
        let send = values.to_vec();
        self.world()
            .all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn min_max(&self, value: u64) -> (u64, u64) {
        let (mut lo, mut hi) = (0u64, 0u64);
        let world = self.world();
        world.all_reduce_into(&value, &mut lo, SystemOperation::min());
        world.all_reduce_into(&value, &mut hi, SystemOperation::max());
        (lo, hi)
    }

    fn gather(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let world = self.world();
        let mut counts = vec![0i32; self.size];
        let mine = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        world.all_gather_into(&mine, &mut counts[..]);
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |at, &n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect();
        let total = counts.iter().map(|&n| n as usize).sum();
        let mut all = vec![0u8; total];
        {
            let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            world.all_gather_varcount_into(bytes, &mut parts);
        }
        counts
            .iter()
            .zip(&displs)
            .map(|(&n, &d)| all[d as usize..(d + n) as usize].to_vec())
            .collect()
    }

    fn barrier(&self) {
        self.world().barrier();
    }

    fn abort(&self, code: i32) -> ! {
        self.world().abort(code)
    }
}
