//! `deepcat train`: flags → [`TrainConfig`] + [`SplitSpec`], then load, train, measure, save.

use super::{INTERRUPTED, UsageError, check_max_skipped, peak_memory_bytes, usage, warn_skipped};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use deepcat::data::augment::Augment;
use deepcat::data::{Preprocess, ResizeFilter, SplitSpec, load_splits};
use deepcat::metrics::{evaluate, most_confident_errors};
use deepcat::model::{Classes, Model};
use deepcat::model_file;
use deepcat::nn::Init;
use deepcat::optim::{OptimizerConfig, Schedule};
use deepcat::train::callbacks::{Checkpoint, Progress, StopFlag};
use deepcat::train::{Callback, ExactPath, Length, Start, TrainConfig, train};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OptimizerName {
    Gd,
    Momentum,
    Adam,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InitName {
    Document,
    He,
    Xavier,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ResizeName {
    Nearest,
    Bilinear,
    Lanczos,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PathName {
    Auto,
    Gram,
    Direct,
}

fn parse_layers(text: &str) -> Result<Vec<usize>> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    if text.trim().is_empty() {
        usage!(
            "--layers is empty; give hidden layer sizes like 20,7,5, or none for no hidden layer"
        );
    }
    text.split(',')
        .map(|s| {
            s.trim().parse::<usize>().map_err(|_| {
                anyhow::Error::new(UsageError(format!(
                    "--layers: {s:?} is not a layer size; give sizes like 20,7,5"
                )))
            })
        })
        .collect()
}

/// Flags of `deepcat train`. Defaults are the document's.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Folder with one sub-folder of images per class (e.g. data/cats, data/random_images).
    data_dir: PathBuf,
    /// A separate test folder with the same class sub-folders (instead of --test-split).
    #[arg(long, value_name = "DIR")]
    test_dir: Option<PathBuf>,
    /// Images are resized to SIZE×SIZE RGB [default: 128].
    #[arg(long)]
    size: Option<u32>,
    /// Resize filter [default: nearest, as the document's loader].
    #[arg(long, value_enum)]
    resize: Option<ResizeName>,
    /// Hidden layer sizes, comma-separated ("none" for no hidden layer).
    #[arg(long, default_value = "20,7,5")]
    layers: String,
    /// Learning rate.
    #[arg(long, default_value_t = 0.0075)]
    lr: f32,
    /// Optimiser steps (the document's iterations) [default: 2500].
    #[arg(long, conflicts_with = "epochs")]
    iterations: Option<usize>,
    /// Passes over the training set, instead of --iterations.
    #[arg(long)]
    epochs: Option<usize>,
    /// Examples per step [default: the whole training set, as the document].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Optimiser.
    #[arg(long, value_enum, default_value = "gd")]
    optimizer: OptimizerName,
    /// Momentum's β, or Adam's β1.
    #[arg(long, default_value_t = 0.9)]
    beta1: f32,
    /// Adam's β2.
    #[arg(long, default_value_t = 0.999)]
    beta2: f32,
    /// Adam's ε.
    #[arg(long, default_value_t = 1e-8)]
    epsilon: f32,
    /// Learning-rate schedule: constant, step:EVERY:FACTOR (EVERY in iterations, or epochs
    /// with --epochs) or cosine[:MIN_FACTOR].
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// L2 penalty λ: the cost gains λ/2·Σ‖W‖² over all weights.
    #[arg(long, default_value_t = 0.0)]
    l2: f32,
    /// Inverted-dropout probability after each hidden layer (training only).
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Weight initialisation.
    #[arg(long, value_enum, default_value = "document")]
    init: InitName,
    /// Fraction of DATA_DIR held out for testing, above 0 and below 1.
    #[arg(long, default_value_t = 0.2, conflicts_with = "test_dir")]
    test_split: f64,
    /// Fraction of the training part held out for validation.
    #[arg(long, default_value_t = 0.0)]
    val_split: f64,
    /// Stop after N records (epochs, or --record-every iterations) without a better
    /// validation cost, keeping the best weights. Needs --val-split.
    #[arg(long)]
    patience: Option<usize>,
    /// Save the model (with optimiser state) every N iterations (or epochs with --epochs).
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// Continue training a saved model, with its optimiser state when the optimiser matches.
    #[arg(long, value_name = "MODEL")]
    resume: Option<PathBuf>,
    /// Augment training images on the fly: any of flip,crop,jitter.
    #[arg(long, default_value = "none")]
    augment: String,
    /// Stop with an error when more than this fraction of the files cannot be used.
    #[arg(long, value_name = "F", default_value_t = deepcat::data::DEFAULT_MAX_SKIPPED)]
    max_skipped: f64,
    /// Seed for the split, initial weights, batch order, dropout and augmentation.
    #[arg(long, default_value_t = deepcat::train::DEFAULT_SEED)]
    seed: u64,
    /// With two classes, the class the sigmoid output means [default: cat or cats, else the
    /// second class].
    #[arg(long)]
    positive: Option<String>,
    /// How the first layer is computed: auto, gram (exact shortcut) or direct.
    #[arg(long, value_enum, default_value = "auto")]
    exact_path: PathName,
    /// Where to save the model.
    #[arg(long, default_value = "model.safetensors")]
    model: PathBuf,
    /// Write cost/accuracy curves to PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
    /// List the N most confidently wrong test images.
    #[arg(long, value_name = "N", default_value_t = 0)]
    errors: usize,
    /// Print the cost every N iterations (or epochs) [default: 50 iterations, 1 epoch].
    #[arg(long, value_name = "N")]
    log_every: Option<usize>,
    /// Record the history every N iterations (epochs always record each epoch).
    #[arg(long, value_name = "N", default_value_t = 100)]
    record_every: usize,
    /// Print one JSON object (the last line of standard output) instead of a report.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

fn fraction(value: f64, flag: &str) -> Result<f64> {
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        usage!("{flag} must be at least 0 and below 1, got {value}")
    }
}

/// The test split: strictly between 0 and 1 (without a test part, use --test-dir).
fn test_fraction(value: f64) -> Result<f64> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        usage!("--test-split must be above 0 and below 1, got {value}")
    }
}

fn build_config(a: &TrainArgs) -> Result<TrainConfig> {
    let length = match (a.iterations, a.epochs) {
        (_, Some(e)) => Length::Epochs(e),
        (Some(i), None) => Length::Iterations(i),
        (None, None) => Length::Iterations(2500),
    };
    let by_epochs = matches!(length, Length::Epochs(_));
    let optimizer = match a.optimizer {
        OptimizerName::Gd => OptimizerConfig::Gd,
        OptimizerName::Momentum => OptimizerConfig::Momentum { beta: a.beta1 },
        OptimizerName::Adam => OptimizerConfig::Adam {
            beta1: a.beta1,
            beta2: a.beta2,
            epsilon: a.epsilon,
        },
    };
    let config = TrainConfig {
        hidden: parse_layers(&a.layers)?,
        learning_rate: a.lr,
        length,
        batch_size: a.batch_size,
        optimizer,
        schedule: Schedule::parse(&a.schedule)?,
        l2: a.l2,
        dropout: a.dropout,
        init: match a.init {
            InitName::Document => Init::Document,
            InitName::He => Init::He,
            InitName::Xavier => Init::Xavier,
        },
        seed: a.seed,
        patience: a.patience,
        exact_path: match a.exact_path {
            PathName::Auto => ExactPath::Auto,
            PathName::Gram => ExactPath::Gram,
            PathName::Direct => ExactPath::Direct,
        },
        record_every: a.record_every,
        log_every: a.log_every.unwrap_or(if by_epochs { 1 } else { 50 }),
        augment: Augment::parse(&a.augment)?,
    };
    config.check()?;
    if a.patience.is_some() && a.val_split == 0.0 {
        usage!("--patience needs a validation set: add --val-split (e.g. 0.1)");
    }
    if a.checkpoint_every == Some(0) {
        usage!("--checkpoint-every must be at least 1");
    }
    Ok(config)
}

/// Fails early (before any image is read) if the model cannot be written where asked.
fn check_writable(path: &Path, flag: &str) -> Result<()> {
    let dir = model_file::folder_of(path);
    if !dir.is_dir() {
        usage!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        usage!(
            "{flag} {} is a folder; give a file name such as model.safetensors",
            path.display()
        );
    }
    // Saving writes a temporary file there first: find out now, not after training.
    model_file::probe_writable(dir).with_context(|| {
        format!(
            "{flag} {}: cannot write in folder {}",
            path.display(),
            dir.display()
        )
    })?;
    Ok(())
}

pub fn run(a: Box<TrainArgs>) -> Result<ExitCode> {
    // Everything that can be checked before reading images is checked here.
    let config = build_config(&a)?;
    let test_split = test_fraction(a.test_split)?;
    let val_split = fraction(a.val_split, "--val-split")?;
    check_max_skipped(a.max_skipped)?;
    check_writable(&a.model, "--model")?;
    if let Some(p) = &a.plot {
        check_writable(p, "--plot")?;
    }
    let resumed = match &a.resume {
        Some(p) => Some(model_file::load(p).with_context(|| format!("--resume {}", p.display()))?),
        None => None,
    };
    let mut preprocess = Preprocess {
        size: a.size.unwrap_or(128),
        filter: match a.resize.unwrap_or(ResizeName::Nearest) {
            ResizeName::Nearest => ResizeFilter::Nearest,
            ResizeName::Bilinear => ResizeFilter::Bilinear,
            ResizeName::Lanczos => ResizeFilter::Lanczos,
        },
        exif_orientation: true,
    };
    if let Some(r) = &resumed {
        let saved = r.model.preprocess;
        if a.size.is_some_and(|s| s != saved.size)
            || a.resize.is_some() && preprocess.filter != saved.filter
        {
            usage!(
                "--resume: the model was trained on {}px images resized with {}; drop --size/--resize or match them",
                saved.size,
                saved.filter.name()
            );
        }
        preprocess = saved;
    }
    if preprocess.size == 0 || preprocess.size > 4096 {
        usage!("--size must be between 1 and 4096, got {}", preprocess.size);
    }

    let spec = SplitSpec {
        data_dir: a.data_dir.clone(),
        test_dir: a.test_dir.clone(),
        test_split,
        val_split,
        preprocess,
        seed: a.seed,
        max_skipped: a.max_skipped,
    };
    let splits = load_splits(&spec)?;
    warn_skipped(&splits.skipped);
    let classes = Classes::new(splits.classes.clone(), a.positive.as_deref())?;
    if let Some(r) = &resumed
        && r.model.classes != classes
    {
        bail!(
            "--resume: the model's classes {:?} (positive {:?}) differ from this data's {:?} (positive {:?})",
            r.model.classes.names,
            r.model.classes.positive_name(),
            classes.names,
            classes.positive_name()
        );
    }
    let train_set = &splits.train;
    if let Some(b) = config.batch_size.filter(|&b| b > train_set.len()) {
        eprintln!(
            "warning: --batch-size {b} is more than the {} training images; each step uses all of them",
            train_set.len()
        );
    }
    let test_size = splits.test.as_ref().map_or(0, |t| t.len());
    let val_size = splits.val.as_ref().map_or(0, |v| v.len());
    if !a.json {
        let counts = train_set.class_counts(classes.len());
        let per_class: Vec<String> = classes
            .names
            .iter()
            .zip(&counts)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        println!(
            "Loaded {} training, {val_size} validation and {test_size} test images in {:.2} s ({} files skipped); training classes: {}",
            train_set.len(),
            splits.load_seconds,
            splits.skipped.len(),
            per_class.join(", ")
        );
    }

    let mut progress = (!a.quiet).then(|| {
        if a.json {
            Progress::lines(Box::new(std::io::stderr()))
        } else {
            Progress::auto(a.log_every.is_some())
        }
    });
    let mut checkpoint = a
        .checkpoint_every
        .map(|every| Checkpoint::new(a.model.clone(), every, classes.clone(), preprocess));
    // Ctrl-C (or SIGTERM) from here on finishes the current step and stops; a second one quits
    // at once. Until now the default applies: nothing has been written yet.
    let mut stop = StopFlag::new();
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.raise() {
                std::process::exit(i32::from(INTERRUPTED));
            }
            eprintln!("\nInterrupted: stopping after this step (press Ctrl-C again to quit now)");
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let mut callbacks: Vec<&mut dyn Callback> = vec![&mut stop];
    if let Some(p) = progress.as_mut() {
        callbacks.push(p);
    }
    if let Some(c) = checkpoint.as_mut() {
        callbacks.push(c);
    }
    let start = resumed.map(|r| Start {
        network: r.model.network,
        optimizer: r.optimizer,
    });
    if !a.json {
        let sizes: Vec<String> = std::iter::once(train_set.x.ncols())
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(classes.outputs()))
            .map(|s| s.to_string())
            .collect();
        println!(
            "Network {} ({}), optimiser {}, learning rate {}, {}",
            sizes.join("-"),
            classes.head().name(),
            config.optimizer.name(),
            config.learning_rate,
            match config.length {
                Length::Iterations(n) => format!("{n} iterations"),
                Length::Epochs(e) => format!("{e} epochs"),
            }
        );
    }
    let trained = train(
        &config,
        train_set,
        splits.val.as_ref(),
        &classes,
        preprocess.size as usize,
        start,
        &mut callbacks,
    )?;
    drop(callbacks);

    let model = Model {
        network: trained.network,
        classes: classes.clone(),
        preprocess,
    };
    if trained.interrupted {
        let planned = match config.length {
            Length::Iterations(n) => format!("{n} iterations"),
            Length::Epochs(e) => format!("{e} epochs"),
        };
        if a.checkpoint_every.is_some() {
            let training = json!({ "interrupted_after_steps": trained.steps });
            model_file::save(&a.model, &model, Some(&trained.optimizer), Some(&training))
                .with_context(|| format!("saving the model to {}", a.model.display()))?;
            eprintln!(
                "Interrupted after {} steps of {planned}; saved the weights reached to {} (continue with --resume {})",
                trained.steps,
                a.model.display(),
                a.model.display()
            );
        } else {
            eprintln!(
                "Interrupted after {} steps of {planned}; no model saved (--checkpoint-every N keeps progress)",
                trained.steps
            );
        }
        return Ok(ExitCode::from(INTERRUPTED));
    }
    let train_accuracy = model.accuracy(train_set);
    let test_metrics = splits.test.as_ref().map(|t| {
        let predictions = model.predict(t.x.view());
        let metrics = evaluate(&classes, &t.labels, &predictions);
        let errors = most_confident_errors(&classes, &t.paths, &t.labels, &predictions, a.errors);
        (metrics, errors)
    });
    let val_accuracy = splits.val.as_ref().map(|v| model.accuracy(v));

    let training = json!({
        "config": &config,
        "data_dir": a.data_dir,
        "test_dir": a.test_dir,
        "test_split": test_split,
        "val_split": val_split,
        "steps": trained.steps,
        "exact_path": trained.path,
    });
    model_file::save(&a.model, &model, Some(&trained.optimizer), Some(&training))
        .with_context(|| format!("saving the model to {}", a.model.display()))?;
    let plots = match &a.plot {
        Some(p) => deepcat::plot::write_curves(&trained.history, p)?,
        None => Vec::new(),
    };

    if a.json {
        let out = json!({
            "classes": classes.names,
            "positive": classes.positive_name(),
            "train_size": train_set.len(),
            "val_size": val_size,
            "test_size": test_size,
            "features": train_set.x.ncols(),
            "layers": model.network.sizes(),
            "iterations": trained.steps,
            "epochs": match config.length { Length::Epochs(_) => trained.history.records.last().and_then(|r| r.epoch), _ => None },
            "costs": trained.history.costs(),
            "history": trained.history.records,
            "train_accuracy": train_accuracy,
            "val_accuracy": val_accuracy,
            "test_accuracy": test_metrics.as_ref().map(|(m, _)| m.accuracy),
            "test_metrics": test_metrics.as_ref().map(|(m, _)| m),
            "errors": test_metrics.as_ref().map(|(_, e)| e),
            "stopped_early": trained.stopped_early,
            "restored_step": trained.restored.as_ref().map(|r| r.step),
            "exact_path": trained.path,
            "load_seconds": splits.load_seconds,
            "train_seconds": trained.seconds,
            "peak_memory_bytes": peak_memory_bytes(),
            "skipped": splits.skipped,
            "model": a.model,
            "plots": plots,
        });
        println!("{out}");
    } else {
        println!("Train accuracy: {train_accuracy:.4}");
        if let Some(v) = val_accuracy {
            println!("Validation accuracy: {v:.4}");
        }
        if let Some((m, errors)) = &test_metrics {
            println!("Test accuracy: {:.4}", m.accuracy);
            println!("\nTest set ({} images):\n{}", m.size, m.report());
            if !errors.is_empty() {
                println!("Most confidently wrong test images:");
                for e in errors {
                    println!("  {e}");
                }
            }
        }
        if let Some(r) = &trained.restored {
            println!(
                "Early stopping kept the weights of step {} (validation cost {:.4})",
                r.step,
                r.val_cost.unwrap_or(f64::NAN)
            );
        }
        println!(
            "Trained in {:.2} s ({} path, {} steps)",
            trained.seconds, trained.path, trained.steps
        );
        println!("Saved model to {}", a.model.display());
        for p in plots {
            println!("Saved plot to {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
