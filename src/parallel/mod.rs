//! Data-parallel training: the processes of one job, and the few collective operations that
//! training, batch norm and evaluation need from them.
//!
//! Every process keeps the same weights. At each step it computes the gradient of its share
//! of the mini-batch ([`share`]), the gradients are summed across processes by one all-reduce,
//! and every process applies the same update. [`Collective`] is that seam: [`Solo`] is one
//! process (every operation is the identity), and with the cargo feature `mpi`, [`mpi`]'s
//! implementation runs over MPI, launched by `mpirun -n N deepcat train ...`.
//!
//! The trait holds only what deepcat uses: sums of floats, agreement on a number, gathering
//! bytes, a barrier and an abort. Calls are made from the main thread, in the same order on
//! every process.

#[cfg(feature = "mpi")]
pub mod mpi;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The collective operations of a group of processes. Every process must make the same calls
/// in the same order (MPI's rule for collectives).
pub trait Collective: Send + Sync {
    /// This process's number, `0..size`.
    fn rank(&self) -> usize;
    /// How many processes there are.
    fn size(&self) -> usize;
    /// How many processes run on this machine, and this one's number among them.
    fn local(&self) -> (usize, usize);
    /// Replaces `values` by their element-wise sum over every process (the same on all).
    fn sum_f32(&self, values: &mut [f32]);
    /// As [`sum_f32`](Collective::sum_f32), in double precision.
    fn sum_f64(&self, values: &mut [f64]);
    /// The smallest and largest of `value` over every process.
    fn min_max(&self, value: u64) -> (u64, u64);
    /// Every process's `bytes`, in rank order, on every process.
    fn gather(&self, bytes: &[u8]) -> Vec<Vec<u8>>;
    /// Waits until every process has called it.
    fn barrier(&self);
    /// Ends every process of the job at once with exit status `code`.
    fn abort(&self, code: i32) -> !;
}

/// One process on its own: sums are the values, gathering returns them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local(&self) -> (usize, usize) {
        (1, 0)
    }
    fn sum_f32(&self, _values: &mut [f32]) {}
    fn sum_f64(&self, _values: &mut [f64]) {}
    fn min_max(&self, value: u64) -> (u64, u64) {
        (value, value)
    }
    fn gather(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The processes of a job, shared by whoever needs them (the training engine, batch norm,
/// evaluation). [`Group::default`] is one process.
#[derive(Clone)]
pub struct Group(Arc<dyn Collective>);

impl Group {
    /// A group over `collective`.
    pub fn new(collective: Arc<dyn Collective>) -> Self {
        Group(collective)
    }

    /// Whether this process is alone (the single-machine case).
    pub fn is_solo(&self) -> bool {
        self.0.size() == 1
    }

    /// Whether this process is the one that prints and writes files.
    pub fn is_root(&self) -> bool {
        self.0.rank() == 0
    }

    /// The rows `0..len` that are this process's: see [`share`].
    pub fn share(&self, len: usize) -> Range<usize> {
        share(len, self.0.rank(), self.0.size())
    }

    /// Whether any process says `yes` (all of them get the same answer).
    pub fn any(&self, yes: bool) -> bool {
        self.0.min_max(u64::from(yes)).1 == 1
    }

    /// Whether every process holds the same `value`.
    pub fn agree(&self, value: u64) -> bool {
        let (lo, hi) = self.0.min_max(value);
        lo == hi
    }
}

impl std::ops::Deref for Group {
    type Target = dyn Collective;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Default for Group {
    fn default() -> Self {
        Group(Arc::new(Solo))
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Group(rank {} of {})", self.0.rank(), self.0.size())
    }
}

/// Two groups are alike when they are the same place in a job of the same size.
impl PartialEq for Group {
    fn eq(&self, other: &Self) -> bool {
        (self.0.rank(), self.0.size()) == (other.0.rank(), other.0.size())
    }
}

/// Process `rank`'s contiguous part of `len` rows shared by `size` processes: the first
/// `len % size` processes take one row more, so a ragged batch is shared as evenly as it can
/// be (and a process may get none when `len < size`).
pub fn share(len: usize, rank: usize, size: usize) -> Range<usize> {
    let (each, extra) = (len / size, len % size);
    let start = rank * each + rank.min(extra);
    start..start + each + usize::from(rank < extra)
}

/// A 64-bit FNV-1a hash, to compare configurations, file lists and weights across processes.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The number of processes `mpirun` (Open MPI, MPICH or any PMI launcher) started this one
/// among, when it did.
pub fn launched_size() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The group this process belongs to: MPI's world when `mpirun` started several, else this
/// process alone.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) when `mpirun` started several processes but this
/// binary was built without the `mpi` feature, or MPI cannot start.
pub fn join() -> crate::Result<Group> {
    match launched_size() {
        Some(n) if n > 1 => start_mpi(n),
        _ => Ok(Group::default()),
    }
}

#[cfg(feature = "mpi")]
fn start_mpi(_launched: usize) -> crate::Result<Group> {
    let world = mpi::Mpi::init().map_err(crate::Error::Config)?;
    Ok(Group::new(Arc::new(world)))
}

#[cfg(not(feature = "mpi"))]
fn start_mpi(launched: usize) -> crate::Result<Group> {
    Err(crate::Error::Config(format!(
        "mpirun started {launched} processes, but this deepcat was built without MPI: \
         rebuild it with `cargo build --release --features mpi` (it needs Open MPI's \
         libopenmpi-dev and libclang-dev), or run it without mpirun"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_row_once_and_differ_by_at_most_one() {
        for len in 0..40 {
            for size in 1..6 {
                let parts: Vec<Range<usize>> = (0..size).map(|r| share(len, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, len);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                let (lo, hi) = (lens.iter().min(), lens.iter().max());
                assert!(
                    hi.unwrap_or(&0) - lo.unwrap_or(&0) <= 1,
                    "{len} over {size}: {lens:?}"
                );
            }
        }
        assert_eq!(share(5, 0, 3), 0..2);
        assert_eq!(share(5, 1, 3), 2..4);
        assert_eq!(share(5, 2, 3), 4..5);
        assert_eq!(share(1, 1, 2), 1..1);
    }

    #[test]
    fn a_solo_group_is_the_identity() {
        let g = Group::default();
        let mut v = [1.0f32, 2.0];
        g.sum_f32(&mut v);
        assert_eq!(v, [1.0, 2.0]);
        assert!(g.is_solo() && g.is_root() && g.agree(7));
        assert_eq!(g.gather(b"ab"), vec![b"ab".to_vec()]);
        assert_eq!(g.share(3), 0..3);
    }

    #[test]
    fn fingerprints_tell_bytes_apart() {
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
    }
}
