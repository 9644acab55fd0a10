//! The `confusion` and `per-class` sections: how the model did on the evaluated images.

use super::html::{escape, fraction, table};
use crate::metrics::Metrics;
use std::fmt::Write;

/// The heat-map colour (the curves' training blue), as `r, g, b`.
const HEAT_RGB: &str = "31, 119, 180";
/// The faintest tint a non-empty cell gets, so that a count of 1 still shows.
const MIN_HEAT: f64 = 0.08;
/// Above this opacity of the blue, a cell's count is written in white.
const DARK_HEAT: f64 = 0.55;

/// The confusion matrix as a table, rows the true class and columns the predicted one; each
/// cell's blue deepens with its count (relative to the largest).
pub fn confusion(m: &Metrics) -> String {
    let largest = m
        .confusion
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = String::from(
        "<p class=\"axis\">Rows: true class; columns: predicted class.</p>\n\
         <table class=\"confusion\">\n<thead><tr><th scope=\"col\">true \\ predicted</th>",
    );
    for c in &m.classes {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(c));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (name, row) in m.classes.iter().zip(&m.confusion) {
        let _ = write!(out, "<tr><th scope=\"row\">{}</th>", escape(name));
        for &count in row {
            out.push_str(&cell(count, largest));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>");
    out
}

/// One count of the confusion matrix, tinted by its share of `largest`.
fn cell(count: usize, largest: usize) -> String {
    let heat = if count == 0 {
        0.0
    } else {
        MIN_HEAT + (1.0 - MIN_HEAT) * count as f64 / largest as f64
    };
    let ink = if heat > DARK_HEAT { "#fff" } else { "#222" };
    format!(
        "<td class=\"cell\" style=\"background: rgba({HEAT_RGB}, {heat:.3}); color: {ink}\">{count}</td>"
    )
}

/// Precision, recall, F1 and support per class (scikit-learn's classification report), then
/// the averages and the accuracy.
pub fn per_class(m: &Metrics) -> String {
    let header = ["class", "precision", "recall", "F1", "support"].map(String::from);
    let mut rows: Vec<Vec<String>> = m
        .per_class
        .iter()
        .map(|r| {
            vec![
                escape(&r.class),
                fraction(r.precision),
                fraction(r.recall),
                fraction(r.f1),
                r.support.to_string(),
            ]
        })
        .collect();
    for (name, avg) in [
        ("macro average", m.macro_avg),
        ("weighted average", m.weighted_avg),
    ] {
        let mut row = vec![format!("<em>{name}</em>")];
        row.extend(avg.map(fraction));
        row.push(m.size.to_string());
        rows.push(row);
    }
    let accuracy = format!(
        "<p>Accuracy <strong>{}</strong> on {} images.</p>",
        fraction(m.accuracy),
        m.size
    );
    format!("{accuracy}\n{}", table("per-class", &header, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::evaluate;
    use crate::model::{Classes, Predictions};

    fn metrics() -> Metrics {
        let classes = Classes::new(vec!["<b>&".into(), "dogs".into()], Some("dogs")).unwrap();
        let predictions = Predictions {
            probabilities: ndarray::array![[0.9f32, 0.1], [0.2, 0.8], [0.4, 0.6]],
            classes: vec![0, 1, 1],
        };
        evaluate(&classes, &[0, 1, 0], &predictions)
    }

    #[test]
    fn the_confusion_table_names_classes_escaped_and_holds_every_count() {
        let html = confusion(&metrics());
        assert!(
            html.contains("<th scope=\"row\">&lt;b&gt;&amp;</th>"),
            "{html}"
        );
        assert!(!html.contains("<b>&"));
        let counts: Vec<usize> = html
            .split("class=\"cell\"")
            .skip(1)
            .map(|c| {
                let text = &c[c.find('>').unwrap() + 1..c.find("</td>").unwrap()];
                text.parse().unwrap()
            })
            .collect();
        assert_eq!(counts, [1, 1, 0, 1]);
    }

    #[test]
    fn empty_cells_are_white_and_the_largest_darkest() {
        assert!(cell(0, 5).contains("rgba(31, 119, 180, 0.000)"));
        assert!(cell(5, 5).contains("1.000") && cell(5, 5).contains("#fff"));
        assert!(cell(1, 100).contains("#222"));
    }

    #[test]
    fn per_class_lists_each_class_and_the_averages() {
        let html = per_class(&metrics());
        assert!(
            html.contains("<th scope=\"row\">&lt;b&gt;&amp;</th><td>1.0000</td><td>0.5000</td>")
        );
        assert!(html.contains("macro average") && html.contains("weighted average"));
        assert!(html.contains("<strong>0.6667</strong> on 3 images"));
    }
}
