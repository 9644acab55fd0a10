//! Output non-linearities fused with their cross-entropy costs.
//!
//! Both costs are computed from the logits `z` (the last dense layer's output), never from
//! probabilities, so they stay finite when the probabilities round to 0 or 1. Their gradients
//! with respect to `z` collapse to `(p − y) / m`: the document's
//! `dA = −(Y/A − (1−Y)/(1−A))` followed by `dZ = dA·σ'(Z)` is the same maths but divides by
//! zero at saturation; [`document_sigmoid_dz`] keeps it, for tests only.
//!
//! Shapes: logits, targets and probabilities are `(batch, outputs)`; `outputs` is 1 for the
//! sigmoid head (the target is 1 for the positive class) and the number of classes for softmax
//! (one-hot targets).

use ndarray::{Array2, ArrayView2, Axis, Zip};

/// `σ(z) = 1 / (1 + e^{−z})`, evaluated so that no intermediate overflows: for `z < 0` it uses
/// `e^{z} / (1 + e^{z})`.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Binary cross-entropy of one example from its logit:
/// `−[y·ln σ(z) + (1−y)·ln(1−σ(z))] = max(z, 0) − z·y + ln(1 + e^{−|z|})`.
/// The right-hand form never takes the log of 0 and never overflows.
pub fn binary_cross_entropy_with_logit(z: f32, y: f32) -> f64 {
    let z = f64::from(z);
    let y = f64::from(y);
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

/// The document's cost on probabilities, `−mean[y·ln a + (1−y)·ln(1−a)]`, with `a` clamped to
/// `[ε, 1−ε]` so that a saturated probability gives a large finite cost instead of infinity.
/// Training uses [`Head::cost`], which is exact; this is for callers that only have
/// probabilities.
pub fn binary_cross_entropy(a: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> f64 {
    const EPS: f64 = 1e-12;
    let m = a.len().max(1) as f64;
    let sum: f64 = Zip::from(&a).and(&y).fold(0.0, |acc, &a, &y| {
        let a = f64::from(a).clamp(EPS, 1.0 - EPS);
        let y = f64::from(y);
        acc - (y * a.ln() + (1.0 - y) * (1.0 - a).ln())
    });
    sum / m
}

/// The softmax of each row, shifted by the row maximum so no exponential overflows.
pub fn softmax(z: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut p = z.to_owned();
    for mut row in p.rows_mut() {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum: f32 = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    p
}

/// The document's sigmoid backward, `dZ = dA · s(1−s)` with `dA = −(Y/A − (1−Y)/(1−A))`:
/// kept as a test oracle. It yields NaN or ±∞ when a probability reaches 0 or 1.
pub fn document_sigmoid_dz(z: f32, y: f32) -> f32 {
    let a = 1.0 / (1.0 + (-z).exp());
    let da = -(y / a - (1.0 - y) / (1.0 - a));
    da * a * (1.0 - a)
}

/// Label smoothing: `y·(1 − ε) + ε/K` for `targets (batch, outputs)`, with `K` the number of
/// classes (2 for the one-column sigmoid head, where the target is P(positive)). The fused
/// gradient `A − Y` stays exact for such soft targets.
pub fn smoothed(targets: &mut Array2<f32>, epsilon: f32) {
    let classes = targets.ncols().max(2) as f32;
    targets.mapv_inplace(|y| y * (1.0 - epsilon) + epsilon / classes);
}

/// The output non-linearity and its cross-entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// One output unit: `p = σ(z)` is the probability of the positive class; binary
    /// cross-entropy. The document's output layer.
    Sigmoid,
    /// One unit per class: `p = softmax(z)`; categorical cross-entropy.
    Softmax,
}

impl Head {
    /// The name stored in model files ("sigmoid", "softmax").
    pub fn name(self) -> &'static str {
        match self {
            Head::Sigmoid => "sigmoid",
            Head::Softmax => "softmax",
        }
    }

    /// Probabilities from logits, `(batch, outputs)` → `(batch, outputs)`.
    pub fn probabilities(self, z: ArrayView2<'_, f32>) -> Array2<f32> {
        match self {
            Head::Sigmoid => z.mapv(sigmoid),
            Head::Softmax => softmax(z),
        }
    }

    /// Mean cross-entropy over the batch, from logits and targets (both `(batch, outputs)`),
    /// accumulated in f64.
    pub fn cost(self, z: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> f64 {
        let m = z.nrows().max(1) as f64;
        match self {
            Head::Sigmoid => {
                Zip::from(&z).and(&y).fold(0.0, |acc, &z, &y| {
                    acc + binary_cross_entropy_with_logit(z, y)
                }) / m
            }
            Head::Softmax => {
                // −Σ y·log softmax(z) = Σ y · (logsumexp(z) − z) per row.
                let mut total = 0.0f64;
                for (zr, yr) in z.rows().into_iter().zip(y.rows()) {
                    let max = zr.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let lse = f64::from(max)
                        + zr.iter()
                            .map(|&v| f64::from(v - max).exp())
                            .sum::<f64>()
                            .ln();
                    total += zr
                        .iter()
                        .zip(yr)
                        .map(|(&z, &y)| f64::from(y) * (lse - f64::from(z)))
                        .sum::<f64>();
                }
                total / m
            }
        }
    }

    /// `∂cost/∂z = (p − y) / batch`, `(batch, outputs)`: the fused gradient of the output
    /// non-linearity and its cross-entropy. The `1/batch` of the mean lives here, so the dense
    /// layers' gradients need no further scaling.
    pub fn cost_gradient(self, z: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Array2<f32> {
        let inv_m = 1.0 / z.nrows().max(1) as f32;
        let mut p = self.probabilities(z);
        Zip::from(&mut p)
            .and(&y)
            .for_each(|p, &y| *p = (*p - y) * inv_m);
        p
    }

    /// The predicted class per row: `p > 0.5` for sigmoid (1 = positive, as the document's
    /// `predict`), the arg-max for softmax. Input: probabilities `(batch, outputs)`.
    pub fn decide(self, p: ArrayView2<'_, f32>) -> Vec<usize> {
        match self {
            Head::Sigmoid => p.column(0).iter().map(|&v| usize::from(v > 0.5)).collect(),
            Head::Softmax => p
                .axis_iter(Axis(0))
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                            if v > best.1 { (i, v) } else { best }
                        })
                        .0
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    #[test]
    fn binary_cost_matches_the_document_formula_on_known_values() {
        // a = σ(z); cost = −mean[y ln a + (1−y) ln(1−a)].
        let z = array![[0.0f32], [2.0], [-1.0], [0.5]];
        let y = array![[1.0f32], [1.0], [0.0], [0.0]];
        let a = z.mapv(sigmoid);
        let expected = binary_cross_entropy(a.view(), y.view());
        let got = Head::Sigmoid.cost(z.view(), y.view());
        assert_abs_diff_eq!(got, expected, epsilon = 1e-6);
        // Hand value: ln 2 at z = 0 is the document's starting cost of about 0.69.
        let half = Head::Sigmoid.cost(array![[0.0f32]].view(), array![[1.0f32]].view());
        assert_abs_diff_eq!(half, std::f64::consts::LN_2, epsilon = 1e-12);
    }

    #[test]
    fn costs_stay_finite_when_probabilities_saturate() {
        let z = array![[200.0f32], [-200.0], [100.0]];
        let y = array![[0.0f32], [1.0], [1.0]];
        let c = Head::Sigmoid.cost(z.view(), y.view());
        assert!(c.is_finite());
        assert_abs_diff_eq!(c, 400.0 / 3.0, epsilon = 1e-6);
        // The probabilities really are 0 and 1 in f32, where the document's formula breaks.
        let a = z.mapv(sigmoid);
        assert_eq!(a[[0, 0]], 1.0);
        assert!(!document_sigmoid_dz(200.0, 0.0).is_finite());
        assert!(binary_cross_entropy(a.view(), y.view()).is_finite());
        let g = Head::Sigmoid.cost_gradient(z.view(), y.view());
        assert!(g.iter().all(|v| v.is_finite()));
        let zs = array![[1000.0f32, -1000.0, 0.0]];
        let ys = array![[0.0f32, 1.0, 0.0]];
        assert!(Head::Softmax.cost(zs.view(), ys.view()).is_finite());
        assert!(
            Head::Softmax
                .cost_gradient(zs.view(), ys.view())
                .iter()
                .all(|v| v.is_finite())
        );
    }

    #[test]
    fn fused_sigmoid_gradient_equals_the_document_chain_rule() {
        for &z in &[-3.0f32, -0.2, 0.0, 0.7, 4.0] {
            for &y in &[0.0f32, 1.0] {
                let fused =
                    Head::Sigmoid.cost_gradient(array![[z]].view(), array![[y]].view())[[0, 0]];
                assert_abs_diff_eq!(fused, document_sigmoid_dz(z, y), epsilon = 1e-5);
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_cost_matches_hand_value() {
        let z = array![[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]];
        let p = softmax(z.view());
        for row in p.rows() {
            assert_abs_diff_eq!(row.sum(), 1.0, epsilon = 1e-6);
        }
        let y = array![[0.0f32, 0.0, 1.0], [1.0, 0.0, 0.0]];
        let expected = (-(p[[0, 2]] as f64).ln() + 3f64.ln()) / 2.0;
        assert_abs_diff_eq!(
            Head::Softmax.cost(z.view(), y.view()),
            expected,
            epsilon = 1e-6
        );
        assert_eq!(Head::Softmax.decide(p.view()), vec![2, 0]);
    }

    #[test]
    fn sigmoid_decision_uses_the_documents_half_threshold() {
        let p = array![[0.5f32], [0.50001], [0.2], [0.9]];
        assert_eq!(Head::Sigmoid.decide(p.view()), vec![0, 1, 0, 1]);
    }
}
