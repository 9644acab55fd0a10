//! `deepcat bench --cnn [--arch resnet]`: a conv preset (`cnn`, or `resnet`) at 64 px, trained
//! for one epoch on the same photos by deepcat and by a PyTorch rendering of the same network,
//! batch size, optimiser, recipe and augmentation (`bench/cnn_reference.py`), on the same
//! number of threads, in the same run.
//! Both warm up first (a few batches), then one epoch is timed; the best of `--repeats`
//! alternating runs counts for each. Then each classifies the same images with the network it
//! trained (inference mode: deepcat's [`Network::probabilities`], PyTorch's eval-mode forward
//! in batches of 256 under `inference_mode`), decoding excluded from both: the best of three
//! passes.

use super::reference::{last_json, number};
use super::usage;
use anyhow::{Result, bail};
use deepcat::data::{Preprocess, SplitSpec, load_splits};
use deepcat::model::Classes;
use deepcat::nn::spec::parse_body;
use deepcat::nn::{Geometry, Network};
use deepcat::train::{Length, Recipe, train};
use ndarray::ArrayView2;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// What `deepcat bench --cnn` was asked.
pub struct CnnBench {
    /// The photos (class folders).
    pub data: std::path::PathBuf,
    /// Python with PyTorch.
    pub python: std::path::PathBuf,
    /// Alternating runs of each; the best counts.
    pub repeats: usize,
    /// One JSON object instead of a table.
    pub json: bool,
    /// The preset: `cnn` or `resnet` (each trained with its own recipe).
    pub arch: String,
}

/// Image side of the CNN comparison.
const SIZE: u32 = 64;
/// Untimed batches before the timed epoch.
const WARMUP_BATCHES: usize = 5;

/// One deepcat epoch of the preset on `splits`' training set, with the preset's recipe, after
/// a warm-up: images per second in training, then in inference with the trained network.
fn deepcat_epoch(
    arch: &str,
    splits: &deepcat::data::Splits,
    classes: &Classes,
) -> Result<(f64, f64)> {
    let body = parse_body(arch)?;
    let recipe = Recipe::for_body(&body);
    let input = Geometry::image(SIZE as usize);
    let mut warmup = recipe.config(body.clone());
    warmup.length = Length::Iterations(WARMUP_BATCHES);
    train(&warmup, &splits.train, None, classes, input, None, &mut [])?;
    let mut config = recipe.config(body);
    config.length = Length::Epochs(1);
    let trained = train(&config, &splits.train, None, classes, input, None, &mut [])?;
    let images = splits.train.len() as f64;
    Ok((
        images / trained.seconds,
        images / inference_seconds(&trained.network, splits.train.x.view()),
    ))
}

/// The best of three inference passes of `network` over `x` (after an untimed one), seconds.
fn inference_seconds(network: &Network, x: ArrayView2<'_, u8>) -> f64 {
    let pass = || {
        let start = Instant::now();
        std::hint::black_box(network.probabilities(x));
        start.elapsed().as_secs_f64()
    };
    pass();
    (0..3).map(|_| pass()).fold(f64::INFINITY, f64::min)
}

pub fn run(a: &CnnBench, threads: Option<usize>) -> Result<ExitCode> {
    let reference = Path::new("bench/cnn_reference.py");
    if !a.python.exists() || !reference.exists() {
        bail!(
            "{} or {} not found: run scripts/setup-reference.sh --torch from the repository root first (it installs PyTorch in .venv), or pass --python",
            a.python.display(),
            reference.display()
        );
    }
    if !matches!(a.arch.as_str(), "cnn" | "resnet") {
        usage!(
            "bench --cnn --arch {}: the comparison knows the presets cnn and resnet",
            a.arch
        );
    }
    let threads = threads.unwrap_or_else(rayon::current_num_threads);
    // deepcat trains on its 80/20 split's training part; PyTorch gets the same image count.
    let splits = load_splits(&SplitSpec {
        data_dir: a.data.clone(),
        test_dir: None,
        test_split: 0.2,
        val_split: 0.0,
        preprocess: Preprocess {
            size: SIZE,
            ..Preprocess::default()
        },
        seed: deepcat::train::DEFAULT_SEED,
        max_skipped: deepcat::data::DEFAULT_MAX_SKIPPED,
        cache: None,
    })?;
    let classes = Classes::new(splits.classes.clone(), None)?;
    let report = rounds(a, reference, threads, &splits, &classes)?;
    if a.json {
        println!("{report}");
    } else {
        print_table(a, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Alternating epochs of deepcat and PyTorch; the best of each and every round's ratio.
fn rounds(
    a: &CnnBench,
    reference: &Path,
    threads: usize,
    splits: &deepcat::data::Splits,
    classes: &Classes,
) -> Result<Value> {
    let (mut ours, mut theirs) = (0.0f64, 0.0f64);
    let (mut ours_infer, mut theirs_infer) = (0.0f64, 0.0f64);
    let (mut paired, mut paired_infer) = (Vec::new(), Vec::new());
    for round in 0..a.repeats.max(1) {
        let (d, d_infer) = deepcat_epoch(&a.arch, splits, classes)?;
        let mut cmd = Command::new(&a.python);
        cmd.arg(reference)
            .arg("speed")
            .arg(&a.data)
            .args(["--arch", &a.arch])
            .args(["--size", &SIZE.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--epochs", "1"])
            .args(["--warmup-batches", &WARMUP_BATCHES.to_string()])
            .args(["--images", &splits.train.len().to_string()]);
        let (torch, _) = last_json(&mut cmd, "the PyTorch reference")?;
        let t = number(&torch, "images_per_second")?;
        let t_infer = number(&torch, "inference_images_per_second")?;
        eprintln!(
            "bench --cnn: round {}: training: deepcat {d:.0} images/s, PyTorch {t:.0}; inference: deepcat {d_infer:.0}, PyTorch {t_infer:.0}",
            round + 1
        );
        ours = ours.max(d);
        theirs = theirs.max(t);
        ours_infer = ours_infer.max(d_infer);
        theirs_infer = theirs_infer.max(t_infer);
        paired.push(d / t);
        paired_infer.push(d_infer / t_infer);
    }
    // Each round runs the two side by side, so its ratio compares like with like; the median
    // round is the least sensitive to a burst of load on either side.
    Ok(json!({
        "data": a.data,
        "arch": a.arch,
        "size": SIZE,
        "images": splits.train.len(),
        "threads": threads,
        "batch_size": 32,
        "deepcat_images_per_second": ours,
        "pytorch_images_per_second": theirs,
        "ratio": ours / theirs,
        "median_round_ratio": median(&mut paired),
        "round_ratios": paired,
        "target": 1.5,
        "inference": {
            "deepcat_images_per_second": ours_infer,
            "pytorch_images_per_second": theirs_infer,
            "ratio": ours_infer / theirs_infer,
            "median_round_ratio": median(&mut paired_infer),
            "round_ratios": paired_infer,
            "target": 5.0,
        },
    }))
}

/// The middle value (the upper one of an even count), sorting `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn print_table(a: &CnnBench, r: &Value) -> Result<()> {
    let recipe = Recipe::for_body(&parse_body(&a.arch)?);
    println!(
        "deepcat bench --cnn: the {} preset at {SIZE} px, one epoch of {} images from {}, batch 32, its recipe ({}), {} threads\n",
        a.arch,
        r["images"],
        a.data.display(),
        recipe.flags(),
        r["threads"]
    );
    println!("{:<24} {:>14} {:>14}", "", "training", "inference");
    let row = |name: &str, key: &str| -> Result<()> {
        println!(
            "{name:<24} {:>14.0} {:>14.0}",
            number(r, key)?,
            number(&r["inference"], key)?
        );
        Ok(())
    };
    row("PyTorch (CPU), images/s", "pytorch_images_per_second")?;
    row("deepcat, images/s", "deepcat_images_per_second")?;
    println!(
        "{:<24} {:>13.2}× {:>13.2}×",
        "ratio of the bests",
        number(r, "ratio")?,
        number(&r["inference"], "ratio")?
    );
    println!(
        "{:<24} {:>13.2}× {:>13.2}×",
        "median round's ratio",
        number(r, "median_round_ratio")?,
        number(&r["inference"], "median_round_ratio")?
    );
    println!(
        "{:<24} {:>13.1}× {:>13.1}×",
        "target",
        number(r, "target")?,
        number(&r["inference"], "target")?
    );
    Ok(())
}
