//! Why did it say cat? Heat maps of where a model looked, from the layers' own backward
//! passes (no second implementation of any layer).
//!
//! **Grad-CAM** (Selvaraju et al., 2017) for networks with conv layers or residual blocks.
//! The *target* is the last top-level layer whose output is still an image with more than one
//! pixel (the last conv stage: a ReLU, a pool or a residual block's output), `A (h × w × c)`.
//! The class score `y` is the class's logit (the sigmoid head's logit `z` for its positive
//! class, `−z` for the other). Backward from `y` to `A` gives `∂y/∂A`; each channel's weight
//! is its spatial mean, `α_k = (1 / hw) Σ_ij ∂y/∂A_ijk`, and the map is
//! `relu(Σ_k α_k A_k) (h × w)`, which [`overlay`] upsamples to the photo. A channel weight is
//! thus the derivative of the score along "raise the whole of channel k", which the tests
//! check against a finite difference. Grad-CAM weighs each channel once for the whole image:
//! it shows where the channels the class relies on fire, coarsely.
//!
//! **Gradient × input** for dense networks, which have no spatial stage: the heat of a pixel
//! is `|Σ_c x_c · ∂y/∂x_c|` over its three colour values, at the input's resolution.
//!
//! Both run the network in inference mode (batch norm's running statistics, no dropout). With
//! test-time flips, the map is the mean of the photo's and its mirror's (mirrored back), as
//! the prediction is. Not here: the drawing ([`overlay`]), the command line, the server.

pub mod overlay;

use crate::data::augment::mirrored;
use crate::loss::Head;
use crate::model::{Model, Predictions};
use crate::nn::sequence::{self, Layers};
use crate::nn::{Geometry, LayerSpec, Mode, Network, Rows};
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// How a heat map was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Grad-CAM on the output of top-level layer `layer` (0-based).
    GradCam {
        /// The target layer's index among the network's layers.
        layer: usize,
    },
    /// Gradient × input, at the input's resolution.
    GradientInput,
}

impl Method {
    /// `grad-cam` or `gradient-x-input`.
    pub fn name(self) -> &'static str {
        match self {
            Method::GradCam { .. } => "grad-cam",
            Method::GradientInput => "gradient-x-input",
        }
    }
}

/// A heat map over the model's input square, for one class.
#[derive(Debug, Clone)]
pub struct Heat {
    /// `(rows, columns)`, non-negative: each cell covers an equal part of the photo (the photo
    /// is stretched to the model's square, as it is for prediction).
    pub map: Array2<f32>,
    /// How it was made.
    pub method: Method,
    /// The class it explains (an index into the model's classes).
    pub class: usize,
    /// Grad-CAM's channel weights `α_k` (for the photo as given, not its mirror); empty for
    /// gradient × input.
    pub weights: Vec<f32>,
}

/// A prediction and the heat map of the class explained.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The model's prediction for the photo (one row).
    pub prediction: Predictions,
    /// Where it looked.
    pub heat: Heat,
}

/// The method deepcat uses for `network`: Grad-CAM on the last top-level layer whose output
/// has more than one pixel, for a network with a conv layer or a residual block; gradient ×
/// input otherwise.
pub fn method_for(network: &Network) -> Method {
    let spatial = network
        .specs()
        .iter()
        .any(|s| matches!(s, LayerSpec::Conv(_) | LayerSpec::Residual(_)));
    let last_image = network
        .layers()
        .iter()
        .rposition(|l| l.output().pixels() > 1);
    match last_image {
        Some(layer) if spatial => Method::GradCam { layer },
        _ => Method::GradientInput,
    }
}

/// `∂y/∂logits (1, outputs)` for class `class`'s score `y`: one-hot with softmax; with the
/// sigmoid head `+1` for its positive class and `−1` for the other (the score is `±z`).
///
/// # Panics
/// If `class` is not one of the model's classes.
pub fn score_gradient(model: &Model, class: usize) -> Array2<f32> {
    assert!(class < model.classes.len(), "class {class} out of range");
    match (model.network.head(), model.classes.positive) {
        (Head::Sigmoid, Some(positive)) => {
            Array2::from_elem((1, 1), if class == positive { 1.0 } else { -1.0 })
        }
        _ => Array2::from_shape_fn((1, model.classes.len()), |(_, k)| {
            f32::from(u8::from(k == class))
        }),
    }
}

/// Explains `row` (one photo as the model reads it: `size² × 3` bytes, HWC): the prediction
/// and the heat map for `class`, or for the predicted class when `None`.
///
/// # Errors
/// [`Error::Config`] if `row` is not the model's input size or `class` is not a class.
pub fn explain(model: &Model, row: &[u8], class: Option<usize>) -> Result<Explanation> {
    let features = model.network.input_units();
    if row.len() != features {
        return Err(Error::Config(format!(
            "the model reads {features} values per photo, got {}",
            row.len()
        )));
    }
    let bytes = ArrayView2::from_shape((1, features), row)
        .map_err(|e| Error::Config(format!("cannot read the photo's row: {e}")))?;
    let prediction = model.predict(bytes);
    let class = match class {
        Some(c) if c >= model.classes.len() => {
            return Err(Error::Config(format!(
                "class index {c} is not one of the model's {} classes",
                model.classes.len()
            )));
        }
        Some(c) => c,
        None => prediction.classes[0],
    };
    let x = bytes.mapv(crate::linalg::bytes::unit);
    let mut heat = heat_of(model, x.view(), class);
    if model.tta {
        let g = model.network.input();
        let mirror = mirrored(x.view(), g.height, g.width, g.channels);
        let back = heat_of(model, mirror.view(), class).map;
        let back = back.slice(ndarray::s![.., ..;-1]);
        heat.map = (&heat.map + &back) * 0.5;
    }
    Ok(Explanation { prediction, heat })
}

/// The heat map for one row of values `x (1, features)`.
fn heat_of(model: &Model, x: ArrayView2<'_, f32>, class: usize) -> Heat {
    let dscore = score_gradient(model, class);
    let method = method_for(&model.network);
    let (map, weights) = match method {
        Method::GradCam { layer } => {
            let cam = grad_cam(&model.network, layer, x, dscore);
            (cam.map, cam.weights)
        }
        Method::GradientInput => (gradient_input(&model.network, x, dscore), Vec::new()),
    };
    Heat {
        map,
        method,
        class,
        weights,
    }
}

/// Grad-CAM's parts for one row: the target's activations, their gradient, the channel
/// weights and the map.
#[derive(Debug, Clone)]
pub struct GradCam {
    /// `A`, the target layer's output `(1, h·w·c)`.
    pub activations: Array2<f32>,
    /// `∂y/∂A (1, h·w·c)`.
    pub gradient: Array2<f32>,
    /// The target's geometry.
    pub geometry: Geometry,
    /// `α_k`, one per channel.
    pub weights: Vec<f32>,
    /// `relu(Σ_k α_k A_k)`, `(h, w)`.
    pub map: Array2<f32>,
}

/// Grad-CAM on the output of `network`'s layer `layer` for one row `x (1, features)`, the
/// score's gradient with respect to the logits being `dscore (1, outputs)`.
///
/// # Panics
/// If `layer` is the last layer or beyond, or `x` is not one row of the network's input.
pub fn grad_cam(
    network: &Network,
    layer: usize,
    x: ArrayView2<'_, f32>,
    dscore: Array2<f32>,
) -> GradCam {
    assert_eq!(x.nrows(), 1, "Grad-CAM explains one photo at a time");
    let (stem, tail) = network.layers().split_at(layer + 1);
    assert!(
        !tail.is_empty(),
        "the target layer cannot be the output layer"
    );
    let geometry = network.layers()[layer].output();
    let activations = sequence::infer(stem, Rows::Values(x));
    let gradient = tail_gradient(tail, activations.view(), dscore);
    let c = geometry.channels;
    let pixels = geometry.pixels() as f32;
    let mut weights = vec![0.0f32; c];
    for px in gradient.row(0).exact_chunks(c) {
        weights.iter_mut().zip(px).for_each(|(w, g)| *w += g);
    }
    weights.iter_mut().for_each(|w| *w /= pixels);
    let cam: Vec<f32> = activations
        .row(0)
        .exact_chunks(c)
        .into_iter()
        .map(|a| {
            a.iter()
                .zip(&weights)
                .map(|(a, w)| a * w)
                .sum::<f32>()
                .max(0.0)
        })
        .collect();
    let map = Array2::from_shape_vec((geometry.height, geometry.width), cam)
        .unwrap_or_else(|_| unreachable!("one value per pixel of the target"));
    GradCam {
        activations,
        gradient,
        geometry,
        weights,
        map,
    }
}

/// The score that `dscore` picks out of the logits of `tail` run on `a`: `Σ logits ⊙
/// dscore` (the class's logit, or `±z`). What Grad-CAM differentiates, exposed for checks.
pub fn tail_score(tail: &Layers, a: ArrayView2<'_, f32>, dscore: ArrayView2<'_, f32>) -> f32 {
    let logits = sequence::infer(tail, Rows::Values(a));
    (&logits * &dscore).sum()
}

/// `∂y/∂a` through `tail`, run in inference mode on `a`.
fn tail_gradient(tail: &Layers, a: ArrayView2<'_, f32>, dscore: Array2<f32>) -> Array2<f32> {
    let pass = sequence::forward(tail, Rows::Values(a), &mut Mode::Infer);
    let (_, da) = sequence::backward(tail, Rows::Values(a), &pass, dscore, true);
    da.unwrap_or_else(|| unreachable!("the input gradient was asked for"))
}

/// Gradient × input for one row `x (1, features)`: `|Σ_c x_c · ∂y/∂x_c|` per pixel of the
/// network's input, `(height, width)`.
pub fn gradient_input(
    network: &Network,
    x: ArrayView2<'_, f32>,
    dscore: Array2<f32>,
) -> Array2<f32> {
    let g = network.input();
    let dx = tail_gradient(network.layers(), x, dscore);
    let product = &dx * &x;
    let per_pixel: Vec<f32> = product
        .row(0)
        .exact_chunks(g.channels)
        .into_iter()
        .map(|px| px.sum().abs())
        .collect();
    Array2::from_shape_vec((g.height, g.width), per_pixel)
        .unwrap_or_else(|_| unreachable!("one value per input pixel"))
}

/// The share of `map`'s total heat in its left half (columns `< width / 2`), 0 for no heat.
pub fn left_share(map: &Array2<f32>) -> f32 {
    let total = map.sum();
    if total <= 0.0 {
        return 0.0;
    }
    let half = map.ncols() / 2;
    map.slice(ndarray::s![.., ..half]).sum() / total
}

#[cfg(test)]
mod tests;
