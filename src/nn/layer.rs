//! What every layer is: a forward/backward pair over `(batch, features)` rows, with what its
//! forward pass keeps for its backward pass as a typed value of its own.
//!
//! A layer file implements [`Layer`], whose [`Saved`](Layer::Saved) type says what the
//! training pass keeps (a dropout mask, batch statistics, a patch matrix; `()` for nothing).
//! Networks hold layers of many kinds, so they see each one through [`AnyLayer`], which every
//! [`Layer`] is automatically: the saved value travels boxed and comes back to the layer that
//! made it as its own type. Nothing outside the layer ever reads it.

use super::{Geometry, LayerSpec, Rows};
use crate::Rng;
use crate::parallel::Group;
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMutD};
use std::any::Any;

/// Whether a forward pass is for training (dropout on, batch statistics, randomness from the
/// given generator) or for inference (deterministic).
pub enum Mode<'r> {
    /// Inference: dropout is the identity, batch norm uses its running statistics.
    Infer,
    /// Training: training-only behaviour is on and draws from this generator.
    Train(&'r mut Rng),
    /// Training with batch statistics taken over the whole batch that `group`'s processes
    /// share (`--sync-bn`): batch norm sums its statistics and its gradient sums across them.
    TrainSynced(&'r mut Rng, &'r Group),
}

impl Mode<'_> {
    /// Whether this is a training pass.
    pub fn is_train(&self) -> bool {
        !matches!(self, Mode::Infer)
    }

    /// The training pass's generator.
    pub fn rng(&mut self) -> Option<&mut Rng> {
        match self {
            Mode::Infer => None,
            Mode::Train(rng) | Mode::TrainSynced(rng, _) => Some(rng),
        }
    }

    /// The processes whose batch statistics are shared, in a synchronised training pass.
    pub fn synced(&self) -> Option<&Group> {
        match self {
            Mode::TrainSynced(_, group) => Some(group),
            _ => None,
        }
    }
}

/// The result of a layer's backward pass.
pub struct Backward {
    /// ∂cost/∂input, `(batch, units_in)`; `None` unless asked for.
    pub dx: Option<Array2<f32>>,
    /// ∂cost/∂parameter for each of [`Layer::params`], in the same order and shapes.
    pub grads: Vec<ArrayD<f32>>,
}

/// A trainable tensor of a layer, named by where it lives (`weight`, or `conv1.weight` inside
/// a block).
pub struct Param<'a> {
    /// Its name relative to the layer that reports it.
    pub name: String,
    /// Its values.
    pub value: ArrayViewD<'a, f32>,
    /// Whether it is a weight (L2 and AdamW's decay apply) rather than a bias, a scale or a
    /// shift (they do not).
    pub decay: bool,
}

impl<'a> Param<'a> {
    /// A weight: decayed by L2 and AdamW.
    pub fn weight(name: &str, value: ArrayViewD<'a, f32>) -> Self {
        Param {
            name: name.to_string(),
            value,
            decay: true,
        }
    }

    /// A bias, scale or shift: not decayed.
    pub fn other(name: &str, value: ArrayViewD<'a, f32>) -> Self {
        Param {
            name: name.to_string(),
            value,
            decay: false,
        }
    }
}

/// A named tensor that is saved with the model but not trained (batch norm's running
/// statistics).
pub type Buffer<'a> = (String, ArrayViewD<'a, f32>);

/// A forward/backward pair. Implementations keep the two methods side by side.
pub trait Layer: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// What a forward pass keeps for backward beyond the input and output (which the pass
    /// keeps): the layer's own type, `()` for nothing.
    type Saved: Send + Sync + 'static;

    /// The layer's kind and settings, as an architecture names it.
    fn spec(&self) -> LayerSpec;

    /// The output geometry.
    fn output(&self) -> Geometry;

    /// `x (batch, units_in)` → `(batch, units_out)`, plus what backward needs.
    fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> (Array2<f32>, Self::Saved);

    /// Given the input `x` and output `y` of [`forward`](Layer::forward), what it saved, and
    /// `dy = ∂cost/∂y (batch, units_out)`: the parameter gradients and, if `need_dx`,
    /// `∂cost/∂x (batch, units_in)`.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayView2<'_, f32>,
        saved: &Self::Saved,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward;

    /// [`forward`](Layer::forward) on a network's input, which may be image bytes. By
    /// default the bytes are scaled to values first; a layer that can read them directly
    /// overrides this.
    fn forward_rows(&self, x: Rows<'_>, mode: &mut Mode<'_>) -> (Array2<f32>, Self::Saved) {
        self.forward(x.values().view(), mode)
    }

    /// [`backward`](Layer::backward) of a layer that ran [`forward_rows`](Layer::forward_rows).
    fn backward_rows(
        &self,
        x: Rows<'_>,
        y: ArrayView2<'_, f32>,
        saved: &Self::Saved,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        self.backward(x.values().view(), y, saved, dy, need_dx)
    }

    /// The trainable parameters, named; empty for most layers.
    fn params(&self) -> Vec<Param<'_>> {
        Vec::new()
    }

    /// The same parameters, mutable, in the same order.
    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Vec::new()
    }

    /// State saved with the model but not trained by gradients, named; empty for most layers.
    fn buffers(&self) -> Vec<Buffer<'_>> {
        Vec::new()
    }

    /// The same state, mutable, in the same order.
    fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Vec::new()
    }

    /// Takes in what a training forward pass saved, to update [`buffers`](Layer::buffers).
    fn absorb(&mut self, _saved: &Self::Saved) {}

    /// The layers this one is made of, named as in parameter names (`conv1`,
    /// `shortcut.conv1`); empty for a plain layer.
    fn children(&self) -> Vec<(String, &dyn AnyLayer)> {
        Vec::new()
    }
}

/// A layer of any kind, boxed: what [`Kind::build`](super::spec::Kind::build) makes.
pub type BoxedLayer = Box<dyn AnyLayer>;

/// A saved value, boxed: what a [`Pass`](super::Pass) holds for each layer.
pub type Kept = Box<dyn Any + Send + Sync>;

/// Any [`Layer`], its saved value boxed: how networks and blocks hold layers of many kinds.
/// Implemented for every [`Layer`]; see that trait for what each method does.
pub trait AnyLayer: Any + Send + Sync + std::fmt::Debug {
    /// See [`Layer::spec`].
    fn spec(&self) -> LayerSpec;
    /// See [`Layer::output`].
    fn output(&self) -> Geometry;
    /// See [`Layer::forward`].
    fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> (Array2<f32>, Kept);
    /// See [`Layer::forward_rows`].
    fn forward_rows(&self, x: Rows<'_>, mode: &mut Mode<'_>) -> (Array2<f32>, Kept);
    /// See [`Layer::backward`]; `saved` must come from this layer's forward pass.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayView2<'_, f32>,
        saved: &Kept,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward;
    /// See [`Layer::backward_rows`].
    fn backward_rows(
        &self,
        x: Rows<'_>,
        y: ArrayView2<'_, f32>,
        saved: &Kept,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward;
    /// See [`Layer::params`].
    fn params(&self) -> Vec<Param<'_>>;
    /// See [`Layer::params_mut`].
    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>>;
    /// See [`Layer::buffers`].
    fn buffers(&self) -> Vec<Buffer<'_>>;
    /// See [`Layer::buffers_mut`].
    fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>>;
    /// See [`Layer::absorb`].
    fn absorb(&mut self, saved: &Kept);
    /// See [`Layer::children`].
    fn children(&self) -> Vec<(String, &dyn AnyLayer)>;
    /// A boxed copy (used to keep the best weights seen so far).
    fn clone_box(&self) -> Box<dyn AnyLayer>;
    /// The layer as [`Any`], for code that needs one concrete kind (the Gram path's dense
    /// first layer).
    fn as_any(&self) -> &dyn Any;
    /// The same, mutable.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The saved value `kept` as `L`'s own type.
///
/// # Panics
/// If it came from another kind of layer: a programming error in the network's bookkeeping.
fn own<L: Layer>(kept: &Kept) -> &L::Saved {
    #[allow(
        clippy::expect_used,
        reason = "a pass hands each layer back the value that layer saved"
    )]
    kept.downcast_ref::<L::Saved>()
        .expect("a layer's backward pass got another layer's saved value")
}

impl<L: Layer> AnyLayer for L {
    fn spec(&self) -> LayerSpec {
        Layer::spec(self)
    }
    fn output(&self) -> Geometry {
        Layer::output(self)
    }
    fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> (Array2<f32>, Kept) {
        let (y, saved) = Layer::forward(self, x, mode);
        (y, Box::new(saved))
    }
    fn forward_rows(&self, x: Rows<'_>, mode: &mut Mode<'_>) -> (Array2<f32>, Kept) {
        let (y, saved) = Layer::forward_rows(self, x, mode);
        (y, Box::new(saved))
    }
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayView2<'_, f32>,
        saved: &Kept,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        Layer::backward(self, x, y, own::<L>(saved), dy, need_dx)
    }
    fn backward_rows(
        &self,
        x: Rows<'_>,
        y: ArrayView2<'_, f32>,
        saved: &Kept,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        Layer::backward_rows(self, x, y, own::<L>(saved), dy, need_dx)
    }
    fn params(&self) -> Vec<Param<'_>> {
        Layer::params(self)
    }
    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Layer::params_mut(self)
    }
    fn buffers(&self) -> Vec<Buffer<'_>> {
        Layer::buffers(self)
    }
    fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        Layer::buffers_mut(self)
    }
    fn absorb(&mut self, saved: &Kept) {
        Layer::absorb(self, own::<L>(saved));
    }
    fn children(&self) -> Vec<(String, &dyn AnyLayer)> {
        Layer::children(self)
    }
    fn clone_box(&self) -> Box<dyn AnyLayer> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Clone for Box<dyn AnyLayer> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}
