//! How good a classifier is: accuracy, confusion matrix, per-class precision / recall / F1
//! (a table like scikit-learn's classification report), the ROC curve and its AUC for two
//! classes, and the most confidently wrong examples.

use crate::model::{Classes, Predictions};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Precision, recall and F1 for one class.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassReport {
    /// The class name.
    pub class: String,
    /// Of the examples predicted as this class, the fraction that are (0 when none predicted).
    pub precision: f64,
    /// Of the examples of this class, the fraction predicted as it (0 when there are none).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Examples of this class.
    pub support: usize,
}

/// An example the model got wrong, with how sure it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mistake {
    /// The image file.
    pub path: PathBuf,
    /// Its true class.
    pub truth: String,
    /// The predicted class.
    pub predicted: String,
    /// The probability the model gave the predicted class.
    pub probability: f32,
}

/// Every metric for one labelled set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Examples evaluated.
    pub size: usize,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Class names, the order of the confusion matrix's rows and columns.
    pub classes: Vec<String>,
    /// `confusion[truth][predicted]`: example counts.
    pub confusion: Vec<Vec<usize>>,
    /// One report per class.
    pub per_class: Vec<ClassReport>,
    /// Unweighted means of precision, recall and F1 over classes.
    pub macro_avg: [f64; 3],
    /// Means weighted by support.
    pub weighted_avg: [f64; 3],
    /// Area under the ROC curve of the positive class's probability (two classes only).
    pub roc_auc: Option<f64>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Computes [`Metrics`] for `predictions` of examples whose true classes are `labels`.
///
/// # Panics
/// If `labels` and the predictions differ in length.
pub fn evaluate(classes: &Classes, labels: &[usize], predictions: &Predictions) -> Metrics {
    assert_eq!(
        labels.len(),
        predictions.classes.len(),
        "one label per prediction"
    );
    let k = classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in labels.iter().zip(&predictions.classes) {
        confusion[t][p] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let per_class: Vec<ClassReport> = (0..k)
        .map(|c| {
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = ratio(confusion[c][c], predicted);
            let recall = ratio(confusion[c][c], support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassReport {
                class: classes.names[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let n = labels.len();
    let mean = |f: &dyn Fn(&ClassReport) -> f64| per_class.iter().map(f).sum::<f64>() / k as f64;
    let weighted = |f: &dyn Fn(&ClassReport) -> f64| {
        per_class
            .iter()
            .map(|r| f(r) * r.support as f64)
            .sum::<f64>()
            / n.max(1) as f64
    };
    let roc_auc = classes.positive.and_then(|pos| {
        let scores: Vec<f32> = predictions.probabilities.column(pos).to_vec();
        let positives: Vec<bool> = labels.iter().map(|&l| l == pos).collect();
        roc_auc(&scores, &positives)
    });
    Metrics {
        size: n,
        accuracy: ratio(correct, n),
        classes: classes.names.clone(),
        confusion,
        macro_avg: [mean(&|r| r.precision), mean(&|r| r.recall), mean(&|r| r.f1)],
        weighted_avg: [
            weighted(&|r| r.precision),
            weighted(&|r| r.recall),
            weighted(&|r| r.f1),
        ],
        per_class,
        roc_auc,
    }
}

/// ROC AUC: the probability that a random positive scores above a random negative (ties count
/// half), by ranking. `None` when either class is absent.
pub fn roc_auc(scores: &[f32], positives: &[bool]) -> Option<f64> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives: Mann–Whitney U.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * order[i..=j].iter().filter(|&&o| positives[o]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// One point of a ROC curve: calling every example scoring at least `threshold` positive
/// gives these rates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RocPoint {
    /// The lowest score called positive (`+∞` for the first point, where none is).
    pub threshold: f32,
    /// False positives over all negatives.
    pub false_positive_rate: f64,
    /// True positives over all positives (recall).
    pub true_positive_rate: f64,
}

/// The ROC curve of `scores` (the positive class's probability) against `positives`, from
/// (0, 0) to (1, 1), one point per distinct score, highest first. Tied scores move both rates
/// at once, a diagonal step, so the curve's trapezoid area is [`roc_auc`] (ties half). `None`
/// when either class is absent.
///
/// # Panics
/// If `scores` and `positives` differ in length.
pub fn roc_curve(scores: &[f32], positives: &[bool]) -> Option<Vec<RocPoint>> {
    assert_eq!(scores.len(), positives.len(), "one label per score");
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let point = |threshold, fp: usize, tp: usize| RocPoint {
        threshold,
        false_positive_rate: fp as f64 / n_neg as f64,
        true_positive_rate: tp as f64 / n_pos as f64,
    };
    let mut curve = vec![point(f32::INFINITY, 0, 0)];
    let (mut fp, mut tp) = (0, 0);
    for (k, &i) in order.iter().enumerate() {
        if positives[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            curve.push(point(scores[i], fp, tp));
        }
    }
    Some(curve)
}

/// The area under `curve` by the trapezoid rule.
pub fn trapezoid_area(curve: &[RocPoint]) -> f64 {
    curve
        .windows(2)
        .map(|w| {
            let width = w[1].false_positive_rate - w[0].false_positive_rate;
            width * (w[0].true_positive_rate + w[1].true_positive_rate) / 2.0
        })
        .sum()
}

/// The `n` wrong predictions with the highest predicted-class probability, most confident
/// first.
pub fn most_confident_errors(
    classes: &Classes,
    paths: &[PathBuf],
    labels: &[usize],
    predictions: &Predictions,
    n: usize,
) -> Vec<Mistake> {
    let mut wrong: Vec<Mistake> = labels
        .iter()
        .zip(&predictions.classes)
        .enumerate()
        .filter(|(_, (t, p))| t != p)
        .map(|(i, (&t, &p))| Mistake {
            path: paths
                .get(i)
                .cloned()
                .unwrap_or_else(|| Path::new("?").to_path_buf()),
            truth: classes.names[t].clone(),
            predicted: classes.names[p].clone(),
            probability: predictions.probabilities[[i, p]],
        })
        .collect();
    wrong.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    wrong.truncate(n);
    wrong
}

impl std::fmt::Display for Mistake {
    /// `path is truth, predicted class (p = 0.987)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {}, predicted {} (p = {:.3})",
            self.path.display(),
            self.truth,
            self.predicted,
            self.probability
        )
    }
}

impl Metrics {
    /// A plain-text report: per-class table (like scikit-learn's), averages, accuracy, ROC AUC
    /// and the confusion matrix.
    pub fn report(&self) -> String {
        let width = self
            .classes
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(12);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>width$} {:>9} {:>9} {:>9} {:>9}",
            "", "precision", "recall", "f1-score", "support"
        );
        for r in &self.per_class {
            let _ = writeln!(
                s,
                "{:>width$} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                r.class, r.precision, r.recall, r.f1, r.support
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:>width$} {:>9} {:>9} {:>9.4} {:>9}",
            "accuracy", "", "", self.accuracy, self.size
        );
        for (name, avg) in [
            ("macro avg", self.macro_avg),
            ("weighted avg", self.weighted_avg),
        ] {
            let _ = writeln!(
                s,
                "{:>width$} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                name, avg[0], avg[1], avg[2], self.size
            );
        }
        if let Some(auc) = self.roc_auc {
            let _ = writeln!(s, "{:>width$} {:>9.4}", "ROC AUC", auc);
        }
        let _ = writeln!(
            s,
            "\nconfusion matrix (rows: true class, columns: predicted)"
        );
        let _ = write!(s, "{:>width$}", "");
        for c in &self.classes {
            let _ = write!(s, " {:>w$}", c, w = c.len().max(6));
        }
        let _ = writeln!(s);
        for (c, row) in self.classes.iter().zip(&self.confusion) {
            let _ = write!(s, "{c:>width$}");
            for (count, name) in row.iter().zip(&self.classes) {
                let _ = write!(s, " {:>w$}", count, w = name.len().max(6));
            }
            let _ = writeln!(s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn classes(n: &[&str]) -> Classes {
        Classes::new(n.iter().map(|s| s.to_string()).collect(), None).unwrap()
    }

    #[test]
    fn confusion_precision_recall_f1_on_known_counts() {
        let cls = classes(&["a", "b", "c"]);
        let labels = [0, 0, 0, 1, 1, 2];
        let preds = Predictions {
            probabilities: ndarray::Array2::from_elem((6, 3), 1.0 / 3.0),
            classes: vec![0, 0, 1, 1, 2, 2],
        };
        let m = evaluate(&cls, &labels, &preds);
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let a = &m.per_class[0];
        assert_eq!((a.precision, a.support), (1.0, 3));
        assert!((a.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((a.f1 - 0.8).abs() < 1e-12);
        let b = &m.per_class[1];
        assert_eq!((b.precision, b.recall, b.f1), (0.5, 0.5, 0.5));
        assert!(m.roc_auc.is_none());
        let text = m.report();
        assert!(
            text.contains("precision")
                && text.contains("weighted avg")
                && text.contains("confusion")
        );
    }

    #[test]
    fn roc_auc_on_known_rankings() {
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        // One of four positive-negative pairs is mis-ordered.
        assert_eq!(
            roc_auc(&[0.1, 0.6, 0.5, 0.9], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn roc_curve_matches_a_hand_computed_example_and_its_area_is_the_auc() {
        // Thresholds 0.8, 0.4, 0.35, 0.1 let in: a positive, a negative, a positive, a
        // negative.
        let scores = [0.1, 0.4, 0.35, 0.8];
        let positives = [false, false, true, true];
        let curve = roc_curve(&scores, &positives).unwrap();
        let rates: Vec<(f64, f64)> = curve
            .iter()
            .map(|p| (p.false_positive_rate, p.true_positive_rate))
            .collect();
        assert_eq!(
            rates,
            [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        let thresholds: Vec<f32> = curve.iter().map(|p| p.threshold).collect();
        assert_eq!(thresholds, [f32::INFINITY, 0.8, 0.4, 0.35, 0.1]);
        assert_eq!(trapezoid_area(&curve), 0.75);
        assert_eq!(roc_auc(&scores, &positives), Some(0.75));
    }

    #[test]
    fn roc_curve_steps_diagonally_over_ties_and_needs_both_classes() {
        let curve = roc_curve(&[0.5, 0.5], &[true, false]).unwrap();
        assert_eq!(curve.len(), 2);
        assert_eq!(trapezoid_area(&curve), 0.5);
        let scores = [0.9, 0.7, 0.7, 0.7, 0.2, 0.6, 0.1, 0.7];
        let positives = [true, true, false, true, false, false, false, true];
        let area = trapezoid_area(&roc_curve(&scores, &positives).unwrap());
        let auc = roc_auc(&scores, &positives).unwrap();
        assert!((area - auc).abs() < 1e-12, "area {area}, AUC {auc}");
        assert!(roc_curve(&[0.1, 0.2], &[true, true]).is_none());
        assert!(roc_curve(&[0.1, 0.2], &[false, false]).is_none());
    }

    #[test]
    fn binary_metrics_use_the_positive_class_and_list_confident_errors() {
        let cls = classes(&["cats", "random_images"]);
        let preds = Predictions {
            probabilities: array![[0.9f32, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]],
            classes: vec![0, 1, 0, 1],
        };
        let labels = [0, 0, 1, 1];
        let m = evaluate(&cls, &labels, &preds);
        assert_eq!(m.roc_auc, Some(0.75));
        let paths: Vec<PathBuf> = (0..4).map(|i| PathBuf::from(format!("{i}.jpg"))).collect();
        let errs = most_confident_errors(&cls, &paths, &labels, &preds, 5);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].path, PathBuf::from("1.jpg"));
        assert_eq!(errs[0].predicted, "random_images");
        assert!((errs[0].probability - 0.7).abs() < 1e-6);
        assert_eq!(
            most_confident_errors(&cls, &paths, &labels, &preds, 1).len(),
            1
        );
    }
}
