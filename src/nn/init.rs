//! Weight initialisation. Biases always start at zero (the weights already break symmetry).

use super::Mt19937;
use ndarray::Array2;

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
    /// A `(fan_out, fan_in)` weight matrix drawn from `rng`, row by row, computed in f64 and
    /// rounded to f32 as NumPy's `(np.random.randn(fan_out, fan_in) / np.sqrt(fan_in))
    /// .astype(np.float32)` is (and likewise `* np.sqrt(2 / fan_in)` for He,
    /// `np.random.uniform(-l, l, ...)` for Xavier).
    pub fn weights(self, fan_out: usize, fan_in: usize, rng: &mut Mt19937) -> Array2<f32> {
        self.draw((fan_out, fan_in), fan_in, fan_out, rng)
    }

    /// A conv weight `(c_out, c_in, k, k)`, flattened to `(c_out, c_in·k·k)`: drawn in that
    /// order (NumPy's `randn(c_out, c_in, k, k)`), with PyTorch's fans `c_in·k·k` in and
    /// `c_out·k·k` out.
    pub fn conv_weights(
        self,
        c_out: usize,
        c_in: usize,
        k: usize,
        rng: &mut Mt19937,
    ) -> Array2<f32> {
        self.draw((c_out, c_in * k * k), c_in * k * k, c_out * k * k, rng)
    }

    fn draw(
        self,
        shape: (usize, usize),
        fan_in: usize,
        fan_out: usize,
        rng: &mut Mt19937,
    ) -> Array2<f32> {
        match self {
            Init::Document => {
                let root = (fan_in as f64).sqrt();
                Array2::from_shape_simple_fn(shape, || (rng.normal() / root) as f32)
            }
            Init::He => {
                let scale = (2.0 / fan_in as f64).sqrt();
                Array2::from_shape_simple_fn(shape, || (rng.normal() * scale) as f32)
            }
            Init::Xavier => {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                Array2::from_shape_simple_fn(shape, || {
                    (-limit + 2.0 * limit * rng.uniform()) as f32
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

    #[test]
    fn document_init_has_unit_variance_times_fan_in() {
        let mut rng = Mt19937::new(1);
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
        assert!(x.iter().any(|&v| v < 0.0) && x.iter().any(|&v| v > 0.0));
        let limit = (6.0f32 / 450.0).sqrt();
        assert!(x.iter().all(|v| v.abs() <= limit));
    }

    #[test]
    fn document_init_draws_numpys_weights_for_the_same_seed() {
        // np.random.seed(3); (np.random.randn(4, 6) / np.sqrt(6)).astype(np.float32)[3]
        let w = Init::Document.weights(4, 6, &mut Mt19937::new(3));
        let expected: [f32; 6] = [
            0.401_049_82,
            -0.449_508_97,
            -0.483_793_23,
            -0.083_956_22,
            0.606_717_5,
            0.096_639_015,
        ];
        assert_eq!(w.row(3).to_vec(), expected.to_vec());
    }
}
