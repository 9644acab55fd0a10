//! Trains the `resnet` preset through the library's whole training flow, as `deepcat train
//! --arch resnet` does: the preset's recipe, the split, training, scores, the saved model and
//! its report, in one call to `deepcat::flow::run`.
//!
//! `cargo run --release --example train_resnet -- [DATA_DIR] [EPOCHS] [SIZE]` (default: the
//! bundled `data` folder, 2 epochs, 32 px). For full-size photos,
//! `cargo run --release --example train_resnet -- ../shared/data/cats-vs-dogs 80 64` is the
//! README's cats-vs-dogs run.

use deepcat::data::{Preprocess, SplitSpec};
use deepcat::flow::{self, Job, Outputs};
use deepcat::nn::spec::parse_body;
use deepcat::train::{Length, Recipe};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().unwrap_or_else(|| "data".into());
    let epochs: usize = args.next().map_or(Ok(2), |e| e.parse())?;
    let size: u32 = args.next().map_or(Ok(32), |s| s.parse())?;

    // The preset's layers, and the recipe that goes with them (AdamW, one cycle, label
    // smoothing, flips and crops, test-time flips, bilinear resizing).
    let body = parse_body("resnet")?;
    let recipe = Recipe::for_body(&body);
    let mut config = recipe.config(body);
    config.length = Length::Epochs(epochs);

    let out = std::env::temp_dir();
    let job = Job {
        split: SplitSpec {
            data_dir: data_dir.into(),
            test_dir: None,
            test_split: 0.2,
            val_split: 0.0,
            preprocess: Preprocess {
                size,
                filter: recipe.resize,
                ..Preprocess::default()
            },
            seed: 1,
            max_skipped: deepcat::data::DEFAULT_MAX_SKIPPED,
            cache: None,
        },
        config,
        recipe: recipe.name.into(),
        positive: None,
        resume: None,
        memory_limit: None,
        outputs: Outputs {
            model: out.join("deepcat-example-resnet.safetensors"),
            plot: None,
            report: Some(out.join("deepcat-example-resnet.html")),
            checkpoint_every: None,
        },
        errors: 3,
    };
    let outcome = flow::run(job, &mut [], &mut ())?;
    println!("{}", outcome.model.network.summary());
    if let Some(scores) = &outcome.scores {
        let test = scores.test.as_ref().map_or(f64::NAN, |(m, _)| m.accuracy);
        println!(
            "after {epochs} epochs ({:.1} s): train accuracy {:.3}, test accuracy {test:.3} (with test-time flips)",
            outcome.trained.seconds, scores.train_accuracy
        );
    }
    println!(
        "saved {} and {}",
        out.join("deepcat-example-resnet.safetensors").display(),
        out.join("deepcat-example-resnet.html").display()
    );
    Ok(())
}
