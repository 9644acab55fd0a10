//! A sequence of layers run one after another: the body of a [`Network`](super::Network), of a
//! residual block, or the part of a network after its first layer (the Gram path's seam).
//!
//! A training forward pass keeps every layer's output and saved value in a [`Pass`]; the
//! backward pass walks it in reverse. Parameters and buffers are named by where they live:
//! each layer by its kind and its number among the layers of that kind in the sequence
//! (`conv1`, `batchnorm1`, `conv2`, ...), then the layer's own names (`conv1.weight`, or
//! `residual1.conv2.weight` inside a block).

use super::layer::{AnyLayer, Buffer, Kept, Mode, Param};
use super::{Rows, recycle};
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewMutD};

/// Layers, boxed: a sequence is a slice of them.
pub type Layers = [Box<dyn AnyLayer>];

/// Every layer's output and saved value from one forward pass over a sequence: `outputs[i]` is
/// layer `i`'s output, `(batch, units)`. Dropping a pass hands its arrays back for reuse.
pub struct Pass {
    /// Outputs of the layers, in order.
    pub outputs: Vec<Array2<f32>>,
    saved: Vec<Kept>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        for a in self.outputs.drain(..) {
            recycle::give(a);
        }
    }
}

impl Pass {
    /// The last layer's output (the logits, for a whole network).
    ///
    /// # Panics
    /// If the sequence was empty.
    #[allow(
        clippy::expect_used,
        reason = "passes are run over sequences of at least one layer"
    )]
    pub fn last(&self) -> ArrayView2<'_, f32> {
        self.outputs
            .last()
            .expect("a pass runs at least one layer")
            .view()
    }

    /// Alias of [`last`](Pass::last) for a whole network's pass.
    pub fn logits(&self) -> ArrayView2<'_, f32> {
        self.last()
    }
}

/// Runs `layers` on `x` (their first layer's input), keeping what backward needs.
pub fn forward(layers: &Layers, x: Rows<'_>, mode: &mut Mode<'_>) -> Pass {
    let mut outputs: Vec<Array2<f32>> = Vec::with_capacity(layers.len());
    let mut saved = Vec::with_capacity(layers.len());
    for layer in layers {
        let (y, s) = match outputs.last() {
            None => layer.forward_rows(x, mode),
            Some(input) => layer.forward(input.view(), mode),
        };
        outputs.push(y);
        saved.push(s);
    }
    Pass { outputs, saved }
}

/// Backward through `layers` along `pass` (run on `x`), from `dy = ∂cost/∂output`: the
/// gradients of every parameter, in [`params`] order, and ∂cost/∂x if `need_dx`.
pub fn backward(
    layers: &Layers,
    x: Rows<'_>,
    pass: &Pass,
    dy: Array2<f32>,
    need_dx: bool,
) -> (Vec<ArrayD<f32>>, Option<Array2<f32>>) {
    let mut grads_rev: Vec<Vec<ArrayD<f32>>> = Vec::with_capacity(layers.len());
    let mut dy = dy;
    for (i, layer) in layers.iter().enumerate().rev() {
        let want_dx = i > 0 || need_dx;
        let (y, saved) = (pass.outputs[i].view(), &pass.saved[i]);
        let back = if i == 0 {
            layer.backward_rows(x, y, saved, dy, want_dx)
        } else {
            layer.backward(pass.outputs[i - 1].view(), y, saved, dy, want_dx)
        };
        grads_rev.push(back.grads);
        dy = match back.dx {
            Some(dx) => dx,
            None => Array2::zeros((0, 0)),
        };
    }
    let grads = grads_rev.into_iter().rev().flatten().collect();
    (grads, need_dx.then_some(dy))
}

/// Inference through `layers`, keeping only the current output (no [`Pass`]).
pub fn infer(layers: &Layers, x: Rows<'_>) -> Array2<f32> {
    let mut a: Option<Array2<f32>> = None;
    for layer in layers {
        let (y, _) = match &a {
            None => layer.forward_rows(x, &mut Mode::Infer),
            Some(input) => layer.forward(input.view(), &mut Mode::Infer),
        };
        if let Some(old) = a.replace(y) {
            recycle::give(old);
        }
    }
    a.unwrap_or_else(|| x.values().into_owned())
}

/// Hands a training pass back to the layers that ran it, so those with state outside the
/// gradients (batch norm's running statistics) can update it.
pub fn absorb(layers: &mut Layers, pass: &Pass) {
    for (layer, saved) in layers.iter_mut().zip(&pass.saved) {
        layer.absorb(saved);
    }
}

/// Each layer's name in the sequence: its kind and its number among the layers of that kind
/// (`conv1`, `batchnorm1`, `conv2`, ..., `dense1`).
pub fn names(layers: &Layers) -> Vec<String> {
    let specs: Vec<_> = layers.iter().map(|l| l.spec()).collect();
    super::spec::numbered(specs.iter().map(|s| s.kind()))
}

/// Every trainable parameter, named `layer.name`, in order.
pub fn params(layers: &Layers) -> Vec<Param<'_>> {
    layers
        .iter()
        .zip(names(layers))
        .flat_map(|(layer, prefix)| {
            layer.params().into_iter().map(move |p| Param {
                name: format!("{prefix}.{}", p.name),
                ..p
            })
        })
        .collect()
}

/// Every trainable parameter, mutable, in [`params`] order.
pub fn params_mut(layers: &mut Layers) -> Vec<ArrayViewMutD<'_, f32>> {
    layers.iter_mut().flat_map(|l| l.params_mut()).collect()
}

/// Every buffer, named `layer.name`, in order.
pub fn buffers(layers: &Layers) -> Vec<Buffer<'_>> {
    layers
        .iter()
        .zip(names(layers))
        .flat_map(|(layer, prefix)| {
            layer
                .buffers()
                .into_iter()
                .map(move |(name, b)| (format!("{prefix}.{name}"), b))
        })
        .collect()
}

/// Every buffer, mutable, in [`buffers`] order.
pub fn buffers_mut(layers: &mut Layers) -> Vec<ArrayViewMutD<'_, f32>> {
    layers.iter_mut().flat_map(|l| l.buffers_mut()).collect()
}

/// `Σ‖W‖²` over the parameters that are weights (biases, scales and shifts excluded), for the
/// L2 term of the cost.
pub fn weight_norm_sq(layers: &Layers) -> f64 {
    params(layers)
        .iter()
        .filter(|p| p.decay)
        .map(|p| {
            p.value
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
        })
        .sum()
}
