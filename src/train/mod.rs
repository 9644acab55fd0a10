//! Training: the document's loop (forward, cost, backward, update), generalised.
//!
//! [`TrainConfig`] holds every hyper-parameter with the document's defaults and is checked
//! before any image is read. [`train`] runs the loop over a [`Dataset`] and returns a
//! [`Trained`] network with its [`History`]. It reads as its phases: check the run, plan its
//! steps ([`Plan`]), build the starting network (fresh or resumed), choose how the first layer
//! is computed, run the loop one step at a time, and finish.
//!
//! Each step is computed by an [`Engine`](engine::Engine): the direct one (every layer, every
//! step) or the exact Gram reformulation, which gives the same result without reading the
//! images again when the optimiser is linear (see [`gram`]). [`ExactPath`] chooses; `auto`
//! estimates the cost of both.
//!
//! Feedback (progress bars, the document's cost lines, checkpoints) is delivered through
//! [`Callback`]s; early stopping is part of the loop because it changes the result.

pub mod callbacks;
mod config;
mod direct;
mod early_stopping;
pub(crate) mod engine;
pub mod gram;
mod history;
mod on_device;
mod path;
mod prefetch;
mod products;
pub mod recipe;
mod shared;

pub use callbacks::{Callback, RunInfo, StepInfo, TrainingView};
pub use config::{DEFAULT_SEED, DOCUMENT_HIDDEN, ExactPath, Length, TrainConfig};
pub use early_stopping::EarlyStopping;
pub use history::{History, Record};
pub use recipe::Recipe;

use crate::data::{Examples, Images};
use crate::loss::Head;
use crate::model::Classes;
use crate::model_file::SavedOptimizer;
use crate::nn::spec::describe;
use crate::nn::{Architecture, Geometry, Mt19937, Network, Param};
use crate::optim::Optimizer;
use crate::{Error, Result, Rng, Stream, rng_for};
use engine::{Engine, Outcome, Score};
use ndarray::{Array2, ArrayD, ArrayView2, Zip};
use rand::seq::SliceRandom;
use std::time::Instant;

/// A labelled set as the engines see it: rows, network targets, labels.
pub struct Labelled<'a> {
    /// `(examples, features)` image bytes, in memory or on disk.
    pub x: Images<'a>,
    /// `(examples, outputs)`: see [`Classes::targets`].
    pub targets: Array2<f32>,
    /// Class index per row.
    pub labels: &'a [usize],
    /// The class mapping.
    pub classes: &'a Classes,
}

impl<'a> Labelled<'a> {
    /// Views `data` for training with `classes`.
    pub fn new(data: &'a dyn Examples, classes: &'a Classes) -> Self {
        Labelled {
            x: data.images(),
            targets: classes.targets(data.labels()),
            labels: data.labels(),
            classes,
        }
    }
}

/// Mean cost and number of correct decisions for a batch, from its logits.
pub(crate) fn score(
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
pub(crate) fn outcome(
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
pub(crate) fn is_whole(batch: &[usize], m: usize) -> bool {
    batch.len() == m && batch.iter().enumerate().all(|(i, &b)| i == b)
}

/// `grad += l2 · param` for the parameters that are weights.
fn add_l2(grads: &mut [ArrayD<f32>], params: &[Param<'_>], l2: f32) {
    for (g, p) in grads.iter_mut().zip(params) {
        if p.decay {
            Zip::from(g).and(&p.value).for_each(|g, &p| *g += l2 * p);
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
    /// Of those, seconds spent summing across processes (`mpirun`; 0 alone).
    pub communication_seconds: f64,
}

fn diverged(iteration: usize, learning_rate: f32) -> Error {
    Error::Diverged {
        iteration,
        suggested_lr: learning_rate / 10.0,
    }
}

struct View<'e> {
    engine: &'e dyn Engine,
    net: &'e Network,
    optimizer: &'e dyn Optimizer,
}

impl TrainingView for View<'_> {
    fn network(&self) -> Result<Network> {
        self.engine.network(self.net)
    }

    fn optimizer(&self) -> Result<SavedOptimizer> {
        Ok(SavedOptimizer {
            config: self.optimizer.config(),
            state: self.engine.optimizer_state(self.net, self.optimizer)?,
            slot_names: self
                .optimizer
                .slot_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        })
    }
}

/// How a run's steps fall: batch size, epochs, and when to record and log.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Training examples.
    pub examples: usize,
    /// Examples per step.
    pub batch: usize,
    /// Steps per pass over the training set.
    pub steps_per_epoch: usize,
    /// Optimiser steps in the run.
    pub total_steps: usize,
    /// Whether the run is counted in epochs (else iterations).
    pub by_epochs: bool,
    /// The run's length in its own unit (iterations or epochs), for the schedule.
    total_units: f64,
}

/// What one step does besides the update.
struct Moment {
    /// Position of the step's batch in the epoch.
    pos: usize,
    /// Learning rate of the step.
    lr: f32,
    /// Whether the step ends an epoch (when training by epochs).
    epoch_end: bool,
    /// Whether a record is made after the step.
    record: bool,
    /// Whether callbacks are asked to show the cost.
    log: bool,
}

impl Plan {
    /// The plan for `config` on `examples` training examples.
    pub fn new(config: &TrainConfig, examples: usize) -> Self {
        let batch = config.batch_size.unwrap_or(examples).min(examples).max(1);
        let steps_per_epoch = examples.div_ceil(batch).max(1);
        let (total_steps, total_units, by_epochs) = match config.length {
            Length::Iterations(n) => (n, n as f64, false),
            Length::Epochs(e) => (e * steps_per_epoch, e as f64, true),
        };
        Plan {
            examples,
            batch,
            steps_per_epoch,
            total_steps,
            by_epochs,
            total_units,
        }
    }

    fn info(&self, path: &'static str) -> RunInfo {
        RunInfo {
            total_steps: self.total_steps,
            steps_per_epoch: self.steps_per_epoch,
            by_epochs: self.by_epochs,
            examples: self.examples,
            batch: self.batch,
            path,
        }
    }

    /// The 0-based epoch of `step`.
    fn epoch(&self, step: usize) -> usize {
        step / self.steps_per_epoch
    }

    fn moment(&self, config: &TrainConfig, step: usize) -> Moment {
        let pos = step % self.steps_per_epoch;
        let last = step + 1 == self.total_steps;
        let done = if self.by_epochs {
            step as f64 / self.steps_per_epoch as f64
        } else {
            step as f64
        };
        let epoch_end = self.by_epochs && pos == self.steps_per_epoch - 1;
        let (record, log) = if self.by_epochs {
            let epochs_done = self.epoch(step) + 1;
            (
                epoch_end,
                epoch_end && (epochs_done.is_multiple_of(config.log_every) || last),
            )
        } else {
            (
                step.is_multiple_of(config.record_every),
                step.is_multiple_of(config.log_every) || last,
            )
        };
        let scheduled = config
            .schedule
            .rate(config.learning_rate, done, self.total_units);
        Moment {
            pos,
            lr: crate::optim::warmed_up(scheduled, done, config.warmup),
            epoch_end,
            record,
            log,
        }
    }
}

/// Checks a run before anything is built.
fn check_run(
    config: &TrainConfig,
    train: &dyn Examples,
    val: Option<&dyn Examples>,
    input: Geometry,
) -> Result<()> {
    config.check()?;
    if config.patience.is_some() && val.is_none() {
        return Err(Error::Config(
            "--patience needs a validation set (--val-split)".into(),
        ));
    }
    if train.count() == 0 {
        return Err(Error::Data("there are no training images".into()));
    }
    if train.images().ncols() != input.len() {
        return Err(Error::Config(format!(
            "the training rows have {} values, but {input} inputs need {}",
            train.images().ncols(),
            input.len()
        )));
    }
    if config.augment.is_on() && (input.channels != 3 || input.height != input.width) {
        return Err(Error::Config(format!(
            "--augment needs square RGB images, but the inputs are {input}"
        )));
    }
    Ok(())
}

/// The network's layers with parameters or state, by name and shape: what two networks must
/// share for one to continue the other's training.
fn parameter_shapes(net: &Network) -> Vec<(String, Vec<usize>)> {
    net.named_params()
        .iter()
        .chain(&net.named_buffers())
        .map(|(name, p)| (name.clone(), p.shape().to_vec()))
        .collect()
}

/// The network's layers but its dropout layers: what a resumed run may not change.
fn without_dropout(net: &Network) -> Vec<crate::nn::LayerSpec> {
    net.specs()
        .into_iter()
        .filter(|l| !matches!(l, crate::nn::LayerSpec::Dropout(_)))
        .collect()
}

/// The network in words for messages: its layer sizes for the document's kind, else its
/// layers in the text form.
fn shown(net: &Network) -> String {
    if net.is_dense_stack() {
        format!("{:?}", net.sizes())
    } else {
        format!("\"{}\" on {} inputs", describe(&net.specs()), net.input())
    }
}

/// The network training starts from: fresh weights drawn with the seed, or (`--resume`) the
/// saved network's weights and state in this run's architecture (which must have the same
/// layers, though its dropout may differ),
/// with its optimiser state when the optimiser matches.
fn starting_network(
    config: &TrainConfig,
    arch: &Architecture,
    start: Option<Start>,
    optimizer: &mut dyn Optimizer,
) -> Result<Network> {
    let mut net = Network::new(arch, config.init, &mut Mt19937::new(config.seed))?;
    let Some(saved) = start else {
        return Ok(net);
    };
    if parameter_shapes(&saved.network) != parameter_shapes(&net)
        || without_dropout(&saved.network) != without_dropout(&net)
    {
        return Err(Error::Config(format!(
            "the model to resume has layers {}, but this data and the architecture give {}",
            shown(&saved.network),
            shown(&net)
        )));
    }
    for (mut dst, src) in net
        .params_mut()
        .into_iter()
        .zip(saved.network.params().into_iter().map(|p| p.value))
    {
        dst.assign(&src);
    }
    let buffers: Vec<ArrayD<f32>> = saved
        .network
        .named_buffers()
        .into_iter()
        .map(|(_, b)| b.to_owned())
        .collect();
    for (mut dst, src) in net.buffers_mut().into_iter().zip(buffers) {
        dst.assign(&src);
    }
    if let Some(state) = saved.optimizer.filter(|o| o.config == config.optimizer) {
        *optimizer.state_mut() = state.state;
    }
    Ok(net)
}

/// The engine for `path` (or for the configured device, when it is not the CPU), borrowing
/// the data.
fn build_engine<'a>(
    (config, optimizer): (&TrainConfig, &dyn Optimizer),
    path: &'static str,
    net: &Network,
    train: Labelled<'a>,
    val: Option<Labelled<'a>>,
    input: Geometry,
) -> Result<Box<dyn Engine + 'a>> {
    let augment = config.augment;
    if !config.device.is_cpu() {
        if !config.group.is_solo() {
            return Err(Error::Config(
                "--device cuda does not share its steps among processes yet: under mpirun, \
                 train on the CPU (drop --device)"
                    .into(),
            ));
        }
        let data = (train, val, augment, input.height);
        return on_device::engine(config, net, optimizer, data);
    }
    Ok(match path {
        "gram" => Box::new(gram::GramEngine::new(net, train, val)?),
        _ => Box::new(direct::DirectEngine::new(
            train,
            val,
            augment,
            input.height,
            (config.group.clone(), config.sync_bn),
        )),
    })
}

/// How the steps are computed (see [`path::choose_path`]), and whether processes can share
/// that way ([`shared::path`]).
fn step_path(
    config: &TrainConfig,
    optimizer: &dyn Optimizer,
    net: &Network,
    (train, val): (&dyn Examples, Option<&dyn Examples>),
    plan: &Plan,
) -> Result<&'static str> {
    let streamed = train.images().in_memory().is_none();
    let path = path::choose_path(
        config,
        optimizer,
        net,
        train.count(),
        val.map_or(0, |v| v.count()),
        plan.batch,
        plan.total_steps,
        streamed,
    )?;
    shared::path(config, path, streamed)
}

/// Trains a network on `train` (validating on `val`), from `start` or from fresh weights.
///
/// `input` says how each row is read: `size × size × 3` for images (conv layers and
/// augmentation need it), any geometry with as many values for dense-only networks.
///
/// The examples may be in memory ([`Dataset`](crate::data::Dataset)) or on disk
/// ([`Streamed`](crate::data::Streamed)): the same data, configuration and seed give the same
/// weights either way. Streamed mini-batches are read ahead by a background thread; streamed
/// full-batch training takes the Gram path (it reads the images a few times, then never).
///
/// A callback can end the run early ([`Callback::should_stop`], e.g. on Ctrl-C); the result
/// then says [`interrupted`](Trained::interrupted) and holds the weights reached so far.
///
/// # Errors
/// [`Error::Config`] for a bad configuration (checked first), an architecture whose layers do
/// not fit the input, an impossible `--exact-path gram`, a resumed network that does not fit
/// the data, or an error a callback returns (a checkpoint that cannot be written);
/// [`Error::Diverged`] as soon as a step's outputs are NaN or infinite (no weights are
/// returned then); [`Error::Io`] when streamed images cannot be read.
pub fn train(
    config: &TrainConfig,
    train: &dyn Examples,
    val: Option<&dyn Examples>,
    classes: &Classes,
    input: Geometry,
    start: Option<Start>,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Trained> {
    check_run(config, train, val, input)?;
    let began = Instant::now();
    let plan = Plan::new(config, train.count());
    let arch = Architecture {
        input,
        body: config.body.clone(),
        outputs: classes.outputs(),
    };
    let mut optimizer = config.optimizer.build();
    let mut net = starting_network(config, &arch, start, optimizer.as_mut())?;
    optimizer.set_decay(net.decay_mask());
    let path = step_path(config, optimizer.as_ref(), &net, (train, val), &plan)?;
    let mut train_set = Labelled::new(train, classes);
    if config.label_smoothing > 0.0 {
        crate::loss::smoothed(&mut train_set.targets, config.label_smoothing);
    }
    let val_set = val.map(|v| Labelled::new(v, classes));
    let mut engine = build_engine(
        (config, optimizer.as_ref()),
        path,
        &net,
        train_set,
        val_set,
        input,
    )?;
    for cb in callbacks.iter_mut() {
        cb.on_start(&plan.info(path));
    }
    let ended =
        Loop::new(config, &plan).run(engine.as_mut(), &mut net, optimizer.as_mut(), callbacks)?;

    let saved_optimizer = View {
        engine: engine.as_ref(),
        net: &net,
        optimizer: optimizer.as_ref(),
    }
    .optimizer()?;
    let communication_seconds = engine.communication_seconds();
    engine.finish(&mut net)?;
    // The last update is not followed by a forward pass that would show a blow-up.
    if !net.is_finite() {
        return Err(diverged(ended.steps, config.learning_rate));
    }
    let mut restored = None;
    if let Some(best) = ended.early.and_then(EarlyStopping::into_best) {
        restored = Some(best.record);
        net = best.network;
    }
    for cb in callbacks.iter_mut() {
        cb.on_end(&ended.history);
    }
    Ok(Trained {
        network: net,
        history: ended.history,
        optimizer: saved_optimizer,
        steps: ended.steps,
        path,
        restored,
        stopped_early: ended.stopped_early,
        interrupted: ended.interrupted,
        seconds: began.elapsed().as_secs_f64(),
        communication_seconds,
    })
}

/// The training loop's state between steps.
struct Loop<'c> {
    config: &'c TrainConfig,
    plan: &'c Plan,
    rng: Rng,
    /// Under several processes, this one's generator for its part of each batch: `rng`
    /// orders the batches and must stay the same on all of them.
    own_rng: Option<Rng>,
    order: Vec<usize>,
    history: History,
    early: Option<EarlyStopping>,
    /// Cost × examples, correct decisions and examples seen so far in the epoch.
    epoch_totals: (f64, usize, usize),
    steps: usize,
}

/// How the loop ended.
struct Ended {
    history: History,
    early: Option<EarlyStopping>,
    steps: usize,
    stopped_early: bool,
    interrupted: bool,
}

/// What happens after a step.
enum Flow {
    Continue,
    StoppedEarly,
    Interrupted,
}

impl<'c> Loop<'c> {
    fn new(config: &'c TrainConfig, plan: &'c Plan) -> Self {
        Loop {
            config,
            plan,
            rng: rng_for(config.seed, Stream::Train),
            own_rng: (!config.group.is_solo()).then(|| {
                let rank = config.group.rank() as u64;
                rng_for(config.seed.wrapping_add(rank), Stream::Process)
            }),
            order: (0..plan.examples).collect(),
            history: History::default(),
            early: config.patience.map(EarlyStopping::new),
            epoch_totals: (0.0, 0, 0),
            steps: 0,
        }
    }

    fn run(
        mut self,
        engine: &mut dyn Engine,
        net: &mut Network,
        optimizer: &mut dyn Optimizer,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Ended> {
        let mut flow = Flow::Continue;
        for step in 0..self.plan.total_steps {
            flow = self.step(step, engine, net, optimizer, callbacks)?;
            if !matches!(flow, Flow::Continue) {
                break;
            }
        }
        Ok(Ended {
            history: self.history,
            early: self.early,
            steps: self.steps,
            stopped_early: matches!(flow, Flow::StoppedEarly),
            interrupted: matches!(flow, Flow::Interrupted),
        })
    }

    /// One step: the update, then what callbacks, the history and early stopping need.
    fn step(
        &mut self,
        step: usize,
        engine: &mut dyn Engine,
        net: &mut Network,
        optimizer: &mut dyn Optimizer,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Flow> {
        let (plan, config) = (self.plan, self.config);
        let moment = plan.moment(config, step);
        if moment.pos == 0 && plan.batch < plan.examples {
            self.order.shuffle(&mut self.rng);
            engine.upcoming(&self.order, plan.batch);
        }
        let rows = &self.order
            [moment.pos * plan.batch..((moment.pos + 1) * plan.batch).min(plan.examples)];
        // Epoch figures average every batch; iteration figures are that step's.
        let want_score = plan.by_epochs || moment.record || moment.log;
        let outcome = engine.step(
            net,
            optimizer,
            rows,
            moment.lr,
            config.l2,
            want_score,
            self.own_rng.as_mut().unwrap_or(&mut self.rng),
        )?;
        if !outcome.finite {
            return Err(diverged(step + 1, config.learning_rate));
        }
        self.steps += 1;
        shared::check_now_and_then(&config.group, net, self.steps)?;
        let scored = outcome.score;
        if let Some(s) = scored {
            let (cost, correct, seen) = &mut self.epoch_totals;
            *cost += s.cost * rows.len() as f64;
            *correct += s.correct;
            *seen += rows.len();
        }
        let batch_size = rows.len();
        let cost = (moment.record || moment.log).then(|| self.cost(scored, engine, net));
        let view = View {
            engine: &*engine,
            net,
            optimizer: &*optimizer,
        };
        let info = StepInfo {
            step,
            epoch: plan.by_epochs.then_some(plan.epoch(step)),
            cost,
            log: moment.log,
            learning_rate: moment.lr,
        };
        for cb in callbacks.iter_mut() {
            cb.on_step(&info, &view)?;
        }
        if moment.record {
            let accuracy = match scored {
                Some(s) if !plan.by_epochs => s.correct as f64 / batch_size as f64,
                _ => self.epoch_totals.1 as f64 / self.epoch_totals.2.max(1) as f64,
            };
            if self.record(
                step,
                &moment,
                cost.unwrap_or(f64::NAN),
                accuracy,
                &view,
                callbacks,
            )? {
                return Ok(Flow::StoppedEarly);
            }
        }
        if moment.epoch_end {
            self.epoch_totals = (0.0, 0, 0);
        }
        if step + 1 < plan.total_steps && self.asked_to_stop(callbacks) {
            return Ok(Flow::Interrupted);
        }
        Ok(Flow::Continue)
    }

    /// Whether a callback asks to stop (Ctrl-C). Processes sharing the run stop together,
    /// at the same step, when any of them is asked.
    fn asked_to_stop(&self, callbacks: &[&mut dyn Callback]) -> bool {
        let stop = callbacks.iter().any(|cb| cb.should_stop());
        let group = &self.config.group;
        if group.is_solo() {
            stop
        } else {
            group.any(stop)
        }
    }

    /// The training cost to report: the step's (iterations) or the epoch's mean so far
    /// (epochs), plus the L2 term.
    fn cost(&self, scored: Option<Score>, engine: &dyn Engine, net: &Network) -> f64 {
        let data_cost = match scored {
            Some(s) if !self.plan.by_epochs => s.cost,
            _ => self.epoch_totals.0 / self.epoch_totals.2.max(1) as f64,
        };
        let l2 = self.config.l2;
        let l2_term = if l2 > 0.0 {
            0.5 * f64::from(l2) * engine.weight_norm_sq(net)
        } else {
            0.0
        };
        data_cost + l2_term
    }

    /// Makes a record (with validation figures), tells callbacks, and asks early stopping:
    /// `true` when training should stop here.
    fn record(
        &mut self,
        step: usize,
        moment: &Moment,
        cost: f64,
        train_accuracy: f64,
        view: &View<'_>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<bool> {
        let validation = view.engine.validate(view.net)?;
        let record = Record {
            step,
            epoch: self.plan.by_epochs.then_some(self.plan.epoch(step) + 1),
            cost,
            train_accuracy,
            val_cost: validation.map(|v| v.0),
            val_accuracy: validation.map(|v| v.1),
            learning_rate: moment.lr,
        };
        for cb in callbacks.iter_mut() {
            cb.on_record(&record, view)?;
        }
        let stop = match (&mut self.early, record.val_cost) {
            (Some(early), Some(val_cost)) => early.observe(&record, val_cost, || view.network())?,
            _ => false,
        };
        self.history.records.push(record);
        Ok(stop)
    }
}

#[cfg(test)]
mod tests;
