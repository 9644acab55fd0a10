//! Hidden-layer activation: ReLU. (The output non-linearities, sigmoid and softmax, live with
//! the cost in [`crate::loss`], where they are fused for stability.)

use super::layer::{Backward, BoxedLayer, Layer, Mode};
use super::spec::{Draw, Kind, LayerSpec};
use super::{Geometry, recycle};
use ndarray::{Array2, ArrayView2, Zip};

/// ReLU's settings (none): `relu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReluSpec {}

impl Kind for ReluSpec {
    const NAME: &'static str = "relu";

    fn token(&self) -> String {
        "relu".into()
    }

    fn output(&self, input: Geometry) -> Result<Geometry, String> {
        Ok(input)
    }

    fn build(&self, input: Geometry, _draw: &mut Draw<'_>) -> BoxedLayer {
        Box::new(Relu { shape: input })
    }

    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        (token == "relu").then(|| Ok(vec![LayerSpec::Relu(ReluSpec {})]))
    }
}

/// Activations of at least this many values are computed on every thread.
const PARALLEL_MIN_LEN: usize = 1 << 16;

/// `relu(z) = max(0, z)`, elementwise. No exponentials, so it is cheap; it is exactly zero for
/// negative inputs, which makes hidden activations sparse.
pub fn relu(z: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut a = recycle::scratch(z.dim());
    let zip = Zip::from(&mut a).and(&z);
    if z.len() >= PARALLEL_MIN_LEN {
        zip.par_for_each(|a, &z| *a = z.max(0.0));
    } else {
        zip.for_each(|a, &z| *a = z.max(0.0));
    }
    a
}

/// `dz = da` where the unit was active (`a > 0`, equivalently `z > 0`), else 0. The document
/// zeroes `dz` where `z <= 0`; testing the output instead lets us keep no copy of `z`.
pub fn relu_backward(a: ArrayView2<'_, f32>, mut da: Array2<f32>) -> Array2<f32> {
    // A select, not a branch, so the loop vectorises.
    let zip = Zip::from(&mut da).and(&a);
    let gate = |d: &mut f32, &a: &f32| *d = if a > 0.0 { *d } else { 0.0 };
    if a.len() >= PARALLEL_MIN_LEN {
        zip.par_for_each(gate);
    } else {
        zip.for_each(gate);
    }
    da
}

/// The ReLU layer: `(batch, units)` → `(batch, units)`, read as `shape`.
#[derive(Debug, Clone, Copy)]
pub struct Relu {
    shape: Geometry,
}

impl Relu {
    /// ReLU over rows read as `shape`.
    pub fn new(shape: Geometry) -> Self {
        Relu { shape }
    }
}

impl Layer for Relu {
    type Saved = ();

    fn spec(&self) -> LayerSpec {
        LayerSpec::Relu(ReluSpec {})
    }

    fn output(&self) -> Geometry {
        self.shape
    }

    /// `a = max(z, 0)`. Saves nothing: backward reads the output.
    fn forward(&self, z: ArrayView2<'_, f32>, _mode: &mut Mode<'_>) -> (Array2<f32>, ()) {
        (relu(z), ())
    }

    /// `dz = da` where `a > 0`, else 0.
    fn backward(
        &self,
        _z: ArrayView2<'_, f32>,
        a: ArrayView2<'_, f32>,
        _saved: &(),
        da: Array2<f32>,
        _need_dx: bool,
    ) -> Backward {
        Backward {
            dx: Some(relu_backward(a, da)),
            grads: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn relu_and_its_gradient_follow_the_sign() {
        let z = array![[-1.0f32, 0.0, 2.5]];
        let a = relu(z.view());
        assert_eq!(a, array![[0.0, 0.0, 2.5]]);
        let dz = relu_backward(a.view(), array![[7.0, 7.0, 7.0]]);
        assert_eq!(dz, array![[0.0, 0.0, 7.0]]);
    }
}
