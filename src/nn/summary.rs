//! A network's layers as a table, the way Keras's `model.summary()` shows them: each layer's
//! name, its settings, its output shape and its parameter count, then the totals. A block
//! (a residual block) is one row with its totals, its own layers indented beneath it, as Keras
//! shows a nested model with `expand_nested=True`.

use super::{AnyLayer, Geometry, Network};

/// One layer of a [`Summary`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SummaryRow {
    /// Its name in model files (`conv1`, `batchnorm1`, `residual1`, `dense2`, ...).
    pub name: String,
    /// Its token in the architecture text (`conv16`, `bn`, `res64s2`, `dense20`, ...).
    pub layer: String,
    /// The shape of one example's output.
    pub output: Geometry,
    /// Trainable values (weights, biases, batch norm's scale and shift).
    pub trainable: usize,
    /// Saved values not trained by gradients (batch norm's running statistics).
    pub non_trainable: usize,
    /// The layers a block is made of (`conv1`, `shortcut.conv1`, ...); empty for a plain
    /// layer. Their counts are included in the block's.
    pub inner: Vec<SummaryRow>,
}

impl SummaryRow {
    /// The row of `layer`, named `name`, with rows for the layers inside it.
    fn of(name: String, layer: &dyn AnyLayer) -> Self {
        SummaryRow {
            name,
            layer: layer.spec().token(),
            output: layer.output(),
            trainable: layer.params().iter().map(|p| p.value.len()).sum(),
            non_trainable: layer.buffers().iter().map(|(_, b)| b.len()).sum(),
            inner: layer
                .children()
                .into_iter()
                .map(|(n, l)| SummaryRow::of(n, l))
                .collect(),
        }
    }
}

/// Every layer of a network with its output shape and parameter counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// The input shape.
    pub input: Geometry,
    /// The layers, in order; the last is the output head's dense layer.
    pub layers: Vec<SummaryRow>,
    /// The head's non-linearity (`sigmoid` or `softmax`).
    pub head: &'static str,
}

impl Summary {
    /// The summary of `net`.
    pub fn of(net: &Network) -> Self {
        let layers = net
            .layers()
            .iter()
            .zip(net.layer_names())
            .map(|(layer, name)| SummaryRow::of(name, layer.as_ref()))
            .collect();
        Summary {
            input: net.input(),
            layers,
            head: net.head().name(),
        }
    }

    /// Trainable values of every layer.
    pub fn trainable(&self) -> usize {
        self.layers.iter().map(|r| r.trainable).sum()
    }

    /// Saved values that are not trained, of every layer.
    pub fn non_trainable(&self) -> usize {
        self.layers.iter().map(|r| r.non_trainable).sum()
    }
}

/// The rows of a block's layers, indented two spaces per level.
fn nested(
    rows: &mut Vec<[String; 4]>,
    inner: &[SummaryRow],
    depth: usize,
    shape: &dyn Fn(Geometry) -> String,
) {
    for r in inner {
        let indent = "  ".repeat(depth);
        rows.push([
            format!("{indent}{}", r.name),
            format!("{indent}{}", r.layer),
            shape(r.output),
            thousands(r.trainable + r.non_trainable),
        ]);
        nested(rows, &r.inner, depth + 1, shape);
    }
}

/// `12345` as `12,345` (also the report's headline figures).
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shape = |g: Geometry| {
            if g.is_flat() {
                g.channels.to_string()
            } else {
                g.to_string()
            }
        };
        let last = self.layers.len().saturating_sub(1);
        let mut rows = vec![[
            "input".to_string(),
            String::new(),
            shape(self.input),
            "0".to_string(),
        ]];
        for (i, r) in self.layers.iter().enumerate() {
            let kind = if i == last {
                format!("{} ({})", r.layer, self.head)
            } else {
                r.layer.clone()
            };
            rows.push([
                r.name.clone(),
                kind,
                shape(r.output),
                thousands(r.trainable + r.non_trainable),
            ]);
            nested(&mut rows, &r.inner, 1, &shape);
        }
        let header = ["Layer", "Type", "Output shape", "Param #"].map(String::from);
        let width = |k: usize| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[k].chars().count())
                .max()
                .unwrap_or(0)
        };
        let w = [width(0), width(1), width(2), width(3)];
        let line = |f: &mut std::fmt::Formatter<'_>, r: &[String; 4]| {
            writeln!(
                f,
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            )
        };
        let rule = "─".repeat(w.iter().sum::<usize>() + 6);
        line(f, &header)?;
        writeln!(f, "{rule}")?;
        for r in &rows {
            line(f, r)?;
        }
        writeln!(f, "{rule}")?;
        let (t, n) = (self.trainable(), self.non_trainable());
        writeln!(f, "Total params: {}", thousands(t + n))?;
        writeln!(f, "Trainable params: {}", thousands(t))?;
        write!(f, "Non-trainable params: {}", thousands(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::spec::parse_body;
    use crate::nn::{Architecture, Init, Mt19937};

    #[test]
    fn counts_match_keras_for_a_small_cnn() {
        let arch = Architecture {
            input: Geometry::image(16),
            body: parse_body("conv8 bn relu pool gap dense4 relu").unwrap(),
            outputs: 3,
        };
        let net = Network::new(&arch, Init::He, &mut Mt19937::new(1)).unwrap();
        let s = net.summary();
        // conv: 8·3·3·3 + 8; batch norm: 2·8 trained + 2·8 running statistics.
        assert_eq!(s.layers[0].trainable, 224);
        assert_eq!((s.layers[1].trainable, s.layers[1].non_trainable), (16, 16));
        assert_eq!(s.layers[3].output, Geometry::new(8, 8, 8));
        assert_eq!(s.layers[5].trainable, 8 * 4 + 4);
        assert_eq!(s.layers[7].trainable, 4 * 3 + 3);
        assert_eq!(s.trainable(), 224 + 16 + 36 + 15);
        let text = s.to_string();
        assert!(text.contains("conv1") && text.contains("16×16×8"), "{text}");
        assert!(
            text.contains("dense2") && text.contains("(softmax)"),
            "{text}"
        );
        assert!(text.contains("Non-trainable params: 16"), "{text}");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
