//! Training: the document's loop (forward, cost, backward, update), generalised.
//!
//! [`TrainConfig`] holds every hyper-parameter with the document's defaults and is checked
//! before any image is read. [`train`] runs the loop over a [`Dataset`] and returns a
//! [`Trained`] network with its [`History`].
//!
//! Each step is computed by an [`Engine`](engine::Engine): the direct one (every layer, every
//! step) or the exact Gram reformulation, which gives the same result without reading the
//! images again when the optimiser is linear (see [`gram`]). [`ExactPath`] chooses; `auto`
//! estimates the cost of both.
//!
//! Feedback (progress bars, the document's cost lines, checkpoints) is delivered through
//! [`Callback`]s; early stopping is part of the loop because it changes the result.

pub mod callbacks;
mod direct;
mod early_stopping;
mod engine;
pub mod gram;
mod history;

pub use callbacks::{Callback, RunInfo, StepInfo, TrainingView};
pub use early_stopping::EarlyStopping;
pub use history::{History, Record};

use crate::data::Dataset;
use crate::data::augment::Augment;
use crate::loss::Head;
use crate::model::Classes;
use crate::model_file::SavedOptimizer;
use crate::nn::{Architecture, Init, Mt19937, Network};
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::{Error, Result, Stream, rng_for};
use engine::{Engine, Outcome, Score};
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Zip};
use rand::seq::SliceRandom;
use std::time::Instant;

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
    /// Hidden layer sizes (the document: 20, 7, 5).
    pub hidden: Vec<usize>,
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
    /// Inverted-dropout probability after each hidden ReLU; 0 for none.
    pub dropout: f32,
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
}

/// The document's seed is unspecified (NumPy's global state); ours is fixed so runs repeat.
pub const DEFAULT_SEED: u64 = 1;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            hidden: vec![20, 7, 5],
            learning_rate: 0.0075,
            length: Length::Iterations(2500),
            batch_size: None,
            optimizer: OptimizerConfig::Gd,
            schedule: Schedule::Constant,
            l2: 0.0,
            dropout: 0.0,
            init: Init::Document,
            seed: DEFAULT_SEED,
            patience: None,
            exact_path: ExactPath::Auto,
            record_every: 100,
            log_every: 50,
            augment: Augment::default(),
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
        if self.hidden.contains(&0) {
            return bad(format!(
                "--layers: every hidden layer needs at least one unit, got {:?}",
                self.hidden
            ));
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
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.dropout > 0.0 && self.hidden.is_empty() {
            return bad("--dropout applies to hidden layers, and there are none".into());
        }
        if self.patience == Some(0) {
            return bad("--patience must be at least 1".into());
        }
        if self.record_every == 0 || self.log_every == 0 {
            return bad("--record-every and --log-every must be at least 1".into());
        }
        self.optimizer.check()
    }
}

/// A labelled set as the engines see it: rows, network targets, labels.
pub struct Labelled<'a> {
    /// `(examples, features)`.
    pub x: ArrayView2<'a, f32>,
    /// `(examples, outputs)`: see [`Classes::targets`].
    pub targets: Array2<f32>,
    /// Class index per row.
    pub labels: &'a [usize],
    /// The class mapping.
    pub classes: &'a Classes,
}

impl<'a> Labelled<'a> {
    /// Views `data` for training with `classes`.
    pub fn new(data: &'a Dataset, classes: &'a Classes) -> Self {
        Labelled {
            x: data.x.view(),
            targets: classes.targets(&data.labels),
            labels: &data.labels,
            classes,
        }
    }
}

/// Mean cost and number of correct decisions for a batch, from its logits.
fn score(
    classes: &Classes,
    logits: ArrayView2<'_, f32>,
    targets: ArrayView2<'_, f32>,
    labels: &[usize],
) -> Score {
    let head: Head = classes.head();
    let cost = head.cost(logits, targets);
    let decisions = classes.decide(head.probabilities(logits).view());
    let correct = decisions.iter().zip(labels).filter(|(d, l)| d == l).count();
    Score { cost, correct }
}

/// A step's [`Outcome`]: the score when `want_score`, and whether the logits are all finite.
fn outcome(
    classes: &Classes,
    logits: ArrayView2<'_, f32>,
    targets: ArrayView2<'_, f32>,
    labels: &[usize],
    want_score: bool,
) -> Outcome {
    Outcome {
        score: want_score.then(|| score(classes, logits, targets, labels)),
        finite: logits.iter().all(|v| v.is_finite()),
    }
}

/// Whether `batch` is all `m` training rows in order (full-batch training), so the data can be
/// used as it is, without gathering rows.
fn is_whole(batch: &[usize], m: usize) -> bool {
    batch.len() == m && batch.iter().enumerate().all(|(i, &b)| i == b)
}

/// `grad += l2 · param` for the parameters that are weights.
fn add_l2(grads: &mut [ArrayD<f32>], params: &[ArrayViewD<'_, f32>], is_weight: &[bool], l2: f32) {
    for ((g, p), &w) in grads.iter_mut().zip(params).zip(is_weight) {
        if w {
            Zip::from(g).and(p).for_each(|g, &p| *g += l2 * p);
        }
    }
}

/// Where training starts from: fresh weights, or a saved model (`--resume`).
pub struct Start {
    /// The network to continue training.
    pub network: Network,
    /// Its optimiser state, if saved and of the configured kind.
    pub optimizer: Option<SavedOptimizer>,
}

/// The outcome of [`train`].
pub struct Trained {
    /// The trained network (the best one seen, with early stopping).
    pub network: Network,
    /// The records.
    pub history: History,
    /// The optimiser's final settings and memory, for resuming.
    pub optimizer: SavedOptimizer,
    /// Optimiser steps taken in this run.
    pub steps: usize,
    /// "gram" or "direct".
    pub path: &'static str,
    /// The record whose weights were kept, when early stopping restored them.
    pub restored: Option<Record>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether a callback asked to stop (Ctrl-C) before the planned last step.
    pub interrupted: bool,
    /// Wall-clock seconds, including the Gram set-up.
    pub seconds: f64,
}

fn diverged(iteration: usize, learning_rate: f32) -> Error {
    Error::Diverged {
        iteration,
        suggested_lr: learning_rate / 10.0,
    }
}

/// Multiply-adds of each path, for `auto`. Direct: forward and weight gradient of the first
/// layer each step. Gram: `G` (half, it is symmetric), `P0`, the final `W1`, validation
/// products, then `batch·m·h` per step.
fn choose_path(
    config: &TrainConfig,
    optimizer: &dyn Optimizer,
    net: &Network,
    m: usize,
    val_m: usize,
    batch: usize,
    steps: usize,
) -> Result<&'static str> {
    let n = net.input_units() as f64;
    let h = net.sizes()[1] as f64;
    let (mf, bf, sf, vf) = (m as f64, batch as f64, steps as f64, val_m as f64);
    let why_not = if !optimizer.is_linear() {
        Some(format!(
            "the {} optimiser is not linear",
            optimizer.config().name()
        ))
    } else if config.augment.is_on() {
        Some("augmentation changes the images every epoch".to_string())
    } else if config.hidden.is_empty() {
        Some("the network has no hidden layer".to_string())
    } else if !optimizer.state().slots.is_empty() {
        Some("resumed optimiser state lives in weight space".to_string())
    } else if mf * mf * 4.0 > GRAM_MAX_BYTES {
        Some(format!(
            "the {m}×{m} Gram matrix would need more than {} GiB",
            GRAM_MAX_BYTES / (1u64 << 30) as f64
        ))
    } else {
        None
    };
    let gram_cost = mf * mf * n / 2.0 + 2.0 * mf * n * h + vf * mf * n + sf * bf * mf * h;
    let direct_cost = sf * 2.0 * bf * n * h;
    match (config.exact_path, why_not) {
        (ExactPath::Direct, _) => Ok("direct"),
        (ExactPath::Gram, Some(reason)) => Err(Error::Config(format!(
            "--exact-path gram cannot apply: {reason}"
        ))),
        (ExactPath::Gram, None) => Ok("gram"),
        (ExactPath::Auto, Some(_)) => Ok("direct"),
        (ExactPath::Auto, None) => Ok(if gram_cost < direct_cost {
            "gram"
        } else {
            "direct"
        }),
    }
}

/// The largest Gram matrix `auto` and `gram` will build.
const GRAM_MAX_BYTES: f64 = 4.0 * (1u64 << 30) as f64;

struct View<'e> {
    engine: &'e dyn Engine,
    net: &'e Network,
    optimizer: &'e dyn Optimizer,
}

impl TrainingView for View<'_> {
    fn network(&self) -> Network {
        self.engine.network(self.net)
    }

    fn optimizer(&self) -> SavedOptimizer {
        SavedOptimizer {
            config: self.optimizer.config(),
            state: self.engine.optimizer_state(self.net, self.optimizer),
            slot_names: self
                .optimizer
                .slot_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Trains a network on `train` (validating on `val`), from `start` or from fresh weights.
///
/// `image_size` is the side of the square images (augmentation needs it).
///
/// A callback can end the run early ([`Callback::should_stop`], e.g. on Ctrl-C); the result
/// then says [`interrupted`](Trained::interrupted) and holds the weights reached so far.
///
/// # Errors
/// [`Error::Config`] for a bad configuration (checked first), an impossible `--exact-path
/// gram`, a resumed network that does not fit the data, or an error a callback returns (a
/// checkpoint that cannot be written); [`Error::Diverged`] as soon as a step's outputs are
/// NaN or infinite (no weights are returned then).
#[allow(
    clippy::expect_used,
    reason = "the loop asks for a score (want_score) at every record and log step"
)]
pub fn train(
    config: &TrainConfig,
    train: &Dataset,
    val: Option<&Dataset>,
    classes: &Classes,
    image_size: usize,
    start: Option<Start>,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Trained> {
    config.check()?;
    if config.patience.is_some() && val.is_none() {
        return Err(Error::Config(
            "--patience needs a validation set (--val-split)".into(),
        ));
    }
    if train.is_empty() {
        return Err(Error::Data("there are no training images".into()));
    }
    let began = Instant::now();
    let m = train.len();
    let batch = config.batch_size.unwrap_or(m).min(m);
    let steps_per_epoch = m.div_ceil(batch);
    let (total_steps, total_units, by_epochs) = match config.length {
        Length::Iterations(n) => (n, n as f64, false),
        Length::Epochs(e) => (e * steps_per_epoch, e as f64, true),
    };

    let arch = Architecture {
        inputs: train.x.ncols(),
        hidden: config.hidden.clone(),
        outputs: classes.outputs(),
        dropout: config.dropout,
    };
    let mut optimizer = config.optimizer.build();
    let mut net = match start {
        None => Network::new(&arch, config.init, &mut Mt19937::new(config.seed)),
        Some(s) => {
            if s.network.sizes() != arch.sizes() {
                return Err(Error::Config(format!(
                    "the model to resume has layers {:?}, but this data and --layers give {:?}",
                    s.network.sizes(),
                    arch.sizes()
                )));
            }
            if let Some(saved) = s.optimizer.filter(|o| o.config == config.optimizer) {
                *optimizer.state_mut() = saved.state;
            }
            // Rebuild with this run's dropout, keeping the trained weights.
            let mut fresh = Network::new(&arch, config.init, &mut Mt19937::new(config.seed));
            for (dst, src) in fresh.params_mut().into_iter().zip(s.network.params_from(0)) {
                let mut dst = dst;
                dst.assign(&src);
            }
            fresh
        }
    };

    let val_m = val.map_or(0, Dataset::len);
    let path = choose_path(
        config,
        optimizer.as_ref(),
        &net,
        m,
        val_m,
        batch,
        total_steps,
    )?;
    let train_set = Labelled::new(train, classes);
    let val_set = val.map(|v| Labelled::new(v, classes));
    let mut engine: Box<dyn Engine + '_> = match path {
        "gram" => Box::new(gram::GramEngine::new(&net, train_set, val_set)),
        _ => Box::new(direct::DirectEngine::new(
            train_set,
            val_set,
            config.augment,
            image_size,
        )),
    };

    let info = RunInfo {
        total_steps,
        steps_per_epoch,
        by_epochs,
        examples: m,
        batch,
        path,
    };
    for cb in callbacks.iter_mut() {
        cb.on_start(&info);
    }

    let mut rng = rng_for(config.seed, Stream::Train);
    let mut order: Vec<usize> = (0..m).collect();
    let mut history = History::default();
    let mut early = config.patience.map(EarlyStopping::new);
    let mut stopped_early = false;
    let mut interrupted = false;
    let (mut epoch_cost, mut epoch_correct, mut epoch_seen) = (0.0f64, 0usize, 0usize);
    let last = total_steps - 1;
    let mut steps = 0;

    for step in 0..total_steps {
        let pos = step % steps_per_epoch;
        if pos == 0 && batch < m {
            order.shuffle(&mut rng);
        }
        let rows = &order[pos * batch..((pos + 1) * batch).min(m)];
        let done = if by_epochs {
            step as f64 / steps_per_epoch as f64
        } else {
            step as f64
        };
        let lr = config
            .schedule
            .rate(config.learning_rate, done, total_units);
        let epoch_end = by_epochs && pos == steps_per_epoch - 1;
        let record_now = if by_epochs {
            epoch_end
        } else {
            step.is_multiple_of(config.record_every)
        };
        let log_now = if by_epochs {
            epoch_end
                && ((step / steps_per_epoch + 1).is_multiple_of(config.log_every) || step == last)
        } else {
            step.is_multiple_of(config.log_every) || step == last
        };
        // Epoch figures average every batch; iteration figures are that step's.
        let want_score = by_epochs || record_now || log_now;
        let Outcome {
            score: scored,
            finite,
        } = engine.step(
            &mut net,
            optimizer.as_mut(),
            rows,
            lr,
            config.l2,
            want_score,
            &mut rng,
        );
        if !finite {
            return Err(diverged(step + 1, config.learning_rate));
        }
        steps += 1;
        if let Some(s) = scored {
            epoch_cost += s.cost * rows.len() as f64;
            epoch_correct += s.correct;
            epoch_seen += rows.len();
        }

        let l2_term = |engine: &dyn Engine, net: &Network| {
            if config.l2 > 0.0 {
                0.5 * f64::from(config.l2) * engine.weight_norm_sq(net)
            } else {
                0.0
            }
        };
        let cost = (record_now || log_now).then(|| {
            let data_cost = if by_epochs {
                epoch_cost / epoch_seen.max(1) as f64
            } else {
                scored.expect("scored at record and log steps").cost
            };
            data_cost + l2_term(engine.as_ref(), &net)
        });

        let view = View {
            engine: engine.as_ref(),
            net: &net,
            optimizer: optimizer.as_ref(),
        };
        let step_info = StepInfo {
            step,
            epoch: by_epochs.then_some(step / steps_per_epoch),
            cost,
            log: log_now,
            learning_rate: lr,
        };
        for cb in callbacks.iter_mut() {
            cb.on_step(&step_info, &view)?;
        }

        if record_now {
            let accuracy = if by_epochs {
                epoch_correct as f64 / epoch_seen.max(1) as f64
            } else {
                scored.expect("scored at record steps").correct as f64 / rows.len() as f64
            };
            let validation = engine.validate(&net);
            let record = Record {
                step,
                epoch: by_epochs.then_some(step / steps_per_epoch + 1),
                cost: cost.expect("computed at record steps"),
                train_accuracy: accuracy,
                val_cost: validation.map(|v| v.0),
                val_accuracy: validation.map(|v| v.1),
                learning_rate: lr,
            };
            for cb in callbacks.iter_mut() {
                cb.on_record(&record, &view)?;
            }
            let stop = match (&mut early, record.val_cost) {
                (Some(early), Some(val_cost)) => {
                    early.observe(&record, val_cost, || view.network())
                }
                _ => false,
            };
            history.records.push(record);
            if stop {
                stopped_early = true;
                break;
            }
        }
        if epoch_end {
            (epoch_cost, epoch_correct, epoch_seen) = (0.0, 0, 0);
        }
        if step < last && callbacks.iter().any(|cb| cb.should_stop()) {
            interrupted = true;
            break;
        }
    }

    let saved_optimizer = View {
        engine: engine.as_ref(),
        net: &net,
        optimizer: optimizer.as_ref(),
    }
    .optimizer();
    engine.finish(&mut net);
    // The last update is not followed by a forward pass that would show a blow-up.
    if !net.is_finite() {
        return Err(diverged(steps, config.learning_rate));
    }
    let mut restored = None;
    if let Some(best) = early.and_then(EarlyStopping::into_best) {
        restored = Some(best.record);
        net = best.network;
    }
    for cb in callbacks.iter_mut() {
        cb.on_end(&history);
    }
    Ok(Trained {
        network: net,
        history,
        optimizer: saved_optimizer,
        steps,
        path,
        restored,
        stopped_early,
        interrupted,
        seconds: began.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests;
