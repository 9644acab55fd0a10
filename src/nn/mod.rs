//! Layers and the network that chains them.
//!
//! **Layout.** Everything is row-major with one example per row: a batch of inputs is
//! `(batch, features)`, a layer's activations are `(batch, units)`. (The document stores
//! examples as columns; rows keep each image contiguous in memory and make a mini-batch a
//! slice of rows.) A dense layer's weight is `(units_out, units_in)`, as the document's `W[l]`
//! and PyTorch's `Linear.weight`, and its bias is `(units_out,)`.
//!
//! **Layers.** A [`Layer`] is a forward/backward pair. `forward` returns the output and what
//! `backward` will need beyond the input and output (a dropout mask, say); `backward` takes the
//! gradient of the cost with respect to the output and returns the parameter gradients and,
//! only when asked, the gradient with respect to the input (nobody needs it for the images).
//! The layers are [`Dense`], [`Relu`] and [`Dropout`]; the output non-linearity and the cost
//! are fused in [`Head`](crate::loss::Head) for numerical stability.
//!
//! **Network.** [`Network`] holds the layers and the head. A forward pass keeps every layer's
//! output in a [`Pass`]; the backward pass walks it in reverse. Training code may start the
//! forward pass after the first layer and stop the backward pass there (the exact Gram path
//! computes the first layer itself).

mod activation;
mod dense;
mod dropout;
mod init;
mod mt19937;

pub use activation::Relu;
pub use dense::Dense;
pub use dropout::Dropout;
pub use init::Init;
pub use mt19937::Mt19937;

use crate::Rng;
use crate::loss::Head;
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMutD};
use std::any::Any;

/// Whether a forward pass is for training (dropout on, randomness from the given generator) or
/// for inference (deterministic).
pub enum Mode<'r> {
    /// Inference: dropout is the identity.
    Infer,
    /// Training: training-only behaviour is on and draws from this generator.
    Train(&'r mut Rng),
}

/// What a layer keeps from its forward pass for its backward pass, beyond its input and output
/// (which the [`Pass`] keeps). Dropout keeps its mask; most layers keep nothing.
pub type Saved = Option<Array2<f32>>;

/// The result of a layer's backward pass.
pub struct Backward {
    /// ∂cost/∂input, `(batch, units_in)`; `None` unless asked for.
    pub dx: Option<Array2<f32>>,
    /// ∂cost/∂parameter for each of [`Layer::params`], in the same order and shapes.
    pub grads: Vec<ArrayD<f32>>,
}

/// A forward/backward pair. Implementations keep the two methods side by side.
pub trait Layer: Any + Send + Sync + std::fmt::Debug {
    /// A short lower-case name ("dense", "relu", "dropout").
    fn kind(&self) -> &'static str;

    /// The number of output units for `units_in` input units.
    fn units_out(&self, units_in: usize) -> usize;

    /// `x (batch, units_in)` → `(batch, units_out)`, plus what backward needs.
    fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> (Array2<f32>, Saved);

    /// Given the input `x` and output `y` of [`forward`](Layer::forward), what it saved, and
    /// `dy = ∂cost/∂y (batch, units_out)`: the parameter gradients and, if `need_dx`,
    /// `∂cost/∂x (batch, units_in)`.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayView2<'_, f32>,
        saved: &Saved,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward;

    /// The trainable parameters with their names ("weight", "bias"); empty for most layers.
    fn params(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        Vec::new()
    }

    /// The same parameters, mutable, in the same order.
    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Vec::new()
    }

    /// Whether the parameter at `index` is a weight (L2 regularisation applies) rather than a
    /// bias (it does not).
    fn is_weight(&self, _index: usize) -> bool {
        false
    }

    /// A boxed copy (used to keep the best weights seen so far).
    fn clone_box(&self) -> Box<dyn Layer>;
}

impl Clone for Box<dyn Layer> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Every layer's output from one forward pass: `outputs[i]` is layer `i`'s output,
/// `(batch, units)`, and the last one is the logits.
pub struct Pass {
    /// Index of the first layer this pass ran.
    pub start: usize,
    /// Outputs of layers `start..`, in order.
    pub outputs: Vec<Array2<f32>>,
    saved: Vec<Saved>,
}

impl Pass {
    /// The logits `(batch, outputs)`: the last layer's output.
    #[allow(
        clippy::expect_used,
        reason = "a Pass is only made by running at least one layer"
    )]
    pub fn logits(&self) -> ArrayView2<'_, f32> {
        self.outputs
            .last()
            .expect("a pass runs at least one layer")
            .view()
    }
}

/// Dense layers with ReLU (and optional dropout) between them, and an output head.
#[derive(Debug, Clone)]
pub struct Network {
    input_units: usize,
    layers: Vec<Box<dyn Layer>>,
    head: Head,
}

/// How to build a [`Network`]: the document's `layers_dimensions`, split into its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// Input features (49152 for 128×128 RGB).
    pub inputs: usize,
    /// Hidden layer sizes (the document: 20, 7, 5).
    pub hidden: Vec<usize>,
    /// Output units: 1 for two classes (sigmoid), the number of classes otherwise (softmax).
    pub outputs: usize,
    /// Inverted-dropout probability after each hidden layer's ReLU; 0 for none.
    pub dropout: f32,
}

impl Architecture {
    /// Every layer width, input first: the document's `layers_dimensions`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.inputs];
        sizes.extend(&self.hidden);
        sizes.push(self.outputs);
        sizes
    }

    /// The head that fits the output size: sigmoid for one unit, softmax otherwise.
    pub fn head(&self) -> Head {
        if self.outputs == 1 {
            Head::Sigmoid
        } else {
            Head::Softmax
        }
    }
}

impl Network {
    /// A freshly initialised network: dense layers drawn by `init` from `rng`, zero biases.
    ///
    /// # Panics
    /// If any size is zero (configurations are checked before this is called).
    pub fn new(arch: &Architecture, init: Init, rng: &mut Mt19937) -> Self {
        let sizes = arch.sizes();
        assert!(
            sizes.iter().all(|&s| s > 0),
            "layer sizes must be positive: {sizes:?}"
        );
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for (l, pair) in sizes.windows(2).enumerate() {
            layers.push(Box::new(Dense::new(init.weights(pair[1], pair[0], rng))));
            let hidden = l + 2 < sizes.len();
            if hidden {
                layers.push(Box::new(Relu));
                if arch.dropout > 0.0 {
                    layers.push(Box::new(Dropout::new(arch.dropout)));
                }
            }
        }
        Network {
            input_units: arch.inputs,
            layers,
            head: arch.head(),
        }
    }

    /// A network from trained dense layers (input layer first), ReLU between them.
    ///
    /// # Panics
    /// If consecutive layers' shapes do not chain.
    pub fn from_dense(dense: Vec<Dense>, head: Head) -> Self {
        let input_units = dense.first().map_or(0, |d| d.weight.ncols());
        let count = dense.len();
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        let mut units = input_units;
        for (l, d) in dense.into_iter().enumerate() {
            assert_eq!(
                d.weight.ncols(),
                units,
                "dense layer {} expects {} inputs, gets {units}",
                l + 1,
                d.weight.ncols()
            );
            units = d.weight.nrows();
            layers.push(Box::new(d));
            if l + 1 < count {
                layers.push(Box::new(Relu));
            }
        }
        Network {
            input_units,
            layers,
            head,
        }
    }

    /// The input width.
    pub fn input_units(&self) -> usize {
        self.input_units
    }

    /// The output head.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The dense layers, in order (what a model file stores).
    pub fn dense_layers(&self) -> Vec<&Dense> {
        self.layers
            .iter()
            .filter_map(|l| (l.as_ref() as &dyn Any).downcast_ref::<Dense>())
            .collect()
    }

    /// Every layer width, input first (the document's `layers_dimensions`).
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.input_units];
        let mut units = self.input_units;
        for layer in &self.layers {
            if layer.kind() == "dense" {
                units = layer.units_out(units);
                sizes.push(units);
            }
        }
        sizes
    }

    /// Runs layers `start..` on `x`, which must be the input of layer `start`
    /// (`(batch, features)` when `start == 0`).
    pub fn forward_from(&self, start: usize, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> Pass {
        let mut outputs: Vec<Array2<f32>> = Vec::with_capacity(self.layers.len() - start);
        let mut saved = Vec::with_capacity(self.layers.len() - start);
        for layer in &self.layers[start..] {
            let input = outputs.last().map_or(x, |o| o.view());
            let (y, s) = layer.forward(input, mode);
            outputs.push(y);
            saved.push(s);
        }
        Pass {
            start,
            outputs,
            saved,
        }
    }

    /// The whole forward pass: `x (batch, features)` → pass whose last output is the logits.
    pub fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> Pass {
        self.forward_from(0, x, mode)
    }

    /// Backward through the layers `pass` ran, from `dlogits = ∂cost/∂logits (batch, outputs)`.
    ///
    /// `x` is the input the pass started from. Returns the gradients of the parameters of
    /// layers `pass.start..` (in [`params_mut`](Network::params_mut) order) and, if `need_dx`,
    /// ∂cost/∂x. The input images' gradient is never needed: pass `false` for them.
    pub fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        pass: &Pass,
        dlogits: Array2<f32>,
        need_dx: bool,
    ) -> (Vec<ArrayD<f32>>, Option<Array2<f32>>) {
        let mut grads_rev: Vec<Vec<ArrayD<f32>>> = Vec::with_capacity(pass.outputs.len());
        let mut dy = dlogits;
        for (i, layer) in self.layers[pass.start..].iter().enumerate().rev() {
            let input = if i == 0 {
                x
            } else {
                pass.outputs[i - 1].view()
            };
            let want_dx = i > 0 || need_dx;
            let back = layer.backward(input, pass.outputs[i].view(), &pass.saved[i], dy, want_dx);
            grads_rev.push(back.grads);
            match back.dx {
                Some(dx) => dy = dx,
                None => {
                    debug_assert!(!want_dx, "{} gave no input gradient", layer.kind());
                    dy = Array2::zeros((0, 0));
                }
            }
        }
        let grads = grads_rev.into_iter().rev().flatten().collect();
        (grads, need_dx.then_some(dy))
    }

    /// Class probabilities for `x (batch, features)`: `(batch, 1)` = P(positive) with the
    /// sigmoid head, `(batch, classes)` with softmax. Inference mode (no dropout).
    pub fn probabilities(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let pass = self.forward(x, &mut Mode::Infer);
        self.head.probabilities(pass.logits())
    }

    /// Every trainable parameter of layers `start..`, in order, read-only.
    pub fn params_from(&self, start: usize) -> Vec<ArrayViewD<'_, f32>> {
        self.layers[start..]
            .iter()
            .flat_map(|l| l.params().into_iter().map(|(_, p)| p))
            .collect()
    }

    /// Every trainable parameter of layers `start..`, in order.
    pub fn params_mut_from(&mut self, start: usize) -> Vec<ArrayViewMutD<'_, f32>> {
        self.layers[start..]
            .iter_mut()
            .flat_map(|l| l.params_mut())
            .collect()
    }

    /// Every trainable parameter, in order.
    pub fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        self.params_mut_from(0)
    }

    /// Every trainable parameter with its file name (`dense1.weight`, `dense1.bias`, ...).
    pub fn named_params(&self) -> Vec<(String, ArrayViewD<'_, f32>)> {
        let mut out = Vec::new();
        let mut dense = 0;
        for layer in &self.layers {
            let params = layer.params();
            if params.is_empty() {
                continue;
            }
            dense += 1;
            for (name, p) in params {
                out.push((format!("{}{dense}.{name}", layer.kind()), p));
            }
        }
        out
    }

    /// Whether every parameter is a finite number (no NaN or infinity).
    pub fn is_finite(&self) -> bool {
        self.named_params()
            .iter()
            .all(|(_, p)| p.iter().all(|v| v.is_finite()))
    }

    /// For each parameter of layers `start..` (in order): is it a weight that L2 applies to?
    pub fn weight_mask_from(&self, start: usize) -> Vec<bool> {
        self.layers[start..]
            .iter()
            .flat_map(|l| (0..l.params().len()).map(move |i| l.is_weight(i)))
            .collect()
    }

    /// Σ‖W‖² over the weights of layers `start..` (biases excluded), for the L2 cost term.
    pub fn weight_norm_sq_from(&self, start: usize) -> f64 {
        self.layers[start..]
            .iter()
            .flat_map(|l| {
                l.params()
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| l.is_weight(*i))
                    .map(|(_, (_, p))| p.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// The first layer, when it is dense (the exact Gram path needs it).
    pub fn first_dense(&self) -> Option<&Dense> {
        let first = self.layers.first()?;
        (first.as_ref() as &dyn Any).downcast_ref::<Dense>()
    }

    /// The first layer, when it is dense, and every parameter of the layers after it, mutable
    /// together (the exact Gram path updates them side by side).
    pub fn split_first_dense_mut(&mut self) -> Option<(&mut Dense, Vec<ArrayViewMutD<'_, f32>>)> {
        let (first, rest) = self.layers.split_first_mut()?;
        let dense = (first.as_mut() as &mut dyn Any).downcast_mut::<Dense>()?;
        Some((
            dense,
            rest.iter_mut().flat_map(|l| l.params_mut()).collect(),
        ))
    }
}
