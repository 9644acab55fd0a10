//! Trains a small convolutional network through the library, not the command line:
//! load a folder of class sub-folders, describe the layers, train with the conv recipe,
//! measure, save.
//!
//! `cargo run --release --example train_cnn -- [DATA_DIR] [EPOCHS]` (default: the bundled
//! `data` folder, 3 epochs).

use deepcat::data::{Preprocess, SplitSpec, load_splits};
use deepcat::model::{Classes, Model};
use deepcat::nn::spec::{BatchNormSpec, GapSpec, MaxPoolSpec, ReluSpec};
use deepcat::nn::{Geometry, LayerSpec};
use deepcat::train::{Length, Recipe, train};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().unwrap_or_else(|| "data".into());
    let epochs: usize = args.next().map_or(Ok(3), |e| e.parse())?;

    // 32×32 RGB images, an 80/20 split, seeded.
    let preprocess = Preprocess {
        size: 32,
        ..Preprocess::default()
    };
    let splits = load_splits(&SplitSpec {
        data_dir: data_dir.into(),
        test_dir: None,
        test_split: 0.2,
        val_split: 0.0,
        preprocess,
        seed: 1,
        max_skipped: 0.1,
        // Decode every time; `Some(Cache::at(dir))` keeps the decoded images for next time.
        cache: None,
    })?;
    let classes = Classes::new(splits.classes.clone(), None)?;

    // Two conv blocks written out as layers (the same as the text "block8 block16 gap"), then
    // the output head, which training adds.
    let conv = |channels| LayerSpec::conv(channels, 3, 1);
    let bn = || LayerSpec::BatchNorm(BatchNormSpec {});
    let relu = || LayerSpec::Relu(ReluSpec {});
    let pool = || LayerSpec::MaxPool(MaxPoolSpec {});
    let body = vec![
        conv(8),
        bn(),
        relu(),
        pool(),
        conv(16),
        bn(),
        relu(),
        pool(),
        LayerSpec::Gap(GapSpec {}),
    ];
    let mut config = Recipe::conv().config(body);
    config.length = Length::Epochs(epochs);

    let input = Geometry::image(preprocess.size as usize);
    let trained = train(&config, &splits.train, None, &classes, input, None, &mut [])?;
    let model = Model {
        network: trained.network,
        classes,
        preprocess,
        tta: false,
    };
    println!("{}", model.network.summary());
    let test_accuracy = match &splits.test {
        Some(t) => model.accuracy(t)?,
        None => 0.0,
    };
    println!(
        "after {epochs} epochs ({:.1} s): train accuracy {:.3}, test accuracy {test_accuracy:.3}",
        trained.seconds,
        model.accuracy(&splits.train)?,
    );
    let path = std::env::temp_dir().join("deepcat-example-cnn.safetensors");
    deepcat::model_file::save(&path, &model, None, None)?;
    println!("saved {}", path.display());
    Ok(())
}
