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
//! **Layers.** One file per kind ([`dense`], [`conv`], [`batchnorm`], [`activation`] (ReLU),
//! [`pool`] (max-pooling), [`gap`], [`dropout`], [`residual`]), each holding the kind's
//! settings type (its text token, checks, geometry, tensor shapes, construction: see
//! [`spec::Kind`]) and its [`Layer`] impl: a forward/backward pair side by side, with what
//! the forward pass keeps for backward as a typed value of its own. A residual block is a
//! layer made of layers. The output non-linearity and the cost are fused in
//! [`Head`](crate::loss::Head) for numerical stability.
//!
//! **Network.** [`Network`] holds the layers and the head, built from an [`Architecture`]
//! (see [`spec`] for its text form) whose geometries are checked to chain. Its passes are
//! [`sequence`]'s: a forward pass keeps every layer's output in a [`Pass`]; the backward pass
//! walks it in reverse, and [`Network::absorb`] hands a training pass back so batch norm can
//! update its running statistics. [`Network::split_first`] is the seam for training code that
//! computes the first layer its own way (the exact Gram path): it gets the first layer and
//! the rest as a sequence.
//!
//! **Inference.** [`Network::logits`] runs the layers as [`fused`] rewrites them once (and
//! again after any change to the weights): batch norm folded into the conv before it, and
//! each conv's bias, ReLU and max-pool applied while its output is still in cache. The
//! layer-by-layer pass ([`sequence::infer`]) is its oracle.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod fused;
pub mod gap;
mod geometry;
#[cfg(test)]
mod gradcheck;
mod im2col;
mod init;
pub mod layer;
mod mt19937;
pub mod pool;
pub mod recycle;
pub mod residual;
mod rows;
pub mod sequence;
pub mod spec;
mod summary;
pub mod winograd;

pub use activation::Relu;
pub use batchnorm::BatchNorm;
pub use conv::{
    Algorithm, Conv2d, reference_backward as conv_reference_backward,
    reference_forward as conv_reference_forward,
};
pub use dense::Dense;
pub use dropout::Dropout;
pub use gap::GlobalAvgPool;
pub use geometry::Geometry;
pub use init::Init;
pub use layer::{AnyLayer, Backward, BoxedLayer, Layer, Mode, Param};
pub use mt19937::Mt19937;
pub use pool::MaxPool2d;
pub use residual::Residual;
pub use rows::Rows;
pub use sequence::Pass;
pub use spec::{Architecture, LayerSpec};
pub use summary::{Summary, SummaryRow, thousands};

use crate::Result;
use crate::loss::Head;
use fused::Fused;
use ndarray::{Array2, ArrayD, ArrayViewMutD};
use spec::{Draw, numbered};
use std::sync::OnceLock;

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

/// Layers, input geometry first, and an output head.
#[derive(Debug, Clone)]
pub struct Network {
    input: Geometry,
    layers: Vec<BoxedLayer>,
    head: Head,
    /// The layers rewritten for inference ([`fused`]), made on first use and dropped by every
    /// method that can change a weight or a running statistic.
    fused: OnceLock<Option<Fused>>,
}

impl Network {
    /// A freshly initialised network: weights drawn by `init` from `rng` layer by layer (the
    /// document's order: `W1`, `W2`, ...), zero biases, batch norms at γ = 1, β = 0.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the first layer whose settings are
    /// invalid or whose input geometry does not fit (a pool on a 1-pixel image, say).
    pub fn new(arch: &Architecture, init: Init, rng: &mut Mt19937) -> Result<Self> {
        let inputs = arch.inputs()?;
        let mut draw = Draw::new(init, rng);
        let layers = arch
            .layers()
            .iter()
            .zip(inputs)
            .map(|(spec, input)| spec.build(input, &mut draw))
            .collect();
        Ok(Network::assemble(arch.input, layers, arch.head()))
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
        let specs = arch.layers();
        let inputs = arch.inputs()?;
        let names = numbered(specs.iter().map(LayerSpec::kind));
        let mut layers: Vec<BoxedLayer> = Vec::new();
        for ((spec, input), name) in specs.iter().zip(inputs).zip(names) {
            let shapes = spec.tensors(input);
            let mut get =
                |(tensor, shape): &(String, Vec<usize>)| fetch(&format!("{name}.{tensor}"), shape);
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
            let mut layer = spec.build(input, &mut Draw::zeroed(&mut Mt19937::new(0)));
            for (mut dst, src) in layer.params_mut().into_iter().zip(&params) {
                dst.assign(src);
            }
            for (mut dst, src) in layer.buffers_mut().into_iter().zip(&buffers) {
                dst.assign(src);
            }
            layers.push(layer);
        }
        Ok(Network::assemble(arch.input, layers, arch.head()))
    }

    /// A network from trained dense layers (input layer first), ReLU between them: what a
    /// version-1 model file holds.
    ///
    /// # Panics
    /// If consecutive layers' shapes do not chain.
    pub fn from_dense(dense: Vec<Dense>, head: Head) -> Self {
        let input_units = dense.first().map_or(0, |d| d.weight.ncols());
        let count = dense.len();
        let mut layers: Vec<BoxedLayer> = Vec::new();
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
                layers.push(Box::new(Relu::new(Geometry::flat(units))));
            }
        }
        Network::assemble(Geometry::flat(input_units), layers, head)
    }

    fn assemble(input: Geometry, layers: Vec<BoxedLayer>, head: Head) -> Self {
        Network {
            input,
            layers,
            head,
            fused: OnceLock::new(),
        }
    }

    /// The layers rewritten for inference, made now if they have not been since the last
    /// change; `None` when there is nothing to fuse.
    fn fused(&self) -> Option<&Fused> {
        self.fused.get_or_init(|| Fused::new(&self.layers)).as_ref()
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
    pub fn layers(&self) -> &[BoxedLayer] {
        &self.layers
    }

    /// The first layer and the rest as a sequence: the seam for a training path that
    /// computes the first layer its own way and runs the rest through [`sequence`].
    pub fn split_first(&self) -> Option<(&dyn AnyLayer, &sequence::Layers)> {
        let (first, rest) = self.layers.split_first()?;
        Some((first.as_ref(), rest))
    }

    /// The same, mutable.
    pub fn split_first_mut(&mut self) -> Option<(&mut dyn AnyLayer, &mut sequence::Layers)> {
        self.fused.take();
        let (first, rest) = self.layers.split_first_mut()?;
        Some((first.as_mut(), rest))
    }

    /// Every layer as an architecture names it, the head's dense layer last.
    pub fn specs(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.spec()).collect()
    }

    /// The architecture this network was built from (weights aside).
    pub fn architecture(&self) -> Architecture {
        let mut body = self.specs();
        let outputs = match body.pop() {
            Some(LayerSpec::Dense(d)) => d.units,
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

    /// Whether some layer nests others (a residual block): what model format version 3
    /// describes.
    pub fn is_nested(&self) -> bool {
        self.specs().iter().any(LayerSpec::is_nested)
    }

    /// Each layer's output geometry, in order.
    pub fn geometries(&self) -> Vec<Geometry> {
        self.layers.iter().map(|l| l.output()).collect()
    }

    /// Every dense layer width, input first (the document's `layers_dimensions`).
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes = vec![self.input.len()];
        for layer in &self.layers {
            if let LayerSpec::Dense(d) = layer.spec() {
                sizes.push(d.units);
            }
        }
        sizes
    }

    /// Each layer's name in summaries and model files: its kind and its number among the
    /// layers of that kind (`conv1`, `batchnorm1`, `conv2`, ..., `residual1`, `dense1`).
    pub fn layer_names(&self) -> Vec<String> {
        sequence::names(&self.layers)
    }

    /// Keras's `model.summary()`: each layer's output geometry and parameter counts, blocks
    /// with their layers beneath them.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    /// The whole forward pass: `x (batch, features)` → pass whose last output is the logits.
    pub fn forward<'x>(&self, x: impl Into<Rows<'x>>, mode: &mut Mode<'_>) -> Pass {
        sequence::forward(&self.layers, x.into(), mode)
    }

    /// Backward through the whole network along `pass`, from `dlogits = ∂cost/∂logits
    /// (batch, outputs)`: the gradients of every parameter (in [`params_mut`] order) and, if
    /// `need_dx`, ∂cost/∂x. The input images' gradient is never needed: pass `false` for them.
    ///
    /// [`params_mut`]: Network::params_mut
    pub fn backward<'x>(
        &self,
        x: impl Into<Rows<'x>>,
        pass: &Pass,
        dlogits: Array2<f32>,
        need_dx: bool,
    ) -> (Vec<ArrayD<f32>>, Option<Array2<f32>>) {
        sequence::backward(&self.layers, x.into(), pass, dlogits, need_dx)
    }

    /// Inference logits for `x (batch, features)`, keeping only the current layer's output
    /// (no [`Pass`]), with batch norm folded into the convs and each conv's bias, ReLU and
    /// max-pool in one step ([`fused`]), in passes of as many rows as keep the largest activation within
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
            let rows = x.slice(start, start + out.nrows());
            let part = match self.fused() {
                Some(fused) => fused.infer(rows),
                None => sequence::infer(&self.layers, rows),
            };
            out.assign(&part);
            recycle::give(part);
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
        self.fused.take();
        sequence::absorb(&mut self.layers, pass);
    }

    /// Every trainable parameter, named by where it lives (`dense1.weight`, `conv1.bias`,
    /// `residual1.shortcut.conv1.weight`), with whether it is decayed.
    pub fn params(&self) -> Vec<Param<'_>> {
        sequence::params(&self.layers)
    }

    /// Every trainable parameter, mutable, in [`params`](Network::params) order.
    pub fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        self.fused.take();
        sequence::params_mut(&mut self.layers)
    }

    /// Every trainable parameter with its file name.
    pub fn named_params(&self) -> Vec<(String, ndarray::ArrayViewD<'_, f32>)> {
        self.params()
            .into_iter()
            .map(|p| (p.name, p.value))
            .collect()
    }

    /// For each parameter (in order): is it a weight, which L2 and AdamW's decay apply to?
    pub fn decay_mask(&self) -> Vec<bool> {
        self.params().iter().map(|p| p.decay).collect()
    }

    /// Every buffer (state saved with the model, not trained) with its file name
    /// (`batchnorm1.running_mean`, ...).
    pub fn named_buffers(&self) -> Vec<(String, ndarray::ArrayViewD<'_, f32>)> {
        sequence::buffers(&self.layers)
    }

    /// Every buffer, mutable, in [`named_buffers`](Network::named_buffers) order.
    pub fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        self.fused.take();
        sequence::buffers_mut(&mut self.layers)
    }

    /// Whether every parameter and buffer is a finite number (no NaN or infinity).
    pub fn is_finite(&self) -> bool {
        self.named_params()
            .iter()
            .chain(&self.named_buffers())
            .all(|(_, p)| p.iter().all(|v| v.is_finite()))
    }

    /// Σ‖W‖² over the weights (biases excluded), for the L2 cost term.
    pub fn weight_norm_sq(&self) -> f64 {
        sequence::weight_norm_sq(&self.layers)
    }
}
