//! `deepcat train`: flags → a checked [`Job`], then the library's [`flow::run`], then print.
//!
//! [`job_from_args`] turns the flags (and the recipe of the architecture they name) into a
//! checked job before any image is read; [`Plan`] prints what is about to happen once the data
//! is loaded; [`run`] adds progress and Ctrl-C handling and prints what the run returns.

use super::tta::TtaName;
use super::{
    INTERRUPTED, UsageError, check_max_skipped, check_writable, peak_memory_bytes, usage,
    warn_skipped,
};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use deepcat::data::augment::Augment;
use deepcat::data::{Preprocess, ResizeFilter, SplitSpec};
use deepcat::flow::{self, Job, Loaded, Outcome, Outputs, Scores, Watch};
use deepcat::model::Classes;
use deepcat::model_file::{self, ModelFile};
use deepcat::nn::spec::{dense_body, describe, parse_body};
use deepcat::nn::{Architecture, Geometry, Init, LayerSpec, Network};
use deepcat::optim::{OptimizerConfig, Schedule};
use deepcat::parallel::Group;
use deepcat::train::callbacks::{Progress, StopFlag};
use deepcat::train::{Callback, DOCUMENT_HIDDEN, ExactPath, Length, Recipe, TrainConfig};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OptimizerName {
    Gd,
    Momentum,
    Adam,
    Adamw,
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
    let sizes = text
        .split(',')
        .map(|s| {
            s.trim().parse::<usize>().map_err(|_| {
                anyhow::Error::new(UsageError(format!(
                    "--layers: {s:?} is not a layer size; give sizes like 20,7,5"
                )))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    if sizes.contains(&0) {
        usage!("--layers: every hidden layer needs at least one unit, got {text:?}");
    }
    Ok(sizes)
}

/// Flags of `deepcat train`. Defaults are the document's; an architecture with conv layers
/// brings the conv recipe instead (see `--arch`). Every flag given overrides the recipe.
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
    /// Resize filter [default: nearest, as the document's loader; bilinear (antialiased) for
    /// residual networks].
    #[arg(long, value_enum)]
    resize: Option<ResizeName>,
    /// The layers before the output head: a preset (cnn, resnet) or layers such as
    /// "conv16 bn relu pool gap" or "conv32 bn relu res32 res64s2 gap" (see the README's
    /// grammar). Conv layers bring the conv recipe (adam, lr 0.001, batch 32, epochs,
    /// flip+crop, cosine, he); residual blocks the resnet recipe (adamw, lr 0.002,
    /// weight decay 5e-4, onecycle, label smoothing 0.1, test-time flips, bilinear).
    #[arg(long, value_name = "SPEC")]
    arch: Option<String>,
    /// Hidden dense layer sizes, comma-separated ("none" for no hidden layer) [default:
    /// 20,7,5; none after --arch]. After --arch they come between it and the head.
    #[arg(long)]
    layers: Option<String>,
    /// Print the network's layers, output shapes and parameter counts before training.
    #[arg(long)]
    summary: bool,
    /// Learning rate [default: 0.0075, or the recipe's].
    #[arg(long)]
    lr: Option<f32>,
    /// Optimiser steps (the document's iterations) [default: 2500, or the recipe's].
    #[arg(long, conflicts_with = "epochs")]
    iterations: Option<usize>,
    /// Passes over the training set, instead of --iterations.
    #[arg(long)]
    epochs: Option<usize>,
    /// Examples per step [default: the whole training set as the document, or the recipe's].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Optimiser [default: gd, or the recipe's].
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerName>,
    /// Momentum's β, or Adam's β1.
    #[arg(long, default_value_t = 0.9)]
    beta1: f32,
    /// Adam's β2.
    #[arg(long, default_value_t = 0.999)]
    beta2: f32,
    /// Adam's ε.
    #[arg(long, default_value_t = 1e-8)]
    epsilon: f32,
    /// AdamW's decoupled weight decay λ (weights only; biases and batch norm are not decayed)
    /// [default: 0.01, or the recipe's].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Label smoothing ε: targets become y·(1−ε) + ε/classes [default: 0, or the recipe's].
    #[arg(long, value_name = "F")]
    label_smoothing: Option<f32>,
    /// Ramp the learning rate up linearly over the first N iterations (or epochs) [default: 0].
    #[arg(long, value_name = "N")]
    warmup: Option<f64>,
    /// Test-time augmentation recorded in the model: flip averages each image's
    /// probabilities with its mirror's [default: none, or the recipe's].
    #[arg(long, value_enum)]
    tta: Option<TtaName>,
    /// Under mpirun: batch norm's statistics over the whole shared batch (as PyTorch's
    /// SyncBatchNorm), not over each process's part of it.
    #[arg(long)]
    sync_bn: bool,
    /// Learning-rate schedule: constant, step:EVERY:FACTOR (EVERY in iterations, or epochs
    /// with --epochs), cosine[:MIN_FACTOR] or onecycle[:PCT] [default: constant, or the
    /// recipe's].
    #[arg(long)]
    schedule: Option<String>,
    /// L2 penalty λ: the cost gains λ/2·Σ‖W‖² over all weights.
    #[arg(long, default_value_t = 0.0)]
    l2: f32,
    /// Inverted-dropout probability after each hidden dense layer of --layers (training only).
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Weight initialisation [default: document, or the recipe's].
    #[arg(long, value_enum)]
    init: Option<InitName>,
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
    /// Augment training images on the fly: any of flip,crop,jitter,cutout, or none [default: none,
    /// or the recipe's].
    #[arg(long)]
    augment: Option<String>,
    /// Stop with an error when more than this fraction of the files cannot be used.
    #[arg(long, value_name = "F", default_value_t = deepcat::data::DEFAULT_MAX_SKIPPED)]
    max_skipped: f64,
    #[command(flatten)]
    cache: super::cache::CacheArgs,
    /// Hold at most this much image data in memory (e.g. 64MiB, 2GiB) [default: half the
    /// memory available]; a larger set is streamed from the decoded cache, a batch at a time.
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    memory_limit: Option<u64>,
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
    /// Where to train: cpu, or cuda (an NVIDIA GPU; needs a build with `--features cuda`).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    device: deepcat::device::Device,
    /// Let the GPU's matrix products use TF32 tensor cores (faster, about 3 fewer digits).
    #[arg(long)]
    tf32: bool,
    /// Where to save the model.
    #[arg(long, default_value = "model.safetensors")]
    model: PathBuf,
    /// Write cost/accuracy curves to PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
    /// Write an HTML report (curves, confusion matrix, per-class scores, ROC, mistakes, data,
    /// timings) to PATH, one self-contained file.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
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

/// The layers before the head: `--arch`, then `--layers` as dense layers (with `--dropout`);
/// with neither, the resumed model's own layers or the document's.
fn build_body(a: &TrainArgs, resumed: Option<&ModelFile>) -> Result<Vec<LayerSpec>> {
    if !(0.0..1.0).contains(&a.dropout) {
        usage!("--dropout must be in [0, 1), got {}", a.dropout);
    }
    let hidden = a.layers.as_deref().map(parse_layers).transpose()?;
    let (mut body, dense) = match (hidden, &a.arch, resumed) {
        (hidden, Some(spec), _) => (parse_body(spec)?, hidden.unwrap_or_default()),
        (Some(h), None, _) => (Vec::new(), h),
        (None, None, Some(r)) => {
            let net = &r.model.network;
            if net.is_dense_stack() {
                let sizes = net.sizes();
                (Vec::new(), sizes[1..sizes.len() - 1].to_vec())
            } else {
                (net.architecture().body, Vec::new())
            }
        }
        (None, None, None) => (Vec::new(), DOCUMENT_HIDDEN.to_vec()),
    };
    // --dropout belongs to the dense layers of --layers; elsewhere it is written in --arch.
    if a.dropout > 0.0 && dense.is_empty() {
        usage!(
            "--dropout applies to hidden dense layers (--layers), and there are none; in --arch, write dropout0.3 where you want it"
        );
    }
    body.extend(dense_body(&dense, a.dropout));
    Ok(body)
}

/// The configuration: the architecture's recipe, overridden by every flag given.
fn build_config(a: &TrainArgs, body: Vec<LayerSpec>) -> Result<(TrainConfig, Recipe)> {
    let recipe = Recipe::for_body(&body);
    let mut config = recipe.config(body);
    match (a.iterations, a.epochs) {
        (_, Some(e)) => config.length = Length::Epochs(e),
        (Some(i), None) => config.length = Length::Iterations(i),
        (None, None) => {}
    }
    let by_epochs = matches!(config.length, Length::Epochs(_));
    config.optimizer = optimizer_config(a, config.optimizer)?;
    if let Some(e) = a.label_smoothing {
        config.label_smoothing = e;
    }
    if let Some(w) = a.warmup {
        config.warmup = w;
    }
    if let Some(t) = a.tta {
        config.tta = t.flips();
    }
    if let Some(lr) = a.lr {
        config.learning_rate = lr;
    }
    if let Some(b) = a.batch_size {
        config.batch_size = Some(b);
    }
    if let Some(s) = &a.schedule {
        config.schedule = Schedule::parse(s)?;
    }
    if let Some(list) = &a.augment {
        config.augment = Augment::parse(list)?;
    }
    if let Some(init) = a.init {
        config.init = match init {
            InitName::Document => Init::Document,
            InitName::He => Init::He,
            InitName::Xavier => Init::Xavier,
        };
    }
    config.l2 = a.l2;
    config.seed = a.seed;
    config.patience = a.patience;
    config.exact_path = match a.exact_path {
        PathName::Auto => ExactPath::Auto,
        PathName::Gram => ExactPath::Gram,
        PathName::Direct => ExactPath::Direct,
    };
    config.record_every = a.record_every;
    config.sync_bn = a.sync_bn;
    config.log_every = a.log_every.unwrap_or(if by_epochs { 1 } else { 50 });
    (config.device, config.tf32) = (a.device, a.tf32);
    config.check()?;
    if !config.device.is_cpu() {
        // Opens the GPU now, so a missing one is said before any image is read.
        let device = config.device.describe()?;
        if !a.json && !a.quiet {
            println!("Device: {device}");
        }
    }
    if a.patience.is_some() && a.val_split == 0.0 {
        usage!("--patience needs a validation set: add --val-split (e.g. 0.1)");
    }
    if a.checkpoint_every == Some(0) {
        usage!("--checkpoint-every must be at least 1");
    }
    Ok((config, recipe))
}

/// The optimiser: `--optimizer` with its settings, or the recipe's with the settings given.
fn optimizer_config(a: &TrainArgs, recipe: OptimizerConfig) -> Result<OptimizerConfig> {
    let recipe_decay = match recipe {
        OptimizerConfig::AdamW { weight_decay, .. } => Some(weight_decay),
        _ => None,
    };
    let name = match (a.optimizer, recipe) {
        (Some(o), _) => o,
        (None, OptimizerConfig::Gd) => OptimizerName::Gd,
        (None, OptimizerConfig::Momentum { .. }) => OptimizerName::Momentum,
        (None, OptimizerConfig::Adam { .. }) => OptimizerName::Adam,
        (None, OptimizerConfig::AdamW { .. }) => OptimizerName::Adamw,
    };
    if a.weight_decay.is_some() && !matches!(name, OptimizerName::Adamw) {
        usage!("--weight-decay is AdamW's; add --optimizer adamw (or use --l2 for an L2 penalty)");
    }
    Ok(match name {
        OptimizerName::Gd => OptimizerConfig::Gd,
        OptimizerName::Momentum => OptimizerConfig::Momentum { beta: a.beta1 },
        OptimizerName::Adam => OptimizerConfig::Adam {
            beta1: a.beta1,
            beta2: a.beta2,
            epsilon: a.epsilon,
        },
        OptimizerName::Adamw => OptimizerConfig::AdamW {
            beta1: a.beta1,
            beta2: a.beta2,
            epsilon: a.epsilon,
            weight_decay: a.weight_decay.or(recipe_decay).unwrap_or(ADAMW_DECAY),
        },
    })
}

/// PyTorch's default AdamW weight decay.
const ADAMW_DECAY: f32 = 0.01;

/// How photos become rows: the flags, or exactly the resumed model's preprocessing.
fn build_preprocess(
    a: &TrainArgs,
    recipe: &Recipe,
    resumed: Option<&ModelFile>,
) -> Result<Preprocess> {
    let mut preprocess = Preprocess {
        size: a.size.unwrap_or(128),
        filter: match a.resize {
            None => recipe.resize,
            Some(ResizeName::Nearest) => ResizeFilter::Nearest,
            Some(ResizeName::Bilinear) => ResizeFilter::Bilinear,
            Some(ResizeName::Lanczos) => ResizeFilter::Lanczos,
        },
        exif_orientation: true,
    };
    if let Some(r) = resumed {
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
    Ok(preprocess)
}

/// Checks every flag, the output paths and the resumed model, and builds the network once
/// on its own to check the architecture against the image size: everything that can fail
/// fails here, before any image is read. Returns the job and the recipe it started from.
///
/// `writes`: whether this process writes the outputs (under mpirun, only the first does, so
/// only it checks that it can).
fn job_from_args(a: &TrainArgs, writes: bool) -> Result<(Job, Recipe)> {
    let test_split = test_fraction(a.test_split)?;
    let val_split = fraction(a.val_split, "--val-split")?;
    check_max_skipped(a.max_skipped)?;
    let resume = match &a.resume {
        Some(p) => Some(model_file::load(p).with_context(|| format!("--resume {}", p.display()))?),
        None => None,
    };
    let body = build_body(a, resume.as_ref())?;
    let (config, recipe) = build_config(a, body)?;
    if writes {
        check_writable(&a.model, "--model")?;
        if let Some(p) = &a.plot {
            check_writable(p, "--plot")?;
        }
        if let Some(p) = &a.report {
            check_writable(p, "--report")?;
        }
    }
    let preprocess = build_preprocess(a, &recipe, resume.as_ref())?;
    // The layers must fit the images; the class count only changes the head.
    Architecture {
        input: Geometry::image(preprocess.size as usize),
        body: config.body.clone(),
        outputs: 1,
    }
    .inputs()?;
    let split = SplitSpec {
        data_dir: a.data_dir.clone(),
        test_dir: a.test_dir.clone(),
        test_split,
        val_split,
        preprocess,
        seed: a.seed,
        max_skipped: a.max_skipped,
        cache: a.cache.cache(),
    };
    let job = Job {
        split,
        config,
        recipe: recipe.name.to_string(),
        positive: a.positive.clone(),
        resume,
        memory_limit: a.memory_limit,
        outputs: Outputs {
            model: a.model.clone(),
            plot: a.plot.clone(),
            report: a.report.clone(),
            checkpoint_every: a.checkpoint_every,
        },
        errors: a.errors,
    };
    Ok((job, recipe))
}

fn length_text(length: Length) -> String {
    match length {
        Length::Iterations(n) => format!("{n} iterations"),
        Length::Epochs(e) => format!("{e} epochs"),
    }
}

/// Prints the plan once the data is loaded: warnings, then (unless `--json`) the data, the
/// network and the recipe in words.
struct Plan<'a> {
    args: &'a TrainArgs,
    config: TrainConfig,
    recipe: Recipe,
    preprocess: Preprocess,
}

impl Watch for Plan<'_> {
    fn loaded(&mut self, loaded: &Loaded) -> deepcat::Result<()> {
        warn_skipped(loaded.skipped);
        super::cache::warn(loaded.cache);
        let train_size = loaded.sizes.train;
        if let Some(b) = self.config.batch_size.filter(|&b| b > train_size) {
            eprintln!(
                "warning: --batch-size {b} is more than the {train_size} training images; each step uses all of them"
            );
        }
        if !self.args.json {
            self.print(loaded)?;
        }
        Ok(())
    }
}

impl Plan<'_> {
    fn print(&self, loaded: &Loaded) -> deepcat::Result<()> {
        let classes = loaded.classes;
        let per_class: Vec<String> = classes
            .names
            .iter()
            .zip(&loaded.train_counts)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        println!(
            "Loaded {} training, {} validation and {} test images in {:.2} s ({} files skipped); training classes: {}",
            loaded.sizes.train,
            loaded.sizes.val,
            loaded.sizes.test,
            loaded.load_seconds,
            loaded.skipped.len(),
            per_class.join(", ")
        );
        if loaded.streamed {
            println!(
                "The images do not fit in the memory budget: streaming them from the decoded cache"
            );
        }
        let config = &self.config;
        println!(
            "Network {} ({}), optimiser {}, learning rate {}, {}",
            self.network_text(classes),
            classes.head().name(),
            config.optimizer.name(),
            config.learning_rate,
            length_text(config.length)
        );
        if self.recipe.name != "document" {
            println!(
                "Recipe for {} networks: {} (flags given override it)",
                self.recipe.name,
                self.recipe.flags()
            );
        }
        if self.args.summary {
            println!("{}", self.network(classes)?.summary());
        }
        Ok(())
    }

    /// `12288-20-7-5-1` for dense stacks, the layers in words for anything else.
    fn network_text(&self, classes: &Classes) -> String {
        let body = &self.config.body;
        if body.iter().any(LayerSpec::is_beyond_dense) {
            return format!(
                "\"{}\" on {}px images",
                describe(body),
                self.preprocess.size
            );
        }
        let sizes: Vec<String> = std::iter::once(self.preprocess.features())
            .chain(body.iter().filter_map(|l| match l {
                LayerSpec::Dense(d) => Some(d.units),
                _ => None,
            }))
            .chain(std::iter::once(classes.outputs()))
            .map(|s| s.to_string())
            .collect();
        sizes.join("-")
    }

    /// The network about to be trained, for `--summary`.
    fn network(&self, classes: &Classes) -> deepcat::Result<Network> {
        let arch = Architecture {
            input: Geometry::image(self.preprocess.size as usize),
            body: self.config.body.clone(),
            outputs: classes.outputs(),
        };
        Network::new(
            &arch,
            self.config.init,
            &mut deepcat::nn::Mt19937::new(self.config.seed),
        )
    }
}

/// Ctrl-C (or SIGTERM) from now on finishes the current step and stops; a second one quits at
/// once. Until now the default applies: nothing has been written yet.
fn stop_on_ctrl_c() -> Result<StopFlag> {
    let stop = StopFlag::new();
    let raised = stop.clone();
    ctrlc::set_handler(move || {
        if raised.raise() {
            std::process::exit(i32::from(INTERRUPTED));
        }
        eprintln!("\nInterrupted: stopping after this step (press Ctrl-C again to quit now)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

pub fn run(a: Box<TrainArgs>, group: &Group) -> Result<ExitCode> {
    // Under mpirun, the first process prints and writes for all.
    let root = group.is_root();
    let (mut job, recipe) = job_from_args(&a, root)?;
    job.config.group = group.clone();
    let mut plan = Plan {
        args: &a,
        config: job.config.clone(),
        recipe,
        preprocess: job.split.preprocess,
    };
    let mut progress = (!a.quiet && root).then(|| {
        if a.json {
            Progress::lines(Box::new(std::io::stderr()))
        } else {
            Progress::auto(a.log_every.is_some())
        }
    });
    let mut stop = stop_on_ctrl_c()?;
    let mut callbacks: Vec<&mut dyn Callback> = vec![&mut stop];
    if let Some(p) = progress.as_mut() {
        callbacks.push(p);
    }
    let outcome = if root {
        flow::run(job, &mut callbacks, &mut plan)?
    } else {
        flow::run(job, &mut callbacks, &mut ())?
    };
    if !root {
        return Ok(match outcome.scores {
            Some(_) => ExitCode::SUCCESS,
            None => ExitCode::from(INTERRUPTED),
        });
    }
    let Some(scores) = &outcome.scores else {
        return interrupted(&a, &plan.config, &outcome);
    };
    if a.json {
        print_json(&a, &plan, &outcome, scores);
    } else {
        print_report(&a, &outcome, scores, plan.config.group.size());
    }
    Ok(ExitCode::SUCCESS)
}

/// After Ctrl-C: says what was kept.
fn interrupted(a: &TrainArgs, config: &TrainConfig, outcome: &Outcome) -> Result<ExitCode> {
    let planned = length_text(config.length);
    let steps = outcome.trained.steps;
    if outcome.saved {
        eprintln!(
            "Interrupted after {steps} steps of {planned}; saved the weights reached to {} (continue with --resume {})",
            a.model.display(),
            a.model.display()
        );
    } else {
        eprintln!(
            "Interrupted after {steps} steps of {planned}; no model saved (--checkpoint-every N keeps progress)"
        );
    }
    Ok(ExitCode::from(INTERRUPTED))
}

fn print_json(a: &TrainArgs, plan: &Plan, outcome: &Outcome, scores: &Scores) {
    let (model, trained) = (&outcome.model, &outcome.trained);
    let test = scores.test.as_ref();
    let out = json!({
        "classes": model.classes.names,
        "positive": model.classes.positive_name(),
        "train_size": outcome.sizes.train,
        "val_size": outcome.sizes.val,
        "test_size": outcome.sizes.test,
        "features": plan.preprocess.features(),
        "streamed": outcome.streamed,
        "layers": model.network.sizes(),
        "architecture": describe(&model.network.specs()),
        "recipe": plan.recipe.name,
        "parameters": model.network.summary().trainable(),
        "iterations": trained.steps,
        "epochs": match plan.config.length { Length::Epochs(_) => trained.history.records.last().and_then(|r| r.epoch), _ => None },
        "costs": trained.history.costs(),
        "history": trained.history.records,
        "train_accuracy": scores.train_accuracy,
        "val_accuracy": scores.val_accuracy,
        "test_accuracy": test.map(|(m, _)| m.accuracy),
        "tta": model.tta,
        "test_metrics": test.map(|(m, _)| m),
        "errors": test.map(|(_, e)| e),
        "stopped_early": trained.stopped_early,
        "restored_step": trained.restored.as_ref().map(|r| r.step),
        "exact_path": trained.path,
        "load_seconds": outcome.load_seconds,
        "train_seconds": trained.seconds,
        "processes": plan.config.group.size(),
        "allreduce_seconds": trained.communication_seconds,
        "peak_memory_bytes": peak_memory_bytes(),
        "skipped": outcome.skipped,
        "test_files": outcome.test_files,
        "model": a.model,
        "plots": outcome.plots,
    });
    println!("{out}");
}

fn print_report(a: &TrainArgs, outcome: &Outcome, scores: &Scores, processes: usize) {
    let trained = &outcome.trained;
    println!("Train accuracy: {:.4}", scores.train_accuracy);
    if let Some(v) = scores.val_accuracy {
        println!("Validation accuracy: {v:.4}");
    }
    if let Some((m, errors)) = &scores.test {
        let with = if outcome.model.tta {
            " (with test-time flips)"
        } else {
            ""
        };
        println!("Test accuracy: {:.4}{with}", m.accuracy);
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
    let shared = match processes {
        1 => String::new(),
        n => format!(
            ", {n} processes, {:.2} s in their sums",
            trained.communication_seconds
        ),
    };
    println!(
        "Trained in {:.2} s ({} path, {} steps{shared})",
        trained.seconds, trained.path, trained.steps
    );
    println!("Saved model to {}", a.model.display());
    for p in &outcome.plots {
        println!("Saved plot to {}", p.display());
    }
    if let Some(p) = &a.report {
        println!("Saved report to {}", p.display());
    }
}
