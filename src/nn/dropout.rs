//! Inverted dropout for hidden layers: off at inference, no rescaling needed there.

use super::Geometry;
use super::layer::{Backward, BoxedLayer, Layer, Mode};
use super::recycle::Pooled;
use super::spec::{Draw, Kind, LayerSpec};
use ndarray::{Array2, ArrayView2};
use rand::RngExt;

/// Dropout's settings: `dropout0.3`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSpec {
    /// Drop probability, in `(0, 1)`.
    pub p: f32,
}

impl Kind for DropoutSpec {
    const NAME: &'static str = "dropout";

    fn token(&self) -> String {
        format!("dropout{}", self.p)
    }

    fn check(&self) -> Result<(), String> {
        if !(self.p > 0.0 && self.p < 1.0) {
            return Err(format!(
                "{}: the dropout probability must be above 0 and below 1, got {}",
                self.token(),
                self.p
            ));
        }
        Ok(())
    }

    fn output(&self, input: Geometry) -> Result<Geometry, String> {
        Ok(input)
    }

    fn build(&self, input: Geometry, _draw: &mut Draw<'_>) -> BoxedLayer {
        Box::new(Dropout::new(self.p, input))
    }

    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        let rest = token.strip_prefix("dropout")?;
        Some(
            rest.parse::<f32>()
                .map(|p| vec![LayerSpec::dropout(p)])
                .map_err(|_| format!("{token:?}: {rest:?} is not a probability such as 0.3")),
        )
    }
}

/// During training each unit is zeroed with probability `p` and the survivors are scaled by
/// `1/(1-p)`, so the expected activation is unchanged and inference is the identity.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f32,
    shape: Geometry,
}

impl Dropout {
    /// Dropout with drop probability `p` over rows read as `shape`.
    ///
    /// # Panics
    /// Unless `0 <= p < 1` (configurations are checked before this is called).
    pub fn new(p: f32, shape: Geometry) -> Self {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout probability must be in [0, 1), got {p}"
        );
        Dropout { p, shape }
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }
}

/// What a training pass keeps: the mask, `0` or `1/(1-p)` per element.
#[derive(Debug)]
pub struct Mask(Pooled);

impl Layer for Dropout {
    /// The mask in training; nothing at inference.
    type Saved = Option<Mask>;

    fn spec(&self) -> LayerSpec {
        LayerSpec::dropout(self.p)
    }

    fn output(&self) -> Geometry {
        self.shape
    }

    /// `(batch, units)` → `(batch, units)`. In training, saves the mask (0 or `1/(1-p)` per
    /// element); at inference, passes `x` through.
    fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> (Array2<f32>, Option<Mask>) {
        match mode.rng() {
            None => (x.to_owned(), None),
            Some(rng) => {
                let keep = 1.0 / (1.0 - self.p);
                let mask = Array2::from_shape_simple_fn(x.dim(), || {
                    if rng.random::<f32>() < self.p {
                        0.0
                    } else {
                        keep
                    }
                });
                (&x * &mask, Some(Mask(Pooled(mask))))
            }
        }
    }

    /// `dx = dy ⊙ mask` (the identity when no mask was saved).
    fn backward(
        &self,
        _x: ArrayView2<'_, f32>,
        _y: ArrayView2<'_, f32>,
        saved: &Option<Mask>,
        dy: Array2<f32>,
        _need_dx: bool,
    ) -> Backward {
        let dx = match saved {
            Some(Mask(mask)) => dy * &**mask,
            None => dy,
        };
        Backward {
            dx: Some(dx),
            grads: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn dropout_keeps_the_expected_value_and_is_off_at_inference() {
        let layer = Dropout::new(0.25, Geometry::flat(100));
        let x = Array2::<f32>::ones((200, 100));
        let mut rng = crate::Rng::seed_from_u64(3);
        let (y, mask) = layer.forward(x.view(), &mut Mode::Train(&mut rng));
        let mean = y.mean().unwrap();
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f32 / y.len() as f32;
        assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
        assert!(mask.is_some());
        let (y, mask) = layer.forward(x.view(), &mut Mode::Infer);
        assert_eq!(y, x);
        assert!(mask.is_none());
    }
}
