//! Weight initialisation. Biases always start at zero (the weights already break symmetry).

use crate::Rng;
use ndarray::Array2;
use rand::RngExt;
use rand_distr::StandardNormal;

/// How dense weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The document's: standard normal divided by `sqrt(fan_in)`.
    Document,
    /// He (Kaiming) normal: standard normal times `sqrt(2 / fan_in)`, suited to ReLU.
    He,
    /// Glorot (Xavier) uniform: `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`.
    Xavier,
}

impl Init {
    /// A `(fan_out, fan_in)` weight matrix drawn from `rng`, row by row.
    pub fn weights(self, fan_out: usize, fan_in: usize, rng: &mut Rng) -> Array2<f32> {
        match self {
            Init::Document => {
                let scale = 1.0 / (fan_in as f64).sqrt();
                Array2::from_shape_simple_fn((fan_out, fan_in), || {
                    (rng.sample::<f64, _>(StandardNormal) * scale) as f32
                })
            }
            Init::He => {
                let scale = (2.0 / fan_in as f64).sqrt();
                Array2::from_shape_simple_fn((fan_out, fan_in), || {
                    (rng.sample::<f64, _>(StandardNormal) * scale) as f32
                })
            }
            Init::Xavier => {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                Array2::from_shape_simple_fn((fan_out, fan_in), || {
                    rng.random_range(-limit..limit) as f32
                })
            }
        }
    }

    /// The lower-case name used on the command line and in model files.
    pub fn name(self) -> &'static str {
        match self {
            Init::Document => "document",
            Init::He => "he",
            Init::Xavier => "xavier",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn document_init_has_unit_variance_times_fan_in() {
        let mut rng = Rng::seed_from_u64(1);
        let w = Init::Document.weights(50, 400, &mut rng);
        let var = w.mapv(|v| f64::from(v) * f64::from(v)).mean().unwrap();
        // Expected variance 1/400.
        assert!(
            (var * 400.0 - 1.0).abs() < 0.05,
            "variance × fan_in = {}",
            var * 400.0
        );
        let he = Init::He.weights(50, 400, &mut rng);
        let var = he.mapv(|v| f64::from(v) * f64::from(v)).mean().unwrap();
        assert!(
            (var * 200.0 - 1.0).abs() < 0.05,
            "He variance × fan_in/2 = {}",
            var * 200.0
        );
        let x = Init::Xavier.weights(50, 400, &mut rng);
        let limit = (6.0f32 / 450.0).sqrt();
        assert!(x.iter().all(|v| v.abs() <= limit));
    }
}
