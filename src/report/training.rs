//! What a model file remembers of its training run, beside the configuration: the history,
//! the test accuracy, the image counts, the skipped files and the timings. `deepcat train`
//! writes these keys into the model's `training` JSON ([`summary_json`]); the report (and
//! anything else that reads model files, such as the web server) reads them back
//! ([`TrainingSummary::from_json`]). The key names live here, once. With the input geometry
//! recorded beside the configuration's layers, the layer summary can be rebuilt from the JSON
//! alone.

use crate::data::{Examples, SkippedFile, Splits};
use crate::nn::spec::{Architecture, LayerSpec};
use crate::nn::{Geometry, Init, Mt19937, Network, Summary};
use crate::train::{History, Record};
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// The records of the run (`History::records`).
pub const HISTORY: &str = "history";
/// The test set's accuracy, or null without a test set.
pub const TEST_ACCURACY: &str = "test_accuracy";
/// `{"train": {class: count}, "val": {...}, "test": {...}}`: usable images per split.
pub const COUNTS: &str = "counts";
/// `{"count": n, "files": [{"path", "reason"}]}`: the files that could not be used.
pub const SKIPPED: &str = "skipped";
/// `{"load": s, "train": s, "total": s}`: wall-clock seconds.
pub const SECONDS: &str = "seconds";
/// `{"height", "width", "channels"}`: how each training image is read by the network.
pub const INPUT: &str = "input";
/// The configuration (`TrainConfig`), whose `body` lists the layers before the head.
pub const CONFIG: &str = "config";

/// The three parts of a split, in the order they are shown.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Wall-clock seconds of a training run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Scanning and decoding the images.
    pub load: f64,
    /// Training the network.
    pub train: f64,
    /// The whole run, up to saving the model.
    pub total: f64,
}

/// The keys this module defines, for `deepcat train` to add to the model's `training` JSON.
pub fn summary_json<S: Examples>(
    splits: &Splits<S>,
    history: &History,
    test_accuracy: Option<f64>,
    seconds: Timings,
) -> Map<String, Value> {
    let parts: [Option<&dyn Examples>; 3] = [
        Some(&splits.train),
        splits.val.as_ref().map(|v| v as &dyn Examples),
        splits.test.as_ref().map(|t| t as &dyn Examples),
    ];
    let counts: Map<String, Value> = SPLITS
        .iter()
        .zip(parts)
        .map(|(name, part)| (name.to_string(), class_counts(&splits.classes, part)))
        .collect();
    let mut out = Map::new();
    out.insert(HISTORY.into(), json!(history.records));
    out.insert(TEST_ACCURACY.into(), json!(test_accuracy));
    out.insert(COUNTS.into(), Value::Object(counts));
    out.insert(
        SKIPPED.into(),
        json!({ "count": splits.skipped.len(), "files": splits.skipped }),
    );
    out.insert(
        SECONDS.into(),
        json!({ "load": seconds.load, "train": seconds.train, "total": seconds.total }),
    );
    if let Some(input) = image_geometry(splits.train.images().ncols()) {
        out.insert(INPUT.into(), json!(input));
    }
    out
}

/// The square RGB image of `features` values per row, if there is one.
fn image_geometry(features: usize) -> Option<Geometry> {
    let side = (features / 3).isqrt();
    (side > 0 && side * side * 3 == features).then(|| Geometry::image(side))
}

/// `{class: count}` for one part of the split (zeros when the part is absent).
fn class_counts(classes: &[String], part: Option<&dyn Examples>) -> Value {
    let counts = part.map_or_else(
        || vec![0; classes.len()],
        |d| d.counts_per_class(classes.len()),
    );
    let map: Map<String, Value> = classes
        .iter()
        .zip(counts)
        .map(|(c, n)| (c.clone(), json!(n)))
        .collect();
    Value::Object(map)
}

/// A model's training JSON, read back. Each part is `None` when the file does not record it
/// (a model saved by an older deepcat, or after an interruption).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingSummary {
    /// The recorded history.
    pub history: Option<History>,
    /// The test set's accuracy.
    pub test_accuracy: Option<f64>,
    /// Per split (in [`SPLITS`] order, absent ones left out), the count of each class, in
    /// the order of the class names given to [`TrainingSummary::from_json`].
    pub counts: Option<Vec<(String, Vec<usize>)>>,
    /// How many files were skipped, and which (with why).
    pub skipped: Option<(usize, Vec<SkippedFile>)>,
    /// Wall-clock seconds: load, train, total.
    pub seconds: Option<Timings>,
    /// The network's layers as `deepcat summary` shows them, rebuilt from the recorded input
    /// geometry and the configuration's layers.
    pub layers: Option<Summary>,
    /// Everything else in the JSON: the configuration and how the run went.
    pub settings: Map<String, Value>,
}

impl TrainingSummary {
    /// Reads `training` (a model file's `training` JSON), counting images in the order of
    /// `classes`. Keys of the wrong shape are read as absent rather than refused: a report
    /// should show what it can of an odd file.
    pub fn from_json(training: &Value, classes: &[String]) -> Self {
        let mut settings = training.as_object().cloned().unwrap_or_default();
        let mut take = |key: &str| settings.remove(key);
        let history = take(HISTORY).and_then(|h| history_from_json(&h));
        let test_accuracy = take(TEST_ACCURACY).and_then(|v| v.as_f64());
        let counts = take(COUNTS).map(|c| counts_from_json(&c, classes));
        let skipped = take(SKIPPED).and_then(|s| skipped_from_json(&s));
        let input = take(INPUT).and_then(|i| serde_json::from_value::<Geometry>(i).ok());
        let seconds = take(SECONDS).and_then(|s| {
            let get = |k: &str| s.get(k).and_then(Value::as_f64);
            Some(Timings {
                load: get("load")?,
                train: get("train")?,
                total: get("total")?,
            })
        });
        let layers = input.and_then(|input| layer_summary(input, &settings, classes.len()));
        TrainingSummary {
            history,
            test_accuracy,
            counts,
            skipped,
            seconds,
            layers,
            settings,
        }
    }
}

/// The summary of the network the configuration describes on `input`, for `classes`
/// classes (the weights are drawn and dropped: only the shapes and counts are kept).
fn layer_summary(
    input: Geometry,
    settings: &Map<String, Value>,
    classes: usize,
) -> Option<Summary> {
    let body = settings.get(CONFIG)?.get("body")?.clone();
    let body: Vec<LayerSpec> = serde_json::from_value(body).ok()?;
    let arch = Architecture {
        input,
        body,
        outputs: if classes == 2 { 1 } else { classes },
    };
    let network = Network::new(&arch, Init::He, &mut Mt19937::new(0)).ok()?;
    Some(network.summary())
}

/// A history from its JSON records. A cost that was not finite is saved as `null` (JSON has
/// no NaN) and read back as NaN.
fn history_from_json(value: &Value) -> Option<History> {
    let number = |r: &Value, key: &str| r.get(key).and_then(Value::as_f64);
    let index = |r: &Value, key: &str| {
        r.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
    };
    let records = value
        .as_array()?
        .iter()
        .map(|r| {
            Some(Record {
                step: index(r, "step")?,
                epoch: index(r, "epoch"),
                cost: number(r, "cost").unwrap_or(f64::NAN),
                train_accuracy: number(r, "train_accuracy").unwrap_or(f64::NAN),
                val_cost: number(r, "val_cost"),
                val_accuracy: number(r, "val_accuracy"),
                learning_rate: number(r, "learning_rate").unwrap_or(f64::NAN) as f32,
            })
        })
        .collect::<Option<Vec<Record>>>()?;
    Some(History { records })
}

fn counts_from_json(value: &Value, classes: &[String]) -> Vec<(String, Vec<usize>)> {
    SPLITS
        .iter()
        .filter_map(|&split| {
            let part = value.get(split)?;
            let counts = classes
                .iter()
                .map(|c| part.get(c).and_then(Value::as_u64).unwrap_or(0) as usize)
                .collect();
            Some((split.to_string(), counts))
        })
        .collect()
}

fn skipped_from_json(value: &Value) -> Option<(usize, Vec<SkippedFile>)> {
    let files: Vec<SkippedFile> = value
        .get("files")?
        .as_array()?
        .iter()
        .filter_map(|f| {
            Some(SkippedFile {
                path: PathBuf::from(f.get("path")?.as_str()?),
                reason: f.get("reason")?.as_str()?.to_string(),
            })
        })
        .collect();
    let count = value
        .get("count")
        .and_then(Value::as_u64)
        .map_or(files.len(), |c| c as usize);
    Some((count, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use ndarray::Array2;

    fn dataset(labels: Vec<usize>) -> Dataset {
        Dataset {
            x: Array2::zeros((labels.len(), 1)),
            paths: labels
                .iter()
                .map(|l| PathBuf::from(format!("{l}.png")))
                .collect(),
            labels,
        }
    }

    #[test]
    fn the_summary_reads_back_as_written() {
        let classes = vec!["cats".to_string(), "dogs".to_string()];
        let splits = Splits {
            classes: classes.clone(),
            train: dataset(vec![0, 0, 1]),
            val: None,
            test: Some(dataset(vec![1])),
            skipped: vec![SkippedFile {
                path: "cats/<bad>.jpg".into(),
                reason: "empty file".into(),
            }],
            load_seconds: 0.5,
            cache: Default::default(),
        };
        let history = History {
            records: vec![Record {
                step: 0,
                epoch: None,
                cost: f64::NAN,
                train_accuracy: 0.5,
                val_cost: None,
                val_accuracy: None,
                learning_rate: 0.0075,
            }],
        };
        let timings = Timings {
            load: 0.5,
            train: 2.0,
            total: 3.0,
        };
        let mut json = summary_json(&splits, &history, Some(0.75), timings);
        json.insert("steps".into(), json!(10));
        let text = Value::Object(json).to_string();
        let read = TrainingSummary::from_json(&serde_json::from_str(&text).unwrap(), &classes);
        let records = read.history.unwrap().records;
        assert!(records[0].cost.is_nan() && records[0].train_accuracy == 0.5);
        assert_eq!(read.test_accuracy, Some(0.75));
        let counts = read.counts.unwrap();
        assert_eq!(counts[0], ("train".to_string(), vec![2, 1]));
        assert_eq!(counts[1], ("val".to_string(), vec![0, 0]));
        assert_eq!(counts[2], ("test".to_string(), vec![0, 1]));
        assert_eq!(read.skipped.unwrap(), (1, splits.skipped.clone()));
        assert_eq!(read.seconds, Some(timings));
        assert_eq!(read.settings.keys().collect::<Vec<_>>(), ["steps"]);
    }

    #[test]
    fn an_old_model_without_the_keys_reads_as_absent() {
        let read = TrainingSummary::from_json(&json!({"steps": 3, "history": "odd"}), &[]);
        assert!(read.history.is_none() && read.counts.is_none() && read.seconds.is_none());
        assert!(read.skipped.is_none() && read.test_accuracy.is_none());
        assert_eq!(read.settings.len(), 1);
    }
}
