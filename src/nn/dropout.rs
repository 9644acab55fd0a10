//! Inverted dropout for hidden layers: off at inference, no rescaling needed there.

use super::{Backward, Geometry, Layer, LayerSpec, Mode, Saved};
use ndarray::{Array2, ArrayView2};
use rand::RngExt;

/// During training each unit is zeroed with probability `p` and the survivors are scaled by
/// `1/(1-p)`, so the expected activation is unchanged and inference is the identity.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f32,
}

impl Dropout {
    /// Dropout with drop probability `p`.
    ///
    /// # Panics
    /// Unless `0 <= p < 1` (configurations are checked before this is called).
    pub fn new(p: f32) -> Self {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout probability must be in [0, 1), got {p}"
        );
        Dropout { p }
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec::Dropout { p: self.p }
    }

    fn output(&self, input: Geometry) -> Geometry {
        input
    }

    /// `(batch, units)` → `(batch, units)`. In training, saves the mask (0 or `1/(1-p)` per
    /// element); at inference, passes `x` through.
    fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> (Array2<f32>, Saved) {
        match mode {
            Mode::Infer => (x.to_owned(), None),
            Mode::Train(rng) => {
                let keep = 1.0 / (1.0 - self.p);
                let mask = Array2::from_shape_simple_fn(x.dim(), || {
                    if rng.random::<f32>() < self.p {
                        0.0
                    } else {
                        keep
                    }
                });
                (&x * &mask, Some(mask))
            }
        }
    }

    /// `dx = dy ⊙ mask` (the identity when no mask was saved).
    fn backward(
        &self,
        _x: ArrayView2<'_, f32>,
        _y: ArrayView2<'_, f32>,
        saved: &Saved,
        dy: Array2<f32>,
        _need_dx: bool,
    ) -> Backward {
        let dx = match saved {
            Some(mask) => dy * mask,
            None => dy,
        };
        Backward {
            dx: Some(dx),
            grads: Vec::new(),
        }
    }

    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn dropout_keeps_the_expected_value_and_is_off_at_inference() {
        let layer = Dropout::new(0.25);
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
