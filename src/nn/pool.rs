//! Pooling: [`MaxPool2d`] (2×2 windows, stride 2) and [`GlobalAvgPool`] (each channel's whole
//! image → one value). Both work image by image in parallel; neither has parameters, and
//! neither saves anything: max-pool's backward finds the arg-max again from the input and
//! output the pass keeps.

use super::{Backward, Geometry, Layer, LayerSpec, Mode, Saved};
use ndarray::{Array2, ArrayView2, Zip};

/// Max over each 2×2 window, stride 2: `h × w × c` → `⌊h/2⌋ × ⌊w/2⌋ × c` (a last odd row or
/// column is dropped, as in PyTorch). The gradient goes to the window's largest input (the
/// first one in reading order when several are equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    input: Geometry,
}

/// Side of a max-pool window, and its stride.
pub const POOL: usize = 2;

impl MaxPool2d {
    /// Max-pooling over `input` images.
    ///
    /// # Panics
    /// If the input is smaller than one window (the architecture is checked first).
    pub fn new(input: Geometry) -> Self {
        assert!(
            input.height >= POOL && input.width >= POOL,
            "max-pool needs at least {POOL}×{POOL} pixels, got {input}"
        );
        MaxPool2d { input }
    }

    /// The output geometry.
    pub fn output(&self) -> Geometry {
        Geometry::new(
            self.input.height / POOL,
            self.input.width / POOL,
            self.input.channels,
        )
    }

    /// For each output value of one image, the index (into the image) of the input it came
    /// from, handed to `visit(output_index, input_index)`.
    fn for_each_window(&self, x: &[f32], mut visit: impl FnMut(usize, usize)) {
        let (g, out) = (self.input, self.output());
        let c = g.channels;
        for oy in 0..out.height {
            for ox in 0..out.width {
                for ch in 0..c {
                    let mut best = ((oy * POOL) * g.width + ox * POOL) * c + ch;
                    for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                        let at = ((oy * POOL + dy) * g.width + ox * POOL + dx) * c + ch;
                        if x[at] > x[best] {
                            best = at;
                        }
                    }
                    visit((oy * out.width + ox) * c + ch, best);
                }
            }
        }
    }
}

/// Runs `f(x_row, out_row)` over the rows of `x` and a new `(batch, width)` array, in
/// parallel.
fn per_image(
    x: ArrayView2<'_, f32>,
    width: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Array2<f32> {
    let x = x.as_standard_layout();
    let mut out = Array2::<f32>::zeros((x.nrows(), width));
    Zip::from(out.rows_mut())
        .and(x.rows())
        .par_for_each(|mut o, x| {
            // Rows of standard-layout arrays are contiguous.
            if let (Some(o), Some(x)) = (o.as_slice_mut(), x.to_slice()) {
                f(x, o);
            }
        });
    out
}

impl Layer for MaxPool2d {
    fn kind(&self) -> &'static str {
        "maxpool"
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec::MaxPool
    }

    fn output(&self, _input: Geometry) -> Geometry {
        MaxPool2d::output(self)
    }

    /// `x (batch, h·w·c)` → `(batch, ⌊h/2⌋·⌊w/2⌋·c)`.
    fn forward(&self, x: ArrayView2<'_, f32>, _mode: &mut Mode<'_>) -> (Array2<f32>, Saved) {
        assert_eq!(
            x.ncols(),
            self.input.len(),
            "max-pool expects {}",
            self.input
        );
        let y = per_image(x, self.output().len(), |x, y| {
            self.for_each_window(x, |o, i| y[o] = x[i]);
        });
        (y, None)
    }

    /// `dx` is `dy` at each window's arg-max and 0 elsewhere.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        _y: ArrayView2<'_, f32>,
        _saved: &Saved,
        dy: Array2<f32>,
        _need_dx: bool,
    ) -> Backward {
        let x = x.as_standard_layout();
        let dy = dy.as_standard_layout();
        let mut dx = Array2::<f32>::zeros(x.dim());
        Zip::from(dx.rows_mut())
            .and(x.rows())
            .and(dy.rows())
            .par_for_each(|mut dx, x, dy| {
                if let (Some(dx), Some(x), Some(dy)) =
                    (dx.as_slice_mut(), x.to_slice(), dy.to_slice())
                {
                    self.for_each_window(x, |o, i| dx[i] = dy[o]);
                }
            });
        Backward {
            dx: Some(dx),
            grads: Vec::new(),
        }
    }

    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(*self)
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
    fn kind(&self) -> &'static str {
        "gap"
    }

    fn spec(&self) -> LayerSpec {
        LayerSpec::Gap
    }

    fn output(&self, _input: Geometry) -> Geometry {
        GlobalAvgPool::output(self)
    }

    /// `x (batch, h·w·c)` → `(batch, c)`: `y[c] = Σ_pixels x[pixel, c] / (h·w)`.
    fn forward(&self, x: ArrayView2<'_, f32>, _mode: &mut Mode<'_>) -> (Array2<f32>, Saved) {
        assert_eq!(
            x.ncols(),
            self.input.len(),
            "global pool expects {}",
            self.input
        );
        let (c, scale) = (self.input.channels, 1.0 / self.input.pixels() as f32);
        let y = per_image(x, c, |x, y| {
            for pixel in x.chunks_exact(c) {
                for (s, &v) in y.iter_mut().zip(pixel) {
                    *s += v;
                }
            }
            y.iter_mut().for_each(|s| *s *= scale);
        });
        (y, None)
    }

    /// `dx[pixel, c] = dy[c] / (h·w)` for every pixel.
    fn backward(
        &self,
        _x: ArrayView2<'_, f32>,
        _y: ArrayView2<'_, f32>,
        _saved: &Saved,
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

    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn max_pool_keeps_each_windows_largest_value_and_routes_its_gradient() {
        // One 2×4 image, one channel: windows [1 5 / 2 0] and [3 3 / 7 3].
        let pool = MaxPool2d::new(Geometry::new(2, 4, 1));
        let x = array![[1.0f32, 5.0, 3.0, 3.0, 2.0, 0.0, 7.0, 3.0]];
        let (y, _) = pool.forward(x.view(), &mut Mode::Infer);
        assert_eq!(y, array![[5.0, 7.0]]);
        let back = pool.backward(x.view(), y.view(), &None, array![[10.0, 20.0]], true);
        assert_eq!(
            back.dx.unwrap(),
            array![[0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 20.0, 0.0]]
        );
    }

    #[test]
    fn max_pool_drops_an_odd_last_row_and_keeps_channels_apart() {
        let pool = MaxPool2d::new(Geometry::new(3, 2, 2));
        assert_eq!(pool.output(), Geometry::new(1, 1, 2));
        // Pixels (channel 0, channel 1); the last row would win both channels if it counted.
        let x = array![[
            1.0f32, 8.0, 4.0, 2.0, 3.0, 6.0, 5.0, 7.0, 9.0, 9.0, 9.0, 9.0
        ]];
        let (y, _) = pool.forward(x.view(), &mut Mode::Infer);
        assert_eq!(y, array![[5.0, 8.0]]);
    }

    #[test]
    fn global_average_pool_averages_each_channel() {
        let gap = GlobalAvgPool::new(Geometry::new(1, 2, 2));
        let x = array![[1.0f32, 10.0, 3.0, 30.0]];
        let (y, _) = gap.forward(x.view(), &mut Mode::Infer);
        assert_eq!(y, array![[2.0, 20.0]]);
        let back = gap.backward(x.view(), y.view(), &None, array![[4.0, 8.0]], true);
        assert_eq!(back.dx.unwrap(), array![[2.0, 4.0, 2.0, 4.0]]);
    }
}
