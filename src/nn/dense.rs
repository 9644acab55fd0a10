//! The dense (fully connected) layer: the document's `linear_forward` / `linear_backward`.

use super::layer::{Backward, BoxedLayer, Layer, Mode, Param};
use super::spec::{Draw, Kind, LayerSpec, TensorShapes, number};
use super::{Geometry, Rows, recycle};
use crate::linalg::{bytes, matmul, matmul_into};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMutD, Axis};

/// A dense layer's settings: `dense128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    /// Output units.
    pub units: usize,
}

impl Kind for DenseSpec {
    const NAME: &'static str = "dense";

    fn token(&self) -> String {
        format!("dense{}", self.units)
    }

    fn check(&self) -> Result<(), String> {
        if self.units == 0 {
            return Err(format!(
                "{}: a dense layer needs at least one unit",
                self.token()
            ));
        }
        Ok(())
    }

    fn output(&self, _input: Geometry) -> Result<Geometry, String> {
        Ok(Geometry::flat(self.units))
    }

    fn tensors(&self, input: Geometry) -> TensorShapes {
        TensorShapes::params(&[
            ("weight", vec![self.units, input.len()]),
            ("bias", vec![self.units]),
        ])
    }

    fn build(&self, input: Geometry, draw: &mut Draw<'_>) -> BoxedLayer {
        Box::new(Dense::new(draw.dense(self.units, input.len())))
    }

    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        let rest = token.strip_prefix("dense")?;
        Some(number(token, rest).map(|units| vec![LayerSpec::dense(units)]))
    }
}

/// `z = x · Wᵀ + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// `(units_out, units_in)`.
    pub weight: Array2<f32>,
    /// `(units_out,)`.
    pub bias: Array1<f32>,
}

impl Dense {
    /// A layer with the given weight `(units_out, units_in)` and zero bias.
    pub fn new(weight: Array2<f32>) -> Self {
        let bias = Array1::zeros(weight.nrows());
        Dense { weight, bias }
    }

    /// A layer from a weight `(units_out, units_in)` and a bias `(units_out,)`.
    ///
    /// # Panics
    /// If the bias length differs from the weight's row count.
    pub fn with_bias(weight: Array2<f32>, bias: Array1<f32>) -> Self {
        assert_eq!(
            weight.nrows(),
            bias.len(),
            "dense weight {:?} and bias {:?} disagree",
            weight.dim(),
            bias.dim()
        );
        Dense { weight, bias }
    }

    /// `x (batch, units_in)` → `z (batch, units_out)`.
    pub fn apply(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut z = matmul(x, self.weight.t());
        z += &self.bias;
        z
    }
}

impl Layer for Dense {
    type Saved = ();

    fn spec(&self) -> LayerSpec {
        LayerSpec::dense(self.weight.nrows())
    }

    fn output(&self) -> Geometry {
        Geometry::flat(self.weight.nrows())
    }

    /// `x (batch, units_in)` → `z = x · Wᵀ + b (batch, units_out)`. Saves nothing: backward
    /// needs only `x`, which the pass keeps.
    fn forward(&self, x: ArrayView2<'_, f32>, _mode: &mut Mode<'_>) -> (Array2<f32>, ()) {
        (self.apply(x), ())
    }

    /// `dz (batch, units_out)` → `dW = dzᵀ · x (units_out, units_in)`, `db = Σ_batch dz`,
    /// and `dx = dz · W (batch, units_in)` only if asked.
    ///
    /// The document divides by `m` here; we fold `1/m` into the cost gradient instead
    /// ([`Head::cost_gradient`](crate::loss::Head::cost_gradient)), which is the same maths.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        _z: ArrayView2<'_, f32>,
        _saved: &(),
        dz: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        // Every value is written by the product; the buffer is recycled (4 MB for the
        // tutorial's first layer, every step).
        let mut dw = recycle::scratch(self.weight.dim());
        matmul_into(dw.view_mut(), dz.t(), x, 1.0, false);
        let db = dz.sum_axis(Axis(0));
        let dx = need_dx.then(|| matmul(dz.view(), self.weight.view()));
        Backward {
            dx,
            grads: vec![dw.into_dyn(), db.into_dyn()],
        }
    }

    /// On image bytes: the same product, the bytes scaled block by block inside it.
    fn forward_rows(&self, x: Rows<'_>, mode: &mut Mode<'_>) -> (Array2<f32>, ()) {
        match x {
            Rows::Values(x) => self.forward(x, mode),
            Rows::Bytes(x) => {
                let mut z = Array2::<f32>::zeros((x.nrows(), self.weight.nrows()));
                bytes::unit_times(z.view_mut(), x, self.weight.t());
                z += &self.bias;
                (z, ())
            }
        }
    }

    fn backward_rows(
        &self,
        x: Rows<'_>,
        z: ArrayView2<'_, f32>,
        saved: &(),
        dz: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        match x {
            Rows::Values(x) => self.backward(x, z, saved, dz, need_dx),
            Rows::Bytes(x) => {
                let mut dw = recycle::scratch(self.weight.dim());
                bytes::times_unit(dw.view_mut(), dz.t(), x);
                let db = dz.sum_axis(Axis(0));
                let dx = need_dx.then(|| matmul(dz.view(), self.weight.view()));
                Backward {
                    dx,
                    grads: vec![dw.into_dyn(), db.into_dyn()],
                }
            }
        }
    }

    fn params(&self) -> Vec<Param<'_>> {
        vec![
            Param::weight("weight", self.weight.view().into_dyn()),
            Param::other("bias", self.bias.view().into_dyn()),
        ]
    }

    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        vec![
            self.weight.view_mut().into_dyn(),
            self.bias.view_mut().into_dyn(),
        ]
    }
}
