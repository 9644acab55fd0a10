//! deepcat (work in progress)

pub mod data;
pub mod error;
pub mod linalg;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod train;

pub use error::{Error, Result};

use rand::SeedableRng;

/// The one random-number generator type, always seeded explicitly. A named generator (PCG),
/// so a seed gives the same numbers whatever version of `rand` is in use.
pub type Rng = rand_pcg::Pcg64Mcg;

/// Independent random streams drawn from one user seed, so that (say) turning dropout on does
/// not change the train/test split or the initial weights.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// The shuffled train/test/validation split.
    Split = 1,
    /// Initial weights.
    Init = 2,
    /// Everything during training: mini-batch order, dropout masks, augmentation.
    Train = 3,
}

/// The generator for `stream` under the user's `seed`.
pub fn rng_for(seed: u64, stream: Stream) -> Rng {
    Rng::seed_from_u64(seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
