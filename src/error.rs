//! The library's one error type.
//!
//! Every variant names the file, folder or setting at fault and, where there is one, the way
//! out. A bad image is *not* an error: loaders report it as a [`SkippedFile`](crate::data::SkippedFile)
//! and carry on. Errors are for set-ups that cannot be used at all.

use std::path::PathBuf;

/// What can stop deepcat.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent (a flag, in CLI terms).
    #[error("{0}")]
    Config(String),

    /// The data folder cannot be used (missing, too few classes, an empty class...).
    #[error("{0}")]
    Data(String),

    /// A model file cannot be read or does not describe a model deepcat can run.
    #[error("cannot use model file {path}: {reason}")]
    Model { path: PathBuf, reason: String },

    /// Reading or writing a file failed. The message is `context`; the operating system's reason
    /// is the error's [`source`](std::error::Error::source) (`{:#}` in anyhow shows both, once).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// Training produced NaN or infinite values: the cost blew up (usually a learning rate too
    /// high for the data).
    #[error(
        "training diverged at iteration {iteration}: the cost became NaN or infinite. \
         Try a smaller learning rate (e.g. --lr {}); nothing was saved as the model \
         (an earlier checkpoint, if any, is kept)",
        short_number(*suggested_lr)
    )]
    Diverged {
        /// 1-based iteration (optimiser step) whose forward pass was not finite.
        iteration: usize,
        /// A tenth of the learning rate used.
        suggested_lr: f32,
    },

    /// A plot could not be drawn or written.
    #[error("cannot write plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },

    /// The GPU failed while computing (a CUDA driver, NVRTC or cuBLAS error, out of device
    /// memory). A GPU that cannot be used at all is [`Error::Config`] instead.
    #[error("the GPU failed: {0}")]
    Device(String),
}

/// `0.00075` as such, `1e29` rather than thirty digits.
fn short_number(x: f32) -> String {
    if x != 0.0 && !(1e-4..1e4).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

impl Error {
    /// Wraps an I/O error with a sentence saying what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A model-file error for `path`.
    pub fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
