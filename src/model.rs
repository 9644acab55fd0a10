//! A trained classifier: the network plus everything needed to use it on new photos (class
//! names, which class the sigmoid means, how images are preprocessed).

use crate::data::{Examples, Preprocess};
use crate::device::Forward;
use crate::loss::Head;
use crate::nn::{Network, Rows};
use crate::parallel::Group;
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// Class names and how the network's outputs map onto them.
///
/// With two classes the network has one sigmoid output, the probability of the `positive`
/// class (the document's "probability of a cat"). With more, one softmax output per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes {
    /// Class names, sorted; a label is an index here.
    pub names: Vec<String>,
    /// With two classes, the index of the class the sigmoid output stands for.
    pub positive: Option<usize>,
}

impl Classes {
    /// Classes from sorted folder names. With two classes the positive one is `requested`, or a
    /// class named `cat` or `cats` when there is one, else the second.
    ///
    /// # Errors
    /// [`Error::Config`] if `requested` is not a class, or is given with more than two classes.
    pub fn new(names: Vec<String>, requested: Option<&str>) -> Result<Self> {
        if names.len() < 2 {
            return Err(Error::Data(format!(
                "a classifier needs at least two classes, got {names:?}"
            )));
        }
        if names.len() > 2 {
            if let Some(r) = requested {
                return Err(Error::Config(format!(
                    "--positive {r:?} only applies to two classes; these {} classes get a softmax output",
                    names.len()
                )));
            }
            return Ok(Classes {
                names,
                positive: None,
            });
        }
        let positive = match requested {
            Some(r) => names.iter().position(|n| n == r).ok_or_else(|| {
                Error::Config(format!(
                    "--positive {r:?} is not one of the classes ({})",
                    names.join(", ")
                ))
            })?,
            None => names
                .iter()
                .position(|n| n.eq_ignore_ascii_case("cat") || n.eq_ignore_ascii_case("cats"))
                .unwrap_or(1),
        };
        Ok(Classes {
            names,
            positive: Some(positive),
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: there are at least two classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Network output units: 1 (sigmoid) for two classes, else one per class.
    pub fn outputs(&self) -> usize {
        if self.positive.is_some() {
            1
        } else {
            self.names.len()
        }
    }

    /// The output head that goes with [`outputs`](Classes::outputs).
    pub fn head(&self) -> Head {
        if self.positive.is_some() {
            Head::Sigmoid
        } else {
            Head::Softmax
        }
    }

    /// Network targets for class labels: `(batch, outputs)`; 1.0 for the positive class with
    /// the sigmoid head, one-hot rows with softmax.
    pub fn targets(&self, labels: &[usize]) -> Array2<f32> {
        match self.positive {
            Some(pos) => Array2::from_shape_fn((labels.len(), 1), |(i, _)| {
                f32::from(u8::from(labels[i] == pos))
            }),
            None => Array2::from_shape_fn((labels.len(), self.names.len()), |(i, k)| {
                f32::from(u8::from(labels[i] == k))
            }),
        }
    }

    /// Network probabilities `(batch, outputs)` → class probabilities `(batch, classes)`.
    pub fn class_probabilities(&self, p: ArrayView2<'_, f32>) -> Array2<f32> {
        match self.positive {
            Some(pos) => Array2::from_shape_fn((p.nrows(), 2), |(i, k)| {
                if k == pos { p[[i, 0]] } else { 1.0 - p[[i, 0]] }
            }),
            None => p.to_owned(),
        }
    }

    /// Predicted class index per row of network probabilities `(batch, outputs)`: the positive
    /// class when its probability is above 0.5 (the document's threshold), else the arg-max.
    pub fn decide(&self, p: ArrayView2<'_, f32>) -> Vec<usize> {
        let decisions = self.head().decide(p);
        match self.positive {
            Some(pos) => decisions
                .into_iter()
                .map(|d| if d == 1 { pos } else { 1 - pos })
                .collect(),
            None => decisions,
        }
    }

    /// The positive class's name, if there is one.
    pub fn positive_name(&self) -> Option<&str> {
        self.positive.map(|p| self.names[p].as_str())
    }
}

/// A trained network with its classes and preprocessing: what a model file holds.
#[derive(Debug, Clone)]
pub struct Model {
    /// The layers and weights.
    pub network: Network,
    /// Class names and the output mapping.
    pub classes: Classes,
    /// How photos become input rows.
    pub preprocess: Preprocess,
    /// Test-time flips: each prediction averages the probabilities of the image and of its
    /// left-right mirror (`--tta flip`), recorded in the model so every command does the same.
    pub tta: bool,
}

/// Predictions for a batch of rows.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// `(batch, classes)`: probability of each class.
    pub probabilities: Array2<f32>,
    /// Predicted class index per row.
    pub classes: Vec<usize>,
}

impl Predictions {
    /// No predictions, for `classes` classes.
    pub fn empty(classes: usize) -> Self {
        Predictions {
            probabilities: Array2::zeros((0, classes)),
            classes: Vec::new(),
        }
    }

    /// Appends `more` (predictions for the rows after these).
    ///
    /// # Panics
    /// If the two have different numbers of classes.
    pub fn append(&mut self, more: Predictions) {
        assert_eq!(
            self.probabilities.ncols(),
            more.probabilities.ncols(),
            "predictions for different class counts"
        );
        for row in more.probabilities.rows() {
            self.probabilities
                .push_row(row)
                .unwrap_or_else(|_| unreachable!("the widths were checked"));
        }
        self.classes.extend(more.classes);
    }
}

impl Predictions {
    /// Every process's predictions, in rank order, on every process (the rows each predicted
    /// of a set they shared, back in the set's order): one gather of the decisions and
    /// probabilities as bytes.
    pub fn gather(self, group: &Group) -> Predictions {
        let classes = self.probabilities.ncols();
        let mut bytes = Vec::with_capacity(self.classes.len() * 4 * (classes + 1));
        for (row, &class) in self.probabilities.rows().into_iter().zip(&self.classes) {
            bytes.extend((class as u32).to_le_bytes());
            row.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
        }
        let all = group.gather(&bytes).concat();
        let words: Vec<[u8; 4]> = all
            .chunks_exact(4)
            .map(|w| [w[0], w[1], w[2], w[3]])
            .collect();
        let records: Vec<&[[u8; 4]]> = words.chunks_exact(classes + 1).collect();
        let probabilities = Array2::from_shape_fn((records.len(), classes), |(i, c)| {
            f32::from_le_bytes(records[i][c + 1])
        });
        Predictions {
            probabilities,
            classes: records
                .iter()
                .map(|r| u32::from_le_bytes(r[0]) as usize)
                .collect(),
        }
    }

    /// Row `i`'s `top` most likely classes as `(class index, probability)`, most likely first.
    ///
    /// # Panics
    /// If `i` is not a row.
    pub fn ranked(&self, i: usize, top: usize) -> Vec<(usize, f32)> {
        let mut ranked: Vec<(usize, f32)> = self
            .probabilities
            .row(i)
            .iter()
            .copied()
            .enumerate()
            .collect();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
        ranked.truncate(top);
        ranked
    }

    /// Row `i` as the JSON object `deepcat predict --json` prints and `deepcat serve` answers:
    /// `path` (or null), `class`, its `probability`, every class's `probabilities` and the
    /// `top` most likely classes. `names` are the model's class names.
    ///
    /// # Panics
    /// If `i` is not a row or `names` does not have one name per class.
    pub fn to_json(
        &self,
        i: usize,
        names: &[String],
        top: usize,
        path: Option<&str>,
    ) -> serde_json::Value {
        let probs = self.probabilities.row(i);
        assert_eq!(names.len(), probs.len(), "one name per class");
        let class = self.classes[i];
        let all: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .zip(probs.iter())
            .map(|(n, p)| (n.clone(), serde_json::json!(p)))
            .collect();
        let top: Vec<serde_json::Value> = self
            .ranked(i, top)
            .iter()
            .map(|(c, p)| serde_json::json!({"class": names[*c], "probability": p}))
            .collect();
        serde_json::json!({
            "path": path,
            "class": names[class],
            "probability": probs[class],
            "probabilities": all,
            "top": top,
        })
    }
}

impl Model {
    /// Class probabilities and decisions for `x (batch, features)`, values or image bytes.
    /// Memory stays bounded on
    /// large sets: the network runs in passes of a bounded size ([`Network::logits`]).
    ///
    /// # Panics
    /// If `x` does not have the model's feature count.
    pub fn predict<'x>(&self, x: impl Into<Rows<'x>>) -> Predictions {
        let cpu = |x: Rows<'_>| Ok::<_, std::convert::Infallible>(self.network.probabilities(x));
        match self.predict_by(x.into(), cpu) {
            Ok(p) => p,
            Err(never) => match never {},
        }
    }

    /// [`predict`](Self::predict) with the network's inference pass run by `forward` (a
    /// copy of the network on a GPU, see [`crate::device::forward_on`]); by the network
    /// itself when `None`, exactly as [`predict`](Self::predict).
    ///
    /// # Errors
    /// When the device fails.
    ///
    /// # Panics
    /// If `x` does not have the model's feature count.
    pub fn predict_on<'x>(
        &self,
        x: impl Into<Rows<'x>>,
        forward: Option<&dyn Forward>,
    ) -> Result<Predictions> {
        let Some(forward) = forward else {
            return Ok(self.predict(x));
        };
        let head = self.network.head();
        self.predict_by(x.into(), |x| {
            Ok(head.probabilities(forward.logits(x)?.view()))
        })
    }

    /// Predictions from network probabilities computed by `probabilities` (on the image and,
    /// with test-time flips, on its mirror).
    fn predict_by<E>(
        &self,
        x: Rows<'_>,
        probabilities: impl Fn(Rows<'_>) -> std::result::Result<Array2<f32>, E>,
    ) -> std::result::Result<Predictions, E> {
        assert_eq!(
            x.ncols(),
            self.network.input_units(),
            "model expects {} features",
            self.network.input_units()
        );
        let mut p = probabilities(x)?;
        if self.tta {
            let g = self.network.input();
            use crate::data::augment::mirrored;
            let q = match x {
                Rows::Bytes(b) => {
                    let m = mirrored(b, g.height, g.width, g.channels);
                    probabilities((&m).into())?
                }
                Rows::Values(v) => {
                    let m = mirrored(v, g.height, g.width, g.channels);
                    probabilities((&m).into())?
                }
            };
            p = (p + q) * 0.5;
        }
        Ok(Predictions {
            probabilities: self.classes.class_probabilities(p.view()),
            classes: self.classes.decide(p.view()),
        })
    }

    /// Predictions for every example of `data`: at once in memory, block by block for
    /// images streamed from disk (the same predictions: each row's are its own).
    ///
    /// # Errors
    /// When streamed images cannot be read.
    ///
    /// # Panics
    /// If the rows do not have the model's feature count.
    pub fn predict_all(&self, data: &dyn Examples) -> Result<Predictions> {
        if let Some(x) = data.images().in_memory() {
            return Ok(self.predict(x));
        }
        let mut all = Predictions::empty(self.classes.len());
        data.images()
            .for_each_block(|_, rows| {
                all.append(self.predict(rows));
                Ok::<(), std::io::Error>(())
            })
            .map_err(|e| Error::io("cannot read images from the decoded cache", e))?;
        Ok(all)
    }

    /// Fraction of `data` classified correctly (the document's accuracy).
    ///
    /// # Errors
    /// As [`predict_all`](Self::predict_all).
    pub fn accuracy(&self, data: &dyn Examples) -> Result<f64> {
        Ok(accuracy(&self.predict_all(data)?.classes, data.labels()))
    }
}

/// Fraction of positions where `predicted` equals `truth` (0 for empty input).
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let correct = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    correct as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn positive_class_defaults_to_cats_then_to_the_second_class() {
        assert_eq!(
            Classes::new(names(&["cats", "random_images"]), None)
                .unwrap()
                .positive,
            Some(0)
        );
        assert_eq!(
            Classes::new(names(&["cat", "non-cat"]), None)
                .unwrap()
                .positive,
            Some(0)
        );
        assert_eq!(
            Classes::new(names(&["bad", "good"]), None)
                .unwrap()
                .positive,
            Some(1)
        );
        assert_eq!(
            Classes::new(names(&["bad", "good"]), Some("bad"))
                .unwrap()
                .positive,
            Some(0)
        );
        assert!(Classes::new(names(&["bad", "good"]), Some("ugly")).is_err());
        assert!(Classes::new(names(&["a", "b", "c"]), Some("a")).is_err());
        assert_eq!(
            Classes::new(names(&["a", "b", "c"]), None)
                .unwrap()
                .outputs(),
            3
        );
    }

    #[test]
    fn binary_outputs_map_to_class_indices_both_ways_round() {
        let c = Classes::new(names(&["cats", "random_images"]), None).unwrap();
        assert_eq!(c.targets(&[0, 1, 0]), array![[1.0], [0.0], [1.0]]);
        let p = array![[0.9f32], [0.2]];
        assert_eq!(c.decide(p.view()), vec![0, 1]);
        let cp = c.class_probabilities(p.view());
        assert!((cp[[0, 0]] - 0.9).abs() < 1e-6 && (cp[[1, 1]] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn accuracy_counts_matches() {
        assert_eq!(accuracy(&[1, 0, 1, 1], &[1, 1, 1, 0]), 0.5);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }
}
