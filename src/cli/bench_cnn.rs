//! `deepcat bench --cnn`: the `cnn` preset at 64 px, trained for one epoch on the same photos
//! by deepcat and by a PyTorch rendering of the same network, batch size, optimiser and
//! augmentation (`bench/cnn_reference.py`), on the same number of threads, in the same run.
//! Both warm up first (a few batches), then one epoch is timed; the best of `--repeats`
//! alternating runs counts for each.

use super::reference::{last_json, number};
use anyhow::{Result, bail};
use deepcat::data::{Preprocess, SplitSpec, load_splits};
use deepcat::model::Classes;
use deepcat::nn::Geometry;
use deepcat::nn::spec::parse_body;
use deepcat::train::{Length, Recipe, train};
use serde_json::json;
use std::process::{Command, ExitCode};

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
}

/// Image side of the CNN comparison.
const SIZE: u32 = 64;
/// Untimed batches before the timed epoch.
const WARMUP_BATCHES: usize = 5;

/// One deepcat epoch of the `cnn` preset on `splits`' training set, after a warm-up:
/// images per second.
fn deepcat_epoch(splits: &deepcat::data::Splits, classes: &Classes) -> Result<f64> {
    let body = parse_body("cnn")?;
    let input = Geometry::image(SIZE as usize);
    let mut warmup = Recipe::conv().config(body.clone());
    warmup.length = Length::Iterations(WARMUP_BATCHES);
    train(&warmup, &splits.train, None, classes, input, None, &mut [])?;
    let mut config = Recipe::conv().config(body);
    config.length = Length::Epochs(1);
    let trained = train(&config, &splits.train, None, classes, input, None, &mut [])?;
    Ok(splits.train.len() as f64 / trained.seconds)
}

pub fn run(a: &CnnBench, threads: Option<usize>) -> Result<ExitCode> {
    let python = &a.python;
    let reference = std::path::Path::new("bench/cnn_reference.py");
    if !python.exists() || !reference.exists() {
        bail!(
            "{} or {} not found: run scripts/setup-reference.sh --torch from the repository root first (it installs PyTorch in .venv), or pass --python",
            python.display(),
            reference.display()
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
    let (mut ours, mut theirs) = (0.0f64, 0.0f64);
    let mut paired = Vec::new();
    for round in 0..a.repeats.max(1) {
        let d = deepcat_epoch(&splits, &classes)?;
        let (torch, _) = last_json(
            Command::new(python)
                .arg(reference)
                .arg("speed")
                .arg(&a.data)
                .args(["--size", &SIZE.to_string()])
                .args(["--threads", &threads.to_string()])
                .args(["--epochs", "1"])
                .args(["--warmup-batches", &WARMUP_BATCHES.to_string()])
                .args(["--images", &splits.train.len().to_string()]),
            "the PyTorch reference",
        )?;
        let t = number(&torch, "images_per_second")?;
        eprintln!(
            "bench --cnn: round {}: deepcat {d:.0} images/s, PyTorch {t:.0} images/s",
            round + 1
        );
        ours = ours.max(d);
        theirs = theirs.max(t);
        paired.push(d / t);
    }
    // Each round runs the two side by side, so its ratio compares like with like; the median
    // round is the least sensitive to a burst of load on either side.
    paired.sort_by(f64::total_cmp);
    let median = paired[paired.len() / 2];
    let report = json!({
        "data": a.data,
        "size": SIZE,
        "images": splits.train.len(),
        "threads": threads,
        "batch_size": 32,
        "deepcat_images_per_second": ours,
        "pytorch_images_per_second": theirs,
        "ratio": ours / theirs,
        "median_round_ratio": median,
        "round_ratios": paired,
        "target": 1.0,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "deepcat bench --cnn: the cnn preset at {SIZE} px, one epoch of {} images from {}, batch 32, Adam, flip+crop, {threads} threads\n",
            splits.train.len(),
            a.data.display()
        );
        println!("{:<24} {:>14}", "", "images/s");
        println!("{:<24} {:>14.0}", "PyTorch (CPU)", theirs);
        println!("{:<24} {:>14.0}", "deepcat", ours);
        println!(
            "{:<24} {:>13.2}× (target ≥ 1.0×)",
            "ratio of the bests",
            ours / theirs
        );
        println!("{:<24} {:>13.2}×", "median round's ratio", median);
    }
    Ok(ExitCode::SUCCESS)
}
