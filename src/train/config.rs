//! Every training hyper-parameter, with the document's defaults, checked before any image is
//! read.

use crate::data::augment::Augment;
use crate::device::Device;
use crate::nn::Init;
use crate::nn::spec::{LayerSpec, dense_body};
use crate::optim::{OptimizerConfig, Schedule};
use crate::parallel::Group;
use crate::{Error, Result};

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Length {
    /// This many optimiser steps (the document: 2500 full-batch iterations).
    Iterations(usize),
    /// This many passes over the training set.
    Epochs(usize),
}

/// Which way the first layer is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExactPath {
    /// Gram when it applies and is estimated cheaper, else direct.
    Auto,
    /// The exact Gram reformulation (an error if it cannot apply).
    Gram,
    /// Every layer, every step.
    Direct,
}

/// Every training hyper-parameter. [`Default`] gives the document's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainConfig {
    /// Every layer before the output head (the document: `dense20 relu dense7 relu dense5
    /// relu`); see [`crate::nn::spec`].
    pub body: Vec<LayerSpec>,
    /// Base learning rate (0.0075).
    pub learning_rate: f32,
    /// Iterations (2500) or epochs.
    pub length: Length,
    /// Examples per step; `None` for the whole training set (the document).
    pub batch_size: Option<usize>,
    /// The optimiser (gradient descent).
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule over the run (constant).
    pub schedule: Schedule,
    /// L2 penalty: the cost gains `l2/2 · Σ‖W‖²` over every weight (not biases); 0 for none.
    pub l2: f32,
    /// Weight initialisation (the document's).
    pub init: Init,
    /// Seed for initial weights, batch order, dropout and augmentation.
    pub seed: u64,
    /// Early stopping: stop after this many records without a better validation cost, and
    /// keep the best weights. Needs a validation set.
    pub patience: Option<usize>,
    /// How the first layer is computed.
    pub exact_path: ExactPath,
    /// Record the history every this many iterations (the document: 100). Training by epochs
    /// records once per epoch.
    pub record_every: usize,
    /// Report the cost to callbacks every this many iterations (the document prints every
    /// 50) or epochs.
    pub log_every: usize,
    /// On-the-fly augmentation of training batches (off).
    pub augment: Augment,
    /// Label smoothing ε: training targets become `y·(1 − ε) + ε/K` (K classes, 2 for the
    /// sigmoid head), as PyTorch's `label_smoothing`; 0 for none.
    pub label_smoothing: f32,
    /// A linear warm-up of the learning rate over the first this many iterations or epochs,
    /// in front of the schedule; 0 for none.
    pub warmup: f64,
    /// Test-time flips (`--tta flip`): recorded in the model, so predictions average each
    /// image and its mirror.
    pub tta: bool,
    /// Batch norm over the whole batch the processes share (`--sync-bn`), rather than over
    /// each process's part of it. Recorded only when on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sync_bn: bool,
    /// The processes that train together: this one alone, unless `mpirun` started several
    /// (see [`crate::parallel`]). Not recorded: the model is the same.
    #[serde(skip)]
    pub group: Group,
    /// Where training computes (`--device`): the CPU, or a GPU through CUDA. Recorded in the
    /// model's training JSON only when it is not the CPU, so CPU model files keep their bytes.
    #[serde(skip_serializing_if = "Device::is_cpu")]
    pub device: Device,
    /// Whether cuBLAS may use TF32 tensor cores for the GPU's products (`--tf32`; off: full
    /// fp32). Recorded only when on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tf32: bool,
}

/// The document's hidden layers.
pub const DOCUMENT_HIDDEN: [usize; 3] = [20, 7, 5];

/// The document's seed is unspecified (NumPy's global state); ours is fixed so runs repeat.
pub const DEFAULT_SEED: u64 = 1;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            body: dense_body(&DOCUMENT_HIDDEN, 0.0),
            learning_rate: 0.0075,
            length: Length::Iterations(2500),
            batch_size: None,
            optimizer: OptimizerConfig::Gd,
            schedule: Schedule::Constant,
            l2: 0.0,
            init: Init::Document,
            seed: DEFAULT_SEED,
            patience: None,
            exact_path: ExactPath::Auto,
            record_every: 100,
            log_every: 50,
            augment: Augment::default(),
            label_smoothing: 0.0,
            warmup: 0.0,
            tta: false,
            sync_bn: false,
            group: Group::default(),
            device: Device::Cpu,
            tf32: false,
        }
    }
}

impl TrainConfig {
    /// Checks every value, naming the flag at fault.
    ///
    /// # Errors
    /// [`Error::Config`] for the first bad value.
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        self.device.check_built()?;
        if !self.device.is_cpu() && self.exact_path == ExactPath::Gram {
            return bad(format!(
                "--exact-path gram runs on the CPU only; with --device {} use auto or direct",
                self.device
            ));
        }
        if self.tf32 && self.device.is_cpu() {
            return bad("--tf32 sets the GPU's matrix products: it needs --device cuda".into());
        }
        for layer in &self.body {
            layer
                .check()
                .map_err(|e| Error::Config(format!("--arch/--layers: {e}")))?;
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(format!(
                "--lr must be a positive number, got {}",
                self.learning_rate
            ));
        }
        match self.length {
            Length::Iterations(0) => return bad("--iterations must be at least 1".into()),
            Length::Epochs(0) => return bad("--epochs must be at least 1".into()),
            _ => {}
        }
        if self.batch_size == Some(0) {
            return bad("--batch-size must be at least 1".into());
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return bad(format!("--l2 must be zero or positive, got {}", self.l2));
        }
        if self.patience == Some(0) {
            return bad("--patience must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "--label-smoothing must be at least 0 and below 1, got {}",
                self.label_smoothing
            ));
        }
        if !(self.warmup >= 0.0 && self.warmup.is_finite()) {
            return bad(format!(
                "--warmup must be zero or positive, got {}",
                self.warmup
            ));
        }
        if self.record_every == 0 || self.log_every == 0 {
            return bad("--record-every and --log-every must be at least 1".into());
        }
        self.optimizer.check()
    }
}
