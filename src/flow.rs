//! The whole training job as one library call: plan the split, load the images (or stream
//! them when they do not fit the memory budget), train, measure, save the model, draw the
//! curves and write the report. `deepcat train` builds a [`Job`] from its flags and prints
//! what [`run`] returns; `examples/train_resnet.rs` and any other front end call the same
//! function instead of repeating the sequence.
//!
//! What it does not do: parse flags, print, or install signal handlers. Progress and Ctrl-C
//! come in as [`Callback`]s; the moment the data is known (before training starts) is told to a
//! [`Watch`], so a front end can print a plan or refuse to go on.

use crate::data::{CacheReport, Examples, SkippedFile, SplitSpec, Splits, plan_splits};
use crate::metrics::{Metrics, Mistake, evaluate, most_confident_errors};
use crate::model::{Classes, Model};
use crate::model_file::{self, ModelFile};
use crate::report::{self, Evaluation, Report, TrainingSummary};
use crate::train::callbacks::Checkpoint;
use crate::train::{Callback, Start, TrainConfig, Trained, train};
use crate::{Error, Result};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;

mod shared;

/// Everything a training run needs, decided before any image is read.
#[derive(Debug)]
pub struct Job {
    /// The data, its split and how photos become rows.
    pub split: SplitSpec,
    /// The network and how it is trained.
    pub config: TrainConfig,
    /// The recipe `config` came from (recorded in the model: "document", "conv", "resnet").
    pub recipe: String,
    /// With two classes, the class the sigmoid output means (see [`Classes::new`]).
    pub positive: Option<String>,
    /// A saved model to continue: its weights and optimiser state start the run.
    pub resume: Option<ModelFile>,
    /// Bytes of image data that may be held in memory; `None` for half the memory available.
    /// A larger set is streamed from the decoded cache.
    pub memory_limit: Option<u64>,
    /// Where the results go.
    pub outputs: Outputs,
    /// How many of the most confidently wrong test images to list.
    pub errors: usize,
}

/// Where a [`Job`] writes.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The model file (written atomically).
    pub model: PathBuf,
    /// Curves as `PATH.png` and `PATH.svg`.
    pub plot: Option<PathBuf>,
    /// The HTML report.
    pub report: Option<PathBuf>,
    /// Save the model every N iterations (or epochs) while training.
    pub checkpoint_every: Option<usize>,
}

/// The data as loaded, told to the [`Watch`] before training starts.
#[derive(Debug)]
pub struct Loaded<'a> {
    /// The classes, with the positive one chosen.
    pub classes: &'a Classes,
    /// Images per class in the training part, in class order.
    pub train_counts: Vec<usize>,
    /// Images in each part.
    pub sizes: Sizes,
    /// Files that could not be used.
    pub skipped: &'a [SkippedFile],
    /// What the decoded cache did.
    pub cache: &'a CacheReport,
    /// Seconds spent scanning and decoding.
    pub load_seconds: f64,
    /// Whether the images are streamed from disk rather than held in memory.
    pub streamed: bool,
}

/// Images in the training, validation and test parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

/// Told about the run's phases. Every method has a default that does nothing.
pub trait Watch {
    /// The data is loaded and checked; training starts when this returns.
    ///
    /// # Errors
    /// An error stops the run before training.
    fn loaded(&mut self, _loaded: &Loaded) -> Result<()> {
        Ok(())
    }
}

/// A [`Watch`] that watches nothing.
impl Watch for () {}

/// What the trained model scores.
#[derive(Debug, Clone)]
pub struct Scores {
    pub train_accuracy: f64,
    pub val_accuracy: Option<f64>,
    /// The test metrics and the most confidently wrong test images, when there is a test part.
    pub test: Option<(Metrics, Vec<Mistake>)>,
}

/// What a run did and wrote.
pub struct Outcome {
    /// The trained model (also saved at [`Outputs::model`], unless interrupted without
    /// checkpoints).
    pub model: Model,
    /// The training run: history, steps, path, optimiser state, timings.
    pub trained: Trained,
    /// The scores; `None` when training was interrupted.
    pub scores: Option<Scores>,
    /// Images in each part.
    pub sizes: Sizes,
    /// Files that could not be used.
    pub skipped: Vec<SkippedFile>,
    /// Seconds spent scanning and decoding.
    pub load_seconds: f64,
    /// Whether the images were streamed from disk.
    pub streamed: bool,
    /// The test part's files, in order.
    pub test_files: Option<Vec<PathBuf>>,
    /// The model's `training` metadata (with the run's timings, which the file leaves out).
    pub training: Value,
    /// Plot files written.
    pub plots: Vec<PathBuf>,
    /// Whether the model file was written.
    pub saved: bool,
}

/// Runs the job: load or stream, train, measure, save, plot, report.
///
/// `callbacks` see every step (progress, a stop flag); a checkpoint writer is added when
/// [`Outputs::checkpoint_every`] asks for one. A callback that stops the run early leaves
/// [`Outcome::scores`] empty; the weights reached are saved only when checkpointing.
///
/// # Errors
/// Unusable data (see [`plan_splits`]), classes that differ from the resumed model's, a
/// memory limit too small for one image, training that diverges, a file that cannot be
/// written.
pub fn run(
    job: Job,
    callbacks: &mut [&mut dyn Callback],
    watch: &mut dyn Watch,
) -> Result<Outcome> {
    let started = Instant::now();
    let files = plan_splits(&job.split)?;
    let group = job.config.group.clone();
    shared::check_same_job(&group, &job, &files)?;
    // Processes on one machine share its memory budget: a set that does not fit once per
    // process is streamed from the one pack they share.
    let (here, local_rank) = group.local();
    let chunk =
        crate::data::memory::images_per_chunk(job.split.preprocess.features(), job.memory_limit)?
            / here.max(1);
    // The first process on each machine decodes the images (into its decoded cache); the
    // others wait, then read them from there.
    let first = local_rank == 0;
    if !first {
        group.barrier();
    }
    if files.files() <= chunk.max(1) {
        let splits = files.load(&job.split);
        if first {
            group.barrier();
        }
        run_on(job, splits?, callbacks, watch, started)
    } else {
        // A quarter of the budget per block read or decoded leaves the rest to training.
        let splits = files.stream(&job.split, (chunk / 2).max(1));
        if first {
            group.barrier();
        }
        run_on(job, splits?, callbacks, watch, started)
    }
}

/// The phases after loading, for images in memory or streamed.
fn run_on<S: Examples>(
    mut job: Job,
    splits: Splits<S>,
    callbacks: &mut [&mut dyn Callback],
    watch: &mut dyn Watch,
    started: Instant,
) -> Result<Outcome> {
    let classes = check_classes(&job, &splits)?;
    let sizes = sizes(&splits);
    shared::check_same_sets(&job.config.group, sizes, &splits.skipped)?;
    let streamed = splits.train.images().in_memory().is_none();
    watch.loaded(&Loaded {
        classes: &classes,
        train_counts: splits.train.counts_per_class(classes.len()),
        sizes,
        skipped: &splits.skipped,
        cache: &splits.cache,
        load_seconds: splits.load_seconds,
        streamed,
    })?;
    let trained = fit(&mut job, &splits, &classes, callbacks)?;
    let model = Model {
        network: trained.network.clone(),
        classes,
        preprocess: job.split.preprocess,
        tta: job.config.tta,
    };
    let mut outcome = Outcome {
        sizes,
        skipped: splits.skipped.clone(),
        load_seconds: splits.load_seconds,
        streamed,
        test_files: splits.test.as_ref().map(|t| t.paths().to_vec()),
        training: Value::Null,
        plots: Vec::new(),
        saved: false,
        scores: None,
        model,
        trained,
    };
    if outcome.trained.interrupted {
        save_interrupted(&job, &mut outcome)?;
        return Ok(outcome);
    }
    let scores = measure(&job, &outcome.model, &splits)?;
    outcome.training = training_json(&job, &splits, &outcome.trained, &scores, started);
    outcome.scores = Some(scores);
    save(&job, &splits, &mut outcome)?;
    Ok(outcome)
}

fn sizes<S: Examples>(splits: &Splits<S>) -> Sizes {
    Sizes {
        train: splits.train.count(),
        val: splits.val.as_ref().map_or(0, |v| v.count()),
        test: splits.test.as_ref().map_or(0, |t| t.count()),
    }
}

/// The classes found, which must be the resumed model's.
fn check_classes<S: Examples>(job: &Job, splits: &Splits<S>) -> Result<Classes> {
    let classes = Classes::new(splits.classes.clone(), job.positive.as_deref())?;
    if let Some(r) = &job.resume
        && r.model.classes != classes
    {
        return Err(Error::Data(format!(
            "--resume: the model's classes {:?} (positive {:?}) differ from this data's {:?} (positive {:?})",
            r.model.classes.names,
            r.model.classes.positive_name(),
            classes.names,
            classes.positive_name()
        )));
    }
    Ok(classes)
}

/// Trains with the caller's callbacks and, when asked, a checkpoint writer.
fn fit<S: Examples>(
    job: &mut Job,
    splits: &Splits<S>,
    classes: &Classes,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Trained> {
    let out = &job.outputs;
    let root = job.config.group.is_root();
    let mut checkpoint = out.checkpoint_every.filter(|_| root).map(|every| {
        Checkpoint::new(
            out.model.clone(),
            every,
            classes.clone(),
            job.split.preprocess,
        )
        .with_tta(job.config.tta)
    });
    let mut all: Vec<&mut dyn Callback> = Vec::with_capacity(callbacks.len() + 1);
    for c in callbacks.iter_mut() {
        all.push(&mut **c as &mut dyn Callback);
    }
    if let Some(c) = checkpoint.as_mut() {
        all.push(c);
    }
    let start = job.resume.take().map(|r| Start {
        network: r.model.network,
        optimizer: r.optimizer,
    });
    train(
        &job.config,
        &splits.train,
        splits.val.as_ref().map(|v| v as &dyn Examples),
        classes,
        crate::nn::Geometry::image(job.split.preprocess.size as usize),
        start,
        &mut all,
    )
}

/// After an interruption: with checkpoints, the weights reached are saved (with the step
/// count), so `--resume` continues from them; without, nothing is written.
fn save_interrupted(job: &Job, outcome: &mut Outcome) -> Result<()> {
    if job.outputs.checkpoint_every.is_none() || !job.config.group.is_root() {
        return Ok(());
    }
    let training = json!({ "interrupted_after_steps": outcome.trained.steps });
    let t = &outcome.trained;
    model_file::save(
        &job.outputs.model,
        &outcome.model,
        Some(&t.optimizer),
        Some(&training),
    )?;
    outcome.training = training;
    outcome.saved = true;
    Ok(())
}

/// Scores on each part, and the test set's most confident mistakes.
fn measure<S: Examples>(job: &Job, model: &Model, splits: &Splits<S>) -> Result<Scores> {
    let group = &job.config.group;
    let test = match &splits.test {
        Some(t) => {
            let predictions = shared::predict_all(group, model, t)?;
            let metrics = evaluate(&model.classes, t.labels(), &predictions);
            let errors = most_confident_errors(
                &model.classes,
                t.paths(),
                t.labels(),
                &predictions,
                job.errors,
            );
            Some((metrics, errors))
        }
        None => None,
    };
    let accuracy = |data: &dyn Examples| -> Result<f64> {
        let predicted = shared::predict_all(group, model, data)?;
        Ok(crate::model::accuracy(&predicted.classes, data.labels()))
    };
    Ok(Scores {
        train_accuracy: accuracy(&splits.train)?,
        val_accuracy: splits.val.as_ref().map(|v| accuracy(v)).transpose()?,
        test,
    })
}

/// The model's `training` metadata: the configuration, and the run's history, scores,
/// counts, skipped files and timings ([`report::training`] names those keys).
fn training_json<S: Examples>(
    job: &Job,
    splits: &Splits<S>,
    trained: &Trained,
    scores: &Scores,
    started: Instant,
) -> Value {
    let mut training = json!({
        "config": &job.config,
        "recipe": job.recipe,
        "data_dir": job.split.data_dir,
        "test_dir": job.split.test_dir,
        "test_split": job.split.test_split,
        "val_split": job.split.val_split,
        "steps": trained.steps,
        "exact_path": trained.path,
    });
    let timings = report::Timings {
        load: splits.load_seconds,
        train: trained.seconds,
        total: started.elapsed().as_secs_f64(),
    };
    let test_accuracy = scores.test.as_ref().map(|(m, _)| m.accuracy);
    let summary = report::training::summary_json(splits, &trained.history, test_accuracy, timings);
    if let Some(object) = training.as_object_mut() {
        object.extend(summary);
    }
    training
}

/// Saves the model (without the timings: the same data, flags and seed give the same model
/// bytes however long the run took), the curves and the report.
fn save<S: Examples>(job: &Job, splits: &Splits<S>, outcome: &mut Outcome) -> Result<()> {
    // Under several processes, the first writes for all.
    if !job.config.group.is_root() {
        return Ok(());
    }
    let mut saved = outcome.training.clone();
    if let Some(object) = saved.as_object_mut() {
        object.remove(report::training::SECONDS);
    }
    let out = &job.outputs;
    model_file::save(
        &out.model,
        &outcome.model,
        Some(&outcome.trained.optimizer),
        Some(&saved),
    )?;
    outcome.saved = true;
    if let Some(p) = &out.plot {
        outcome.plots = crate::plot::write_curves(&outcome.trained.history, p)?;
    }
    if let Some(p) = &out.report {
        let test = splits.test.as_ref().map(|t| t as &dyn Examples);
        write_report(p, job, &outcome.training, &outcome.model, test)?;
    }
    Ok(())
}

/// The report of the model just trained, evaluated on its test set when there is one.
fn write_report(
    path: &std::path::Path,
    job: &Job,
    training: &Value,
    model: &Model,
    test: Option<&dyn Examples>,
) -> Result<()> {
    let evaluation = test
        .map(|t| -> Result<Evaluation> {
            let predictions = model.predict_all(t)?;
            let mut evaluation = Evaluation::new(
                report::TEST_SET,
                &model.classes,
                t.labels(),
                t.paths(),
                &predictions,
                report::DEFAULT_MISTAKES,
            );
            evaluation.explain_mistakes(model);
            Ok(evaluation)
        })
        .transpose()?;
    let test_size = evaluation.as_ref().map_or(0, |e| e.metrics.size);
    let report = Report {
        title: report::TITLE.into(),
        lead: format!(
            "Model {}, just trained; evaluated on its test set ({test_size} images).",
            job.outputs.model.display()
        ),
        classes: model.classes.clone(),
        training: Some(TrainingSummary::from_json(training, &model.classes.names)),
        evaluation,
    };
    report::write(&report, path)
}
