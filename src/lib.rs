//! deepcat: a from-first-principles image classifier.
//!
//! The pipeline is the tutorial's, one module per step. [`data`] scans a folder with one
//! sub-folder of photos per class, splits the file list (seeded, shuffled), and decodes each
//! image into one row of a byte matrix: resized to a square, RGB, flattened; the network reads
//! each byte as `v / 255`. A decoded cache on disk ([`data::cache`]) spares a second run the
//! decoding. [`nn`] holds the layers, one file per kind, each a hand-written forward/backward
//! pair ([`nn::Dense`], [`nn::Conv2d`], [`nn::BatchNorm`], [`nn::MaxPool2d`], [`nn::Relu`],
//! [`nn::Dropout`], ..., and [`nn::Residual`], a block made of layers), chained into a
//! [`nn::Network`] whose output non-linearity and
//! cross-entropy are fused in [`loss`]. [`train`] runs gradient descent (or an optimiser from
//! [`optim`]) over full or mini-batches, computing each step directly or by the exact Gram
//! reformulation, and reports through callbacks. [`model::Model`] bundles the trained network
//! with its classes and preprocessing, [`model_file`] saves and loads it, [`metrics`] measures
//! it, [`plot`] draws its training curves and [`report`] gathers all of it into one HTML page;
//! [`serve`] puts it behind HTTP, a web page and a JSON API; [`export::onnx`] writes it as
//! an ONNX file that runs without deepcat, and [`explain`] draws where it looked (Grad-CAM,
//! gradient × input). [`flow::run`] is the whole job in one call (load or stream, train,
//! measure, save, report), as `deepcat train` runs it; under `mpirun`, [`parallel`] shares
//! each batch among the processes and sums their gradients. All products go through
//! [`linalg`]. [`device`] says where a network computes: the CPU, or (built with
//! `--features cuda`) an NVIDIA GPU, whose kernels, device-side network and training engine
//! live in `cuda`.
//!
//! Layout: one example per row everywhere, `(batch, features)`; a dense weight is
//! `(units_out, units_in)`.

// User input and files never reach an `unwrap` or `expect`: errors are returned instead. The
// few internal invariants that remain are allowed one by one, each with why it holds.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod device;
pub mod error;
pub mod explain;
pub mod export;
pub mod flow;
pub mod linalg;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod report;
pub mod serve;
pub mod train;

pub use error::{Error, Result};

use rand::SeedableRng;

/// The random-number generator of the split and of training, always seeded explicitly. A
/// named generator (PCG), so a seed gives the same numbers whatever version of `rand` is in
/// use. Initial weights come from their own generator, NumPy's ([`nn::Mt19937`]), seeded with
/// the user's seed as `np.random.seed` is.
pub type Rng = rand_pcg::Pcg64Mcg;

/// Independent random streams drawn from one user seed, so that (say) turning dropout on does
/// not change the train/test split or the initial weights.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// The shuffled train/test/validation split.
    Split = 1,
    /// Everything during training: mini-batch order, dropout masks, augmentation.
    Train = 3,
    /// Dropout masks and augmentation of one process's part of a batch that several share
    /// (`mpirun`), seeded with the seed plus the process's rank; the batch order stays
    /// [`Stream::Train`]'s, the same on every process.
    Process = 5,
}

/// The generator for `stream` under the user's `seed`.
pub fn rng_for(seed: u64, stream: Stream) -> Rng {
    Rng::seed_from_u64(seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
