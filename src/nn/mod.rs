//! Layers and the network that chains them.
//!
//! **Layout.** Everything is row-major with one example per row: a batch of inputs is
//! `(batch, features)`, a layer's activations are `(batch, units)`. (The document stores
//! examples as columns; rows keep each image contiguous in memory and make a mini-batch a
//! slice of rows.) A [`Geometry`] says how a row is read: `height × width × channels`, channels
//! last, as the loader's `hwc_rgb` rows; a dense layer's output is `1 × 1 × units`. A dense
//! weight is `(units_out, units_in)`, as the document's `W[l]` and PyTorch's `Linear.weight`;
//! a conv weight is `(c_out, c_in, k, k)`, as PyTorch's `Conv2d.weight`.
//!
//! **Layers.** A [`Layer`] is a forward/backward pair. `forward` returns the output and what
//! `backward` will need beyond the input and output (a dropout mask, batch statistics);
//! `backward` takes the gradient of the cost with respect to the output and returns the
//! parameter gradients and, only when asked, the gradient with respect to the input (nobody
//! needs it for the images). The layers are [`Dense`], [`Conv2d`], [`BatchNorm`], [`Relu`],
//! [`MaxPool2d`], [`GlobalAvgPool`] and [`Dropout`]; the output non-linearity and the cost are
//! fused in [`Head`](crate::loss::Head) for numerical stability.
//!
//! **Network.** [`Network`] holds the layers and the head, built from an [`Architecture`]
//! (see [`spec`] for its text form) whose geometries are checked to chain. A forward pass
//! keeps every layer's output in a [`Pass`]; the backward pass walks it in reverse, and
//! [`Network::absorb`] hands a training pass back so batch norm can update its running
//! statistics. Training code may start the forward pass after the first layer and stop the
//! backward pass there (the exact Gram path computes the first layer itself).

mod activation;
mod batchnorm;
mod conv;
mod dense;
mod dropout;
mod geometry;
#[cfg(test)]
mod gradcheck;
mod im2col;
mod init;
mod mt19937;
mod pool;
pub mod recycle;
mod rows;
pub mod spec;
mod summary;

pub use activation::Relu;
pub use batchnorm::BatchNorm;
pub use conv::{
    Conv2d, reference_backward as conv_reference_backward,
    reference_forward as conv_reference_forward,
};
pub use dense::Dense;
pub use dropout::Dropout;
pub use geometry::Geometry;
pub use init::Init;
pub use mt19937::Mt19937;
pub use pool::{GlobalAvgPool, MaxPool2d};
pub use rows::Rows;
pub use spec::{Architecture, LayerSpec};
pub use summary::{Summary, SummaryRow};

use crate::Result;
use crate::Rng;
use crate::loss::Head;
use ndarray::{Array2, Array4, ArrayD, ArrayView2, ArrayViewD, ArrayViewMutD};
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
/// (which the [`Pass`] keeps). Dropout keeps its mask, batch norm its batch statistics; most
/// layers keep nothing.
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
    /// A short lower-case name ("dense", "conv", "relu", ...), as in model files.
    fn kind(&self) -> &'static str;

    /// The layer's kind and settings, as an architecture names it.
    fn spec(&self) -> LayerSpec;

    /// The geometry of the output for an `input` geometry.
    fn output(&self, input: Geometry) -> Geometry;

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

    /// [`forward`](Layer::forward) on a network's input, which may be image bytes. By
    /// default the bytes are scaled to values first; a layer that can read them directly
    /// overrides this.
    fn forward_rows(&self, x: Rows<'_>, mode: &mut Mode<'_>) -> (Array2<f32>, Saved) {
        self.forward(x.values().view(), mode)
    }

    /// [`backward`](Layer::backward) of a layer that ran [`forward_rows`](Layer::forward_rows).
    fn backward_rows(
        &self,
        x: Rows<'_>,
        y: ArrayView2<'_, f32>,
        saved: &Saved,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        self.backward(x.values().view(), y, saved, dy, need_dx)
    }

    /// The trainable parameters with their names ("weight", "bias"); empty for most layers.
    fn params(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        Vec::new()
    }

    /// The same parameters, mutable, in the same order.
    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Vec::new()
    }

    /// Whether the parameter at `index` is a weight (L2 regularisation applies) rather than a
    /// bias or a scale (it does not).
    fn is_weight(&self, _index: usize) -> bool {
        false
    }

    /// State that is saved with the model but not trained by gradients (batch norm's running
    /// statistics), with names; empty for most layers.
    fn buffers(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        Vec::new()
    }

    /// The same state, mutable, in the same order.
    fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Vec::new()
    }

    /// Takes in what a training forward pass saved, to update [`buffers`](Layer::buffers).
    fn absorb(&mut self, _saved: &Saved) {}

    /// A boxed copy (used to keep the best weights seen so far).
    fn clone_box(&self) -> Box<dyn Layer>;
}

impl Clone for Box<dyn Layer> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// `a` in standard layout: itself when it already is, else a copy.
fn standard(a: Array2<f32>) -> Array2<f32> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// Activation values one inference pass may hold in its largest layer output (64 MiB of f32):
/// [`Network::logits`] splits larger sets into passes of fewer rows.
const INFERENCE_VALUES: usize = 1 << 24;

/// Every layer's output from one forward pass: `outputs[i]` is layer `i`'s output,
/// `(batch, units)`, and the last one is the logits. Dropping a pass hands its arrays back for
/// reuse.
pub struct Pass {
    /// Index of the first layer this pass ran.
    pub start: usize,
    /// Outputs of layers `start..`, in order.
    pub outputs: Vec<Array2<f32>>,
    saved: Vec<Saved>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        for a in self.outputs.drain(..).chain(self.saved.drain(..).flatten()) {
            recycle::give(a);
        }
    }
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

/// Layers, input geometry first, and an output head.
#[derive(Debug, Clone)]
pub struct Network {
    input: Geometry,
    layers: Vec<Box<dyn Layer>>,
    head: Head,
}

/// One layer of `spec` over `input` images, its weights drawn by `init` from `rng`.
/// With `zeroed`, weights are zero instead (nothing is drawn): they are about to be replaced.
fn build_layer(
    spec: LayerSpec,
    input: Geometry,
    init: Init,
    rng: &mut Mt19937,
    zeroed: bool,
) -> Box<dyn Layer> {
    match spec {
        LayerSpec::Dense { units } => Box::new(Dense::new(if zeroed {
            Array2::zeros((units, input.len()))
        } else {
            init.weights(units, input.len(), rng)
        })),
        LayerSpec::Conv {
            channels,
            kernel,
            stride,
        } => {
            let shape = (channels, input.channels, kernel, kernel);
            let flat = if zeroed {
                Array2::zeros((channels, input.channels * kernel * kernel))
            } else {
                init.conv_weights(channels, input.channels, kernel, rng)
            };
            #[allow(
                clippy::expect_used,
                reason = "a fresh (c_out, c_in·k·k) array has exactly c_out·c_in·k·k values"
            )]
            let weight: Array4<f32> = flat.into_shape_with_order(shape).expect("same size");
            Box::new(Conv2d::new(input, weight, stride))
        }
        LayerSpec::BatchNorm => Box::new(BatchNorm::new(input)),
        LayerSpec::Relu => Box::new(Relu),
        LayerSpec::MaxPool => Box::new(MaxPool2d::new(input)),
        LayerSpec::Gap => Box::new(GlobalAvgPool::new(input)),
        LayerSpec::Dropout { p } => Box::new(Dropout::new(p)),
    }
}

impl Network {
    /// A freshly initialised network: weights drawn by `init` from `rng` layer by layer (the
    /// document's order: `W1`, `W2`, ...), zero biases, batch norms at γ = 1, β = 0.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first layer whose settings are invalid or whose input
    /// geometry does not fit (a pool on a 1-pixel image, say).
    pub fn new(arch: &Architecture, init: Init, rng: &mut Mt19937) -> Result<Self> {
        let inputs = arch.inputs()?;
        let layers = arch
            .layers()
            .into_iter()
            .zip(inputs)
            .map(|(spec, input)| build_layer(spec, input, init, rng, false))
            .collect();
        Ok(Network {
            input: arch.input,
            layers,
            head: arch.head(),
        })
    }

    /// A network of `arch` with every tensor taken from `fetch(name, shape)` (names as in
    /// [`named_params`](Network::named_params) and [`named_buffers`](Network::named_buffers)):
    /// how a model file is read back. Each tensor is asked for with the shape the architecture
    /// gives it, before the layer is built, so nothing is allocated for a layer whose tensors
    /// are missing.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) if the architecture does not fit its input, or
    /// the first error `fetch` returns.
    pub fn from_tensors(
        arch: &Architecture,
        mut fetch: impl FnMut(&str, &[usize]) -> Result<ArrayD<f32>>,
    ) -> Result<Self> {
        let inputs = arch.inputs()?;
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for (spec, input) in arch.layers().into_iter().zip(inputs) {
            let n = counts.entry(spec.kind()).or_insert(0);
            *n += 1;
            let shapes = spec.tensor_shapes(input);
            let mut get = |(name, shape): &(&str, Vec<usize>)| {
                fetch(&format!("{}{n}.{name}", spec.kind()), shape)
            };
            let params = shapes
                .params
                .iter()
                .map(&mut get)
                .collect::<Result<Vec<_>>>()?;
            let buffers = shapes
                .buffers
                .iter()
                .map(&mut get)
                .collect::<Result<Vec<_>>>()?;
            let mut layer = build_layer(spec, input, Init::He, &mut Mt19937::new(0), true);
            for (mut dst, src) in layer.params_mut().into_iter().zip(&params) {
                dst.assign(src);
            }
            for (mut dst, src) in layer.buffers_mut().into_iter().zip(&buffers) {
                dst.assign(src);
            }
            layers.push(layer);
        }
        Ok(Network {
            input: arch.input,
            layers,
            head: arch.head(),
        })
    }

    /// A network from trained dense layers (input layer first), ReLU between them: what a
    /// version-1 model file holds.
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
            input: Geometry::flat(input_units),
            layers,
            head,
        }
    }

    /// The same network reading its input as `input` (which must have as many values): a
    /// version-1 file stores only the input width, the image size gives the geometry.
    ///
    /// # Panics
    /// If `input` has another number of values.
    pub fn with_input(mut self, input: Geometry) -> Self {
        assert_eq!(
            input.len(),
            self.input.len(),
            "input {input} has another size"
        );
        self.input = input;
        self
    }

    /// The input geometry.
    pub fn input(&self) -> Geometry {
        self.input
    }

    /// The input width.
    pub fn input_units(&self) -> usize {
        self.input.len()
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

    /// Every layer as an architecture names it, the head's dense layer last.
    pub fn specs(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.spec()).collect()
    }

    /// The architecture this network was built from (weights aside).
    pub fn architecture(&self) -> Architecture {
        let mut body = self.specs();
        let outputs = match body.pop() {
            Some(LayerSpec::Dense { units }) => units,
            _ => 0,
        };
        Architecture {
            input: self.input,
            body,
            outputs,
        }
    }

    /// Whether the network is the document's kind: dense layers with ReLU (and dropout)
    /// between them, which the version-1 model format describes.
    pub fn is_dense_stack(&self) -> bool {
        !self.specs().iter().any(LayerSpec::is_beyond_dense)
    }

    /// Each layer's output geometry, in order.
    pub fn geometries(&self) -> Vec<Geometry> {
        let mut g = self.input;
        self.layers
            .iter()
            .map(|l| {
                g = l.output(g);
                g
            })
            .collect()
    }

    /// Every dense layer width, input first (the document's `layers_dimensions`).
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.input.len()];
        for (layer, g) in self.layers.iter().zip(self.geometries()) {
            if layer.kind() == "dense" {
                sizes.push(g.len());
            }
        }
        sizes
    }

    /// Each layer's name in summaries and model files: its kind and its number among the
    /// layers of that kind (`conv1`, `batchnorm1`, `conv2`, ..., `dense1`).
    pub fn layer_names(&self) -> Vec<String> {
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        self.layers
            .iter()
            .map(|l| {
                let n = seen.entry(l.kind()).or_insert(0);
                *n += 1;
                format!("{}{n}", l.kind())
            })
            .collect()
    }

    /// Keras's `model.summary()`: each layer's output geometry and parameter counts.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    /// Runs layers `start..` on `x`, which must be the input of layer `start`
    /// (`(batch, features)` when `start == 0`).
    pub fn forward_from<'x>(
        &self,
        start: usize,
        x: impl Into<Rows<'x>>,
        mode: &mut Mode<'_>,
    ) -> Pass {
        let x = x.into();
        let mut outputs: Vec<Array2<f32>> = Vec::with_capacity(self.layers.len() - start);
        let mut saved = Vec::with_capacity(self.layers.len() - start);
        for layer in &self.layers[start..] {
            let (y, s) = match outputs.last() {
                None => layer.forward_rows(x, mode),
                Some(input) => layer.forward(input.view(), mode),
            };
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
    pub fn forward<'x>(&self, x: impl Into<Rows<'x>>, mode: &mut Mode<'_>) -> Pass {
        self.forward_from(0, x, mode)
    }

    /// Backward through the layers `pass` ran, from `dlogits = ∂cost/∂logits (batch, outputs)`.
    ///
    /// `x` is the input the pass started from. Returns the gradients of the parameters of
    /// layers `pass.start..` (in [`params_mut`](Network::params_mut) order) and, if `need_dx`,
    /// ∂cost/∂x. The input images' gradient is never needed: pass `false` for them.
    pub fn backward<'x>(
        &self,
        x: impl Into<Rows<'x>>,
        pass: &Pass,
        dlogits: Array2<f32>,
        need_dx: bool,
    ) -> (Vec<ArrayD<f32>>, Option<Array2<f32>>) {
        let x = x.into();
        let mut grads_rev: Vec<Vec<ArrayD<f32>>> = Vec::with_capacity(pass.outputs.len());
        let mut dy = dlogits;
        for (i, layer) in self.layers[pass.start..].iter().enumerate().rev() {
            let want_dx = i > 0 || need_dx;
            let (y, saved) = (pass.outputs[i].view(), &pass.saved[i]);
            let back = if i == 0 {
                layer.backward_rows(x, y, saved, dy, want_dx)
            } else {
                layer.backward(pass.outputs[i - 1].view(), y, saved, dy, want_dx)
            };
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

    /// Inference logits for `x (batch, features)`, keeping only the current layer's output
    /// (no [`Pass`]), in passes of as many rows as keep the largest activation within
    /// [`INFERENCE_VALUES`].
    pub fn logits<'x>(&self, x: impl Into<Rows<'x>>) -> Array2<f32> {
        let x = x.into();
        let widest = self
            .geometries()
            .iter()
            .map(Geometry::len)
            .max()
            .unwrap_or(1);
        let rows = (INFERENCE_VALUES / widest.max(1)).clamp(1, 4096);
        let outputs = self.geometries().last().map_or(0, Geometry::len);
        let mut logits = Array2::<f32>::zeros((x.nrows(), outputs));
        for (start, mut out) in logits
            .axis_chunks_iter_mut(ndarray::Axis(0), rows)
            .enumerate()
            .map(|(i, out)| (i * rows, out))
        {
            let x = x.slice(start, start + out.nrows());
            let mut a: Option<Array2<f32>> = None;
            for layer in &self.layers {
                let (y, _) = match &a {
                    None => layer.forward_rows(x, &mut Mode::Infer),
                    Some(input) => layer.forward(input.view(), &mut Mode::Infer),
                };
                if let Some(old) = a.replace(y) {
                    recycle::give(old);
                }
            }
            if let Some(a) = a {
                out.assign(&a);
                recycle::give(a);
            }
        }
        logits
    }

    /// Class probabilities for `x (batch, features)`: `(batch, 1)` = P(positive) with the
    /// sigmoid head, `(batch, classes)` with softmax. Inference mode (no dropout).
    pub fn probabilities<'x>(&self, x: impl Into<Rows<'x>>) -> Array2<f32> {
        self.head.probabilities(self.logits(x).view())
    }

    /// Hands a training pass back to the layers it ran, so those with state outside the
    /// gradients (batch norm's running statistics) can update it.
    pub fn absorb(&mut self, pass: &Pass) {
        for (layer, saved) in self.layers[pass.start..].iter_mut().zip(&pass.saved) {
            layer.absorb(saved);
        }
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

    /// Every trainable parameter with its file name (`dense1.weight`, `conv1.bias`, ...).
    pub fn named_params(&self) -> Vec<(String, ArrayViewD<'_, f32>)> {
        self.named(|l| l.params())
    }

    /// Every buffer (state saved with the model, not trained) with its file name
    /// (`batchnorm1.running_mean`, ...).
    pub fn named_buffers(&self) -> Vec<(String, ArrayViewD<'_, f32>)> {
        self.named(|l| l.buffers())
    }

    /// Every buffer, mutable, in [`named_buffers`](Network::named_buffers) order.
    pub fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.buffers_mut())
            .collect()
    }

    fn named<'a>(
        &'a self,
        arrays: impl Fn(&'a dyn Layer) -> Vec<(&'static str, ArrayViewD<'a, f32>)>,
    ) -> Vec<(String, ArrayViewD<'a, f32>)> {
        self.layers
            .iter()
            .zip(self.layer_names())
            .flat_map(|(layer, layer_name)| {
                arrays(layer.as_ref())
                    .into_iter()
                    .map(move |(name, p)| (format!("{layer_name}.{name}"), p))
            })
            .collect()
    }

    /// Whether every parameter and buffer is a finite number (no NaN or infinity).
    pub fn is_finite(&self) -> bool {
        self.named_params()
            .iter()
            .chain(&self.named_buffers())
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
