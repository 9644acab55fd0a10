//! Global average pooling: each channel's whole image → one value, image by image in
//! parallel. No parameters, nothing saved.

use super::Geometry;
use super::layer::{Backward, BoxedLayer, Layer, Mode};
use super::pool::per_image;
use super::spec::{Draw, Kind, LayerSpec};
use ndarray::{Array2, ArrayView2};

/// Global average pooling's settings (none): `gap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapSpec {}

impl Kind for GapSpec {
    const NAME: &'static str = "gap";

    fn token(&self) -> String {
        "gap".into()
    }

    fn output(&self, input: Geometry) -> Result<Geometry, String> {
        Ok(Geometry::flat(input.channels))
    }

    fn build(&self, input: Geometry, _draw: &mut Draw<'_>) -> BoxedLayer {
        Box::new(GlobalAvgPool::new(input))
    }

    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        (token == "gap").then(|| Ok(vec![LayerSpec::Gap(GapSpec {})]))
    }
}

/// The mean of each channel over the whole image: `h × w × c` → `c` (a `1 × 1 × c` geometry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalAvgPool {
    input: Geometry,
}

impl GlobalAvgPool {
    /// Global average pooling over `input` images.
    pub fn new(input: Geometry) -> Self {
        GlobalAvgPool { input }
    }

    /// The output geometry, `1 × 1 × channels`.
    pub fn output(&self) -> Geometry {
        Geometry::flat(self.input.channels)
    }
}

impl Layer for GlobalAvgPool {
    type Saved = ();

    fn spec(&self) -> LayerSpec {
        LayerSpec::Gap(GapSpec {})
    }

    fn output(&self) -> Geometry {
        GlobalAvgPool::output(self)
    }

    /// `x (batch, h·w·c)` → `(batch, c)`: `y[c] = Σ_pixels x[pixel, c] / (h·w)`.
    fn forward(&self, x: ArrayView2<'_, f32>, _mode: &mut Mode<'_>) -> (Array2<f32>, ()) {
        assert_eq!(
            x.ncols(),
            self.input.len(),
            "global pool expects {}",
            self.input
        );
        let (c, scale) = (self.input.channels, 1.0 / self.input.pixels() as f32);
        let y = per_image(x, c, |x, y| {
            y.fill(0.0);
            for pixel in x.chunks_exact(c) {
                for (s, &v) in y.iter_mut().zip(pixel) {
                    *s += v;
                }
            }
            y.iter_mut().for_each(|s| *s *= scale);
        });
        (y, ())
    }

    /// `dx[pixel, c] = dy[c] / (h·w)` for every pixel.
    fn backward(
        &self,
        _x: ArrayView2<'_, f32>,
        _y: ArrayView2<'_, f32>,
        _saved: &(),
        dy: Array2<f32>,
        _need_dx: bool,
    ) -> Backward {
        let scale = 1.0 / self.input.pixels() as f32;
        let dx = per_image(dy.view(), self.input.len(), |dy, dx| {
            for pixel in dx.chunks_exact_mut(dy.len()) {
                for (d, &g) in pixel.iter_mut().zip(dy) {
                    *d = g * scale;
                }
            }
        });
        Backward {
            dx: Some(dx),
            grads: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn global_average_pool_averages_each_channel() {
        let gap = GlobalAvgPool::new(Geometry::new(1, 2, 2));
        let x = array![[1.0f32, 10.0, 3.0, 30.0]];
        let (y, _) = gap.forward(x.view(), &mut Mode::Infer);
        assert_eq!(y, array![[2.0, 20.0]]);
        let back = gap.backward(x.view(), y.view(), &(), array![[4.0, 8.0]], true);
        assert_eq!(back.dx.unwrap(), array![[2.0, 4.0, 2.0, 4.0]]);
    }
}
