//! The 2-D convolution layer: square kernels, stride 1 or more, "same" zero padding, a bias.
//!
//! `x: (batch, h·w·c_in)` read as `h × w × c_in` → `(batch, h_out·w_out·c_out)`, channels last.
//!
//! Forward is [`im2col`] → one matrix product → bias, the way Darknet and Caffe do it: the
//! patch matrix `cols (pixels_out, k·k·c_in)` times the kernel matrix `Wᵀ (k·k·c_in, c_out)`
//! gives `(pixels_out, c_out)`, which *is* the output image in channels-last order. Backward
//! runs the same steps in reverse: `dW = dYᵀ · cols` and `dcols = dY · W`, then [`col2im`].
//! A training pass keeps the patch matrix for backward (it is the weight gradient's other
//! factor); an inference pass gathers patches into a per-thread buffer and keeps nothing.
//!
//! Images are processed in fixed groups (sized by the geometry, never by the thread count),
//! one group per task on every thread, each with a patch buffer that is reused from step to
//! step. The weight gradient adds up the groups' parts in group order, so results do not
//! depend on `--threads`.
//!
//! A 3×3, stride-1 layer may run Winograd's minimal filtering instead ([`winograd`]), when
//! [`Algorithm::choose`]'s cost model says it pays: fewer multiplies, the same product
//! engine. The first layer (3 input channels) and other kernels and strides stay on im2col.
//!
//! [`reference_forward`] and [`reference_backward`] are the plain nested-loop convolution, the
//! oracle the tests hold both fast paths to.
//!
//! [`winograd`]: super::winograd

// The `expect`s below state facts about arrays this module makes or makes contiguous itself
// (`as_standard_layout`, fresh `zeros`), never about user data.
#![allow(clippy::expect_used)]

use super::batchnorm::{BatchNorm, EPSILON as BN_EPSILON};
use super::im2col::{Window, col2im, im2col};
use super::layer::{Backward, BoxedLayer, Layer, Mode, Param};
use super::pool::{MaxPool2d, per_image};
use super::recycle::Pooled;
use super::recycle::with_scratch;
use super::spec::{
    BatchNormSpec, Draw, Kind, LayerSpec, MaxPoolSpec, ReluSpec, TensorShapes, number,
};
use super::winograd::{Tile, Winograd};
use super::{Geometry, recycle, standard};
use crate::linalg::{matmul_into, matmul_into_seq};
use ndarray::{Array1, Array2, Array4, ArrayView2, ArrayViewMut2, ArrayViewMutD, Axis};
use rayon::prelude::*;

/// A conv layer's settings: `conv32`, `conv32k5`, `conv32s2`, `conv32k1s2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    /// Output channels.
    pub channels: usize,
    /// Side of the square kernel (odd, at most 15).
    pub kernel: usize,
    /// Step between outputs (1 to 4).
    pub stride: usize,
}

impl Kind for ConvSpec {
    const NAME: &'static str = "conv";

    fn token(&self) -> String {
        let mut t = format!("conv{}", self.channels);
        if self.kernel != 3 {
            t += &format!("k{}", self.kernel);
        }
        if self.stride != 1 {
            t += &format!("s{}", self.stride);
        }
        t
    }

    fn check(&self) -> Result<(), String> {
        let t = self.token();
        if self.channels == 0 {
            return Err(format!("{t}: a conv layer needs at least one channel"));
        }
        if self.kernel.is_multiple_of(2) || self.kernel > 15 {
            return Err(format!(
                "{t}: the kernel side must be odd and at most 15 (\"same\" padding is kernel / 2), got {}",
                self.kernel
            ));
        }
        if self.stride == 0 || self.stride > 4 {
            return Err(format!(
                "{t}: the stride must be 1 to 4, got {}",
                self.stride
            ));
        }
        Ok(())
    }

    fn output(&self, input: Geometry) -> Result<Geometry, String> {
        let k = self.kernel;
        Window::same(k, self.stride)
            .output(input, self.channels)
            .ok_or_else(|| format!("a {k}×{k} kernel does not fit {input}"))
    }

    fn tensors(&self, input: Geometry) -> TensorShapes {
        let (c, k) = (self.channels, self.kernel);
        TensorShapes::params(&[("weight", vec![c, input.channels, k, k]), ("bias", vec![c])])
    }

    fn build(&self, input: Geometry, draw: &mut Draw<'_>) -> BoxedLayer {
        let weight = draw.conv(self.channels, input.channels, self.kernel);
        Box::new(Conv2d::new(input, weight, self.stride))
    }

    /// `conv<channels>[k<kernel>][s<stride>]`, and `block<channels>`, the shorthand for
    /// `conv<channels> bn relu pool`.
    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        if let Some(rest) = token.strip_prefix("block") {
            return Some(number(token, rest).map(|channels| {
                vec![
                    LayerSpec::conv(channels, 3, 1),
                    LayerSpec::BatchNorm(BatchNormSpec {}),
                    LayerSpec::Relu(ReluSpec {}),
                    LayerSpec::MaxPool(MaxPoolSpec {}),
                ]
            }));
        }
        let rest = token.strip_prefix("conv")?;
        let read = || {
            let (rest, stride) = match rest.split_once('s') {
                Some((head, s)) => (head, number(token, s)?),
                None => (rest, 1),
            };
            let (channels, kernel) = match rest.split_once('k') {
                Some((c, k)) => (number(token, c)?, number(token, k)?),
                None => (number(token, rest)?, 3),
            };
            Ok(vec![LayerSpec::conv(channels, kernel, stride)])
        };
        Some(read())
    }
}

/// A convolution with PyTorch's weight layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// `(c_out, c_in, k, k)`, as PyTorch's `Conv2d.weight`.
    pub weight: Array4<f32>,
    /// `(c_out,)`.
    pub bias: Array1<f32>,
    input: Geometry,
    window: Window,
    algorithm: Algorithm,
}

/// How a [`Conv2d`] computes its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Patches gathered by im2col, times the kernel matrix: any kernel and stride.
    Im2col,
    /// Winograd's minimal filtering with this tile: 3×3 kernels at stride 1 only.
    Winograd(Tile),
}

/// What one transform operation (a multiply-add of a channel vector in a tile transform, or a
/// value gathered by im2col) costs, in matrix-product multiply-adds. Fitted to
/// `cargo bench --bench layers` (2 threads, AMD EPYC, loaded machine): the `cnn` preset's
/// F(4×4) layers fit 23 (32×32×16→32), 39 (16×16×32→64) and 124 (8×8×64→64); 64 is their
/// middle. With today's transforms Winograd ran 0.4–0.7× im2col's speed on every layer of the
/// preset, so the model keeps im2col there and picks Winograd only for layers of about 256
/// channels and more, where the multiplies it saves outweigh its transforms.
const TRANSFORM_COST: usize = 64;

impl Algorithm {
    /// The cheapest algorithm for a layer by a cost model: product multiply-adds plus
    /// [`TRANSFORM_COST`] per transform (or gather) operation, per image. A model rather than
    /// a timing on first use, because a timing can choose differently from run to run, and
    /// the tile size changes the rounding: the model keeps a run's bytes reproducible.
    ///
    /// Shapes: `input (h × w × c_in)`, `c_out` output channels, a `kernel × kernel` window
    /// moving by `stride`.
    pub fn choose(input: Geometry, c_out: usize, kernel: usize, stride: usize) -> Algorithm {
        if kernel != 3 || stride != 1 {
            return Algorithm::Im2col;
        }
        let (c_in, pixels) = (input.channels, input.pixels());
        let im2col = pixels * 9 * c_in * c_out + TRANSFORM_COST * pixels * 9 * c_in;
        let winograd = |tile: Tile| {
            let (m, a) = (tile.m(), tile.alpha());
            let tiles = input.height.div_ceil(m) * input.width.div_ceil(m);
            let (input_ops, output_ops) = tile.transform_ops();
            tiles * a * a * c_in * c_out
                + TRANSFORM_COST * tiles * (input_ops * c_in + output_ops * c_out)
        };
        [Tile::F4, Tile::F2]
            .into_iter()
            .map(|t| (winograd(t), Algorithm::Winograd(t)))
            .chain([(im2col, Algorithm::Im2col)])
            .min_by_key(|&(cost, _)| cost)
            .map_or(Algorithm::Im2col, |(_, a)| a)
    }
}

/// What the folded convolution may differ from conv then batch norm by, relative to the
/// magnitude (`|s|·` the conv run on `|x|`, `|W|` and `|b| + |mean|`, `+ |β|`): 4× the worst
/// measured over the test's shapes, 2.1e-7 with im2col and 5.0e-6 with F(4×4, 3×3) (whose
/// own error, on two different weights, dominates; the fold adds one rounding per weight).
pub const FOLD_ERROR_BOUND: f32 = 2e-5;

/// Patch-matrix bytes a task aims at: about half of a core's L2 cache, so a group's patches
/// stay in cache between being gathered and being multiplied.
const GROUP_BYTES: usize = 512 * 1024;

impl Conv2d {
    /// A convolution over `input` images with the given weight `(c_out, c_in, k, k)`, zero
    /// bias, stride `stride` and "same" padding (`k / 2`).
    ///
    /// # Panics
    /// If the kernel is not square and odd, the stride is 0, `c_in` differs from the input's
    /// channels, or the window does not fit the input (the architecture is checked first).
    pub fn new(input: Geometry, weight: Array4<f32>, stride: usize) -> Self {
        let (c_out, c_in, kh, kw) = weight.dim();
        assert!(
            kh == kw && kh % 2 == 1 && stride > 0,
            "conv kernel must be square and odd with a positive stride, got {kh}×{kw} stride {stride}"
        );
        assert_eq!(
            c_in, input.channels,
            "conv weight has {c_in} input channels, input {input} has {}",
            input.channels
        );
        let window = Window::same(kh, stride);
        assert!(
            window.output(input, c_out).is_some(),
            "conv window does not fit {input}"
        );
        Conv2d {
            weight,
            bias: Array1::zeros(c_out),
            input,
            window,
            algorithm: Algorithm::choose(input, c_out, kh, stride),
        }
    }

    /// How this layer computes: [`Algorithm::choose`]'s pick unless set otherwise.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Makes this layer compute with `algorithm` (for benchmarks and tests: the results
    /// differ from the chosen algorithm's by rounding).
    ///
    /// # Panics
    /// If `algorithm` is Winograd and the layer is not 3×3 at stride 1.
    pub fn set_algorithm(&mut self, algorithm: Algorithm) {
        assert!(
            algorithm == Algorithm::Im2col || (self.window.kernel == 3 && self.window.stride == 1),
            "Winograd needs a 3×3 kernel at stride 1, this layer is {}×{} at stride {}",
            self.window.kernel,
            self.window.kernel,
            self.window.stride
        );
        self.algorithm = algorithm;
    }

    /// The Winograd plan of this layer, when it runs Winograd.
    pub(super) fn winograd(&self) -> Option<Winograd> {
        match self.algorithm {
            Algorithm::Winograd(tile) => Some(Winograd {
                tile,
                input: self.input,
                c_out: self.weight.dim().0,
            }),
            Algorithm::Im2col => None,
        }
    }

    /// The input geometry.
    pub fn input(&self) -> Geometry {
        self.input
    }

    /// The output geometry.
    pub fn output(&self) -> Geometry {
        self.window
            .output(self.input, self.weight.dim().0)
            .unwrap_or(self.input)
    }

    /// Side of the kernel.
    pub fn kernel(&self) -> usize {
        self.window.kernel
    }

    /// Step between outputs.
    pub fn stride(&self) -> usize {
        self.window.stride
    }

    /// The weight as the product needs it: `(c_out, k·k·c_in)`, columns in patch order
    /// (kernel row, kernel column, input channel).
    pub(super) fn kernel_matrix(&self) -> Array2<f32> {
        let (c_out, c_in, k, _) = self.weight.dim();
        // (c_out, c_in, ky, kx) → (c_out, ky, kx, c_in), then flattened.
        let patch_order = self.weight.view().permuted_axes([0, 2, 3, 1]);
        Array2::from_shape_vec((c_out, k * k * c_in), patch_order.iter().copied().collect())
            .expect("as many values as the weight")
    }

    /// The inverse of [`kernel_matrix`](Conv2d::kernel_matrix): a `(c_out, k·k·c_in)`
    /// gradient back in the weight's `(c_out, c_in, k, k)` layout.
    fn weight_from_kernel_matrix(&self, m: &Array2<f32>) -> Array4<f32> {
        let (c_out, c_in, k, _) = self.weight.dim();
        Array4::from_shape_fn((c_out, c_in, k, k), |(o, ci, ky, kx)| {
            m[[o, (ky * k + kx) * c_in + ci]]
        })
    }

    /// This convolution followed by inference-mode batch norm `bn`, as one convolution: with
    /// `s = γ / √(running_var + ε)` per output channel, `W' = s·W` and
    /// `b' = s·(b − running_mean) + β`. Same geometry and algorithm; the unfolded pair is its
    /// oracle (tested to [`FOLD_ERROR_BOUND`]).
    ///
    /// # Panics
    /// If `bn` does not normalise this layer's `c_out` channels.
    pub fn fold_batchnorm(&self, bn: &BatchNorm) -> Conv2d {
        let c_out = self.weight.dim().0;
        assert_eq!(
            bn.input(),
            self.output(),
            "batch norm over {} cannot follow a conv with output {}",
            bn.input(),
            self.output()
        );
        let scale: Vec<f32> = (0..c_out)
            .map(|o| bn.gamma[o] / (bn.running_var[o] + BN_EPSILON).sqrt())
            .collect();
        let mut folded = self.clone();
        for (mut w, &s) in folded.weight.outer_iter_mut().zip(&scale) {
            w *= s;
        }
        folded.bias = Array1::from_shape_fn(c_out, |o| {
            scale[o] * (self.bias[o] - bn.running_mean[o]) + bn.beta[o]
        });
        folded
    }

    /// Inference: `x (batch, h·w·c_in)` → this conv's output with `then` applied to each
    /// group of images while it is still in cache. `kernel` is this conv's
    /// [`kernel_matrix`](Conv2d::kernel_matrix), made once by the caller. When `then` pools,
    /// the conv's own output is never written for the whole batch, and the pooling runs on
    /// the raw products, before the bias and ReLU, on a quarter of the values: a window's
    /// `max` of `relu(z + b)` is `relu(max(z) + b)` exactly, since rounding `z + b` never
    /// reverses an order. So the values are exactly those of the layers run one by one.
    pub fn infer(
        &self,
        x: ArrayView2<'_, f32>,
        then: Epilogue,
        kernel: ArrayView2<'_, f32>,
    ) -> Array2<f32> {
        if self.winograd().is_some() {
            let (y, _) = Layer::forward(self, x, &mut Mode::Infer);
            return then.apply(y);
        }
        let x = x.as_standard_layout();
        let out = self.output();
        let width = then.pool.map_or(out.len(), |p| p.output().len());
        let group = self.group();
        let patch = self.window.patch_len(self.input.channels);
        assert_eq!(
            kernel.dim(),
            (out.channels, patch),
            "conv: kernel matrix shape"
        );
        let product = |cols: ArrayView2<'_, f32>, z: ArrayViewMut2<'_, f32>| {
            matmul_into_seq(per_pixel_mut(z, out.channels), cols, kernel.t(), 1.0, false);
        };
        let mut y = recycle::scratch((x.nrows(), width));
        y.axis_chunks_iter_mut(Axis(0), group)
            .into_par_iter()
            .zip(x.axis_chunks_iter(Axis(0), group).into_par_iter())
            .for_each(|(mut y, x)| {
                let n = x.nrows();
                let cols_len = if self.is_pointwise() {
                    0
                } else {
                    n * out.pixels() * patch
                };
                let z_len = then.pool.map_or(0, |_| n * out.len());
                with_scratch(cols_len + z_len, |buf| {
                    let (cols, z) = buf.split_at_mut(cols_len);
                    let cols = self.patches(x, cols);
                    if let Some(pool) = then.pool {
                        let mut z = ArrayViewMut2::from_shape((n, out.len()), z)
                            .expect("conv: scratch holds the group's outputs");
                        product(cols, z.view_mut());
                        for (z, mut y) in z.rows().into_iter().zip(y.rows_mut()) {
                            let z = z.to_slice().expect("conv: scratch rows are contiguous");
                            let y = y.as_slice_mut().expect("conv: output rows are contiguous");
                            pool.pool_image(z, y, None);
                        }
                    } else {
                        product(cols, y.view_mut());
                    }
                    then.bias_relu(y.view_mut(), &self.bias);
                });
            });
        y
    }

    /// Whether the patch matrix of an image is the image itself (a 1×1 kernel, stride 1).
    fn is_pointwise(&self) -> bool {
        self.window.kernel == 1 && self.window.stride == 1
    }

    /// Images per task: as many as keep the group's patch matrix near [`GROUP_BYTES`].
    fn group(&self) -> usize {
        let patch_bytes = self.output().pixels() * self.window.patch_len(self.input.channels) * 4;
        (GROUP_BYTES / patch_bytes.max(1)).max(1)
    }

    /// Gathers the patches of `images` (`(n, h·w·c_in)`, standard layout) into `cols`
    /// (`(n · pixels_out, k·k·c_in)`), or borrows the images themselves for a 1×1 kernel.
    fn patches<'a>(&self, images: ArrayView2<'a, f32>, cols: &'a mut [f32]) -> ArrayView2<'a, f32> {
        let rows = images.nrows() * self.output().pixels();
        let patch = self.window.patch_len(self.input.channels);
        if self.is_pointwise() {
            return images
                .into_shape_with_order((rows, patch))
                .expect("pointwise conv: images are contiguous");
        }
        let per_image = self.output().pixels() * patch;
        for (image, out) in images
            .rows()
            .into_iter()
            .zip(cols.chunks_exact_mut(per_image))
        {
            let image = image.to_slice().expect("conv: image rows are contiguous");
            im2col(image, self.input, self.window, out);
        }
        ArrayView2::from_shape((rows, patch), &cols[..rows * patch])
            .expect("conv: patch matrix shape")
    }
}

/// One mutable view per group of `group` images (`pixels` rows each) of `kept`, or `None`
/// for every group when there is nothing to keep.
fn groups_of(
    kept: Option<&mut Array2<f32>>,
    images: usize,
    group: usize,
    pixels: usize,
) -> Vec<Option<ArrayViewMut2<'_, f32>>> {
    match kept {
        Some(k) => k
            .axis_chunks_iter_mut(Axis(0), group * pixels)
            .map(Some)
            .collect(),
        None => (0..images.div_ceil(group)).map(|_| None).collect(),
    }
}

/// `a` as `(rows · pieces, width / pieces)` without copying: a batch of images seen as one
/// pixel per row.
fn per_pixel(a: ArrayView2<'_, f32>, channels: usize) -> ArrayView2<'_, f32> {
    let rows = a.len() / channels;
    a.into_shape_with_order((rows, channels))
        .expect("conv: activations are contiguous")
}

fn per_pixel_mut(a: ArrayViewMut2<'_, f32>, channels: usize) -> ArrayViewMut2<'_, f32> {
    let rows = a.len() / channels;
    a.into_shape_with_order((rows, channels))
        .expect("conv: activations are contiguous")
}

/// What an inference pass applies to a conv's output while a group of images is still in
/// cache ([`Conv2d::infer`]): the bias always, then ReLU if asked, then a 2×2 max-pool if
/// asked: what `conv relu pool` (or `conv bn relu pool` with batch norm folded into the conv)
/// does layer by layer. `infer` pools first and adds the bias and ReLU to the pooled values,
/// which gives exactly the same values with a quarter of the work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue {
    /// `max(·, 0)` after the bias.
    pub relu: bool,
    /// Max-pooling of the result.
    pub pool: Option<MaxPool2d>,
}

impl Epilogue {
    /// Adds `bias` to each pixel's row of `z (pixels, c_out)`, then ReLU if asked.
    fn bias_relu(&self, mut z: ArrayViewMut2<'_, f32>, bias: &Array1<f32>) {
        let bias = bias.as_slice().expect("conv: the bias is contiguous");
        let z = z.as_slice_mut().expect("conv: outputs are contiguous");
        // One sweep: the sum, then the ReLU of that same f32 sum.
        let pixels = z.chunks_exact_mut(bias.len());
        if self.relu {
            for pixel in pixels {
                for (v, &b) in pixel.iter_mut().zip(bias) {
                    *v = (*v + b).max(0.0);
                }
            }
        } else {
            for pixel in pixels {
                for (v, &b) in pixel.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
    }

    /// The ReLU and pooling steps on a conv output `y` that already has its bias.
    fn apply(&self, mut y: Array2<f32>) -> Array2<f32> {
        if self.relu {
            y.par_mapv_inplace(|v| v.max(0.0));
        }
        let Some(pool) = self.pool else {
            return y;
        };
        let pooled = per_image(y.view(), pool.output().len(), |x, o| {
            pool.pool_image(x, o, None);
        });
        recycle::give(y);
        pooled
    }
}

/// What a training pass keeps: the weight gradient's other factor.
#[derive(Debug)]
pub enum Kept {
    /// im2col's patch matrix `(batch · pixels_out, k·k·c_in)`.
    Patches(Pooled),
    /// Winograd's transformed input tiles `(batch · α² · tiles, c_in)`.
    Tiles(Pooled),
}

impl Layer for Conv2d {
    /// The patches of a training pass (none for a 1×1 stride-1 kernel, whose patches are the
    /// input itself); nothing at inference.
    type Saved = Option<Kept>;

    fn spec(&self) -> LayerSpec {
        LayerSpec::conv(self.weight.dim().0, self.window.kernel, self.window.stride)
    }

    fn output(&self) -> Geometry {
        Conv2d::output(self)
    }

    /// `x (batch, h·w·c_in)` → `y (batch, h_out·w_out·c_out)`: per group of images, gather
    /// patches, multiply by the kernel matrix, add the bias. Saves nothing.
    fn forward(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> (Array2<f32>, Option<Kept>) {
        assert_eq!(
            x.ncols(),
            self.input.len(),
            "conv expects {} inputs",
            self.input
        );
        let x = x.as_standard_layout();
        if let Some(plan) = self.winograd() {
            let (y, kept) = plan.forward(&self.weight, &self.bias, x.view(), mode.is_train());
            return (y, kept.map(|k| Kept::Tiles(Pooled(k))));
        }
        let out = self.output();
        let wmat = self.kernel_matrix();
        let group = self.group();
        let patch = self.window.patch_len(self.input.channels);
        // Training keeps the patch matrix for backward's weight gradient.
        let keep = mode.is_train() && !self.is_pointwise();
        let mut kept = keep.then(|| recycle::scratch((x.nrows() * out.pixels(), patch)));
        let mut kept_groups = groups_of(kept.as_mut(), x.nrows(), group, out.pixels());
        let mut y = recycle::scratch((x.nrows(), out.len()));
        y.axis_chunks_iter_mut(Axis(0), group)
            .into_par_iter()
            .zip(x.axis_chunks_iter(Axis(0), group).into_par_iter())
            .zip(kept_groups.par_iter_mut())
            .for_each(|((y, x), kept)| {
                let multiply = |cols: ArrayView2<'_, f32>| {
                    let mut y = per_pixel_mut(y, out.channels);
                    matmul_into_seq(y.view_mut(), cols, wmat.t(), 1.0, false);
                    y += &self.bias;
                };
                match kept {
                    Some(kept) => {
                        let buf = kept
                            .as_slice_mut()
                            .expect("conv: kept patches are contiguous");
                        multiply(self.patches(x, buf));
                    }
                    None => with_scratch(x.nrows() * out.pixels() * patch, |buf| {
                        multiply(self.patches(x, buf))
                    }),
                }
            });
        drop(kept_groups);
        (y, kept.map(|k| Kept::Patches(Pooled(k))))
    }

    /// `dy (batch, h_out·w_out·c_out)` → `dW = Σ dYᵀ·cols`, `db = Σ dY`, and only if asked
    /// `dx` by `dcols = dY·W` and [`col2im`].
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        _y: ArrayView2<'_, f32>,
        saved: &Option<Kept>,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        let x = x.as_standard_layout();
        let dy = standard(dy);
        if let Some(plan) = self.winograd() {
            let tiles = match saved {
                Some(Kept::Tiles(t)) => Some(&t.0),
                _ => None,
            };
            let (dx, dw, db) = plan.backward(&self.weight, x.view(), tiles, dy.view(), need_dx);
            recycle::give(dy);
            return Backward {
                dx,
                grads: vec![dw.into_dyn(), db.into_dyn()],
            };
        }
        let wmat = self.kernel_matrix();
        let mut dx = need_dx.then(|| recycle::zeros(x.dim()));
        // The whole batch's patch matrix: what a training pass kept, or for a 1×1 stride-1
        // kernel the images themselves.
        let cols = match saved {
            Some(Kept::Patches(cols)) => Some(cols.view()),
            _ if self.is_pointwise() => Some(self.patches(x.view(), &mut [])),
            _ => None,
        };
        let (dw, db) = match cols {
            Some(cols) => {
                let (dw, db) = self.weight_grads(dy.view(), cols);
                if let Some(dx) = dx.as_mut() {
                    self.input_grads(dy.view(), &wmat, dx.view_mut());
                }
                (dw, db)
            }
            None => self.grads_per_group(x.view(), dy.view(), &wmat, dx.as_mut()),
        };
        recycle::give(dy);
        Backward {
            dx,
            grads: vec![
                self.weight_from_kernel_matrix(&dw).into_dyn(),
                db.into_dyn(),
            ],
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

impl Conv2d {
    /// `dW = dYᵀ·cols` and `db = Σ dY` over the whole batch from the patches a training pass
    /// kept: one product with the batch's pixels as its long reduction, split across threads
    /// by output columns (so the same bytes for any thread count), rather than one partial
    /// `dW` per group of images to write, read and add up.
    fn weight_grads(
        &self,
        dy: ArrayView2<'_, f32>,
        cols: ArrayView2<'_, f32>,
    ) -> (Array2<f32>, Array1<f32>) {
        let c_out = self.output().channels;
        let dy = per_pixel(dy, c_out);
        let mut dw = Array2::<f32>::zeros((c_out, cols.ncols()));
        matmul_into(dw.view_mut(), dy.t(), cols, 1.0, false);
        (dw, dy.sum_axis(Axis(0)))
    }

    /// `dx = col2im(dY·W)`, per group of images in parallel (`dx` starts at zero).
    fn input_grads(
        &self,
        dy: ArrayView2<'_, f32>,
        wmat: &Array2<f32>,
        mut dx: ArrayViewMut2<'_, f32>,
    ) {
        let (group, out) = (self.group(), self.output());
        let patch = self.window.patch_len(self.input.channels);
        dx.axis_chunks_iter_mut(Axis(0), group)
            .into_par_iter()
            .zip(dy.axis_chunks_iter(Axis(0), group).into_par_iter())
            .for_each(|(dx, dy)| {
                let rows = dy.nrows() * out.pixels();
                with_scratch(rows * patch, |dcols| {
                    backward_input(self, per_pixel(dy, out.channels), wmat, dx, dcols);
                });
            });
    }

    /// `dW`, `db` and (when given) `dx` when no patches were kept (a pass outside training):
    /// each group of images
    /// gathers its patches again and adds its share of `dW` and `db` (summed in group order,
    /// so the same bytes for any thread count).
    fn grads_per_group(
        &self,
        x: ArrayView2<'_, f32>,
        dy: ArrayView2<'_, f32>,
        wmat: &Array2<f32>,
        dx: Option<&mut Array2<f32>>,
    ) -> (Array2<f32>, Array1<f32>) {
        let (group, out) = (self.group(), self.output());
        let patch = self.window.patch_len(self.input.channels);
        let mut dx_groups: Vec<Option<ArrayViewMut2<'_, f32>>> = match dx {
            Some(dx) => dx.axis_chunks_iter_mut(Axis(0), group).map(Some).collect(),
            None => (0..x.nrows().div_ceil(group)).map(|_| None).collect(),
        };
        let parts: Vec<(Array2<f32>, Array1<f32>)> = dx_groups
            .par_iter_mut()
            .zip(x.axis_chunks_iter(Axis(0), group).into_par_iter())
            .zip(dy.axis_chunks_iter(Axis(0), group).into_par_iter())
            .map(|((dx, x), dy)| {
                let rows = x.nrows() * out.pixels();
                let dy = per_pixel(dy, out.channels);
                let mut dw = Array2::<f32>::zeros(wmat.dim());
                let len = rows * patch * if dx.is_some() { 2 } else { 1 };
                with_scratch(len, |buf| {
                    let (cols_buf, dcols_buf) = buf.split_at_mut(rows * patch);
                    let cols = self.patches(x, cols_buf);
                    matmul_into_seq(dw.view_mut(), dy.t(), cols, 1.0, false);
                    if let Some(dx) = dx {
                        backward_input(self, dy, wmat, dx.view_mut(), dcols_buf);
                    }
                });
                (dw, dy.sum_axis(Axis(0)))
            })
            .collect();
        let mut dw = Array2::<f32>::zeros(wmat.dim());
        let mut db = Array1::<f32>::zeros(out.channels);
        for (w, b) in &parts {
            dw += w;
            db += b;
        }
        (dw, db)
    }
}

/// `dx += col2im(dY · W)` for one group of images; `dcols` is scratch for `dY · W`.
fn backward_input(
    conv: &Conv2d,
    dy: ArrayView2<'_, f32>,
    wmat: &Array2<f32>,
    mut dx: ArrayViewMut2<'_, f32>,
    dcols: &mut [f32],
) {
    let patch = wmat.ncols();
    if conv.is_pointwise() {
        // The patch matrix is the image: its gradient is the input's.
        let rows = dy.nrows();
        let dx = dx
            .view_mut()
            .into_shape_with_order((rows, patch))
            .expect("pointwise conv: gradients are contiguous");
        matmul_into_seq(dx, dy, wmat.view(), 1.0, false);
        return;
    }
    let rows = dy.nrows();
    {
        let dcols = ArrayViewMut2::from_shape((rows, patch), &mut *dcols)
            .expect("conv: patch gradient shape");
        matmul_into_seq(dcols, dy, wmat.view(), 1.0, false);
    }
    let per_image = conv.output().pixels() * patch;
    for (mut image, d) in dx.rows_mut().into_iter().zip(dcols.chunks_exact(per_image)) {
        let image = image
            .as_slice_mut()
            .expect("conv: gradient rows are contiguous");
        col2im(d, conv.input, conv.window, image);
    }
}

/// The plain convolution, loop by loop: `x (batch, h·w·c_in)` → `(batch, h_out·w_out·c_out)`.
/// The oracle for [`Conv2d`]'s forward pass.
pub fn reference_forward(conv: &Conv2d, x: ArrayView2<'_, f32>) -> Array2<f32> {
    let (g, win, out) = (conv.input, conv.window, conv.output());
    let (c_out, c_in, k, _) = conv.weight.dim();
    let mut y = Array2::<f32>::zeros((x.nrows(), out.len()));
    for b in 0..x.nrows() {
        for oy in 0..out.height {
            for ox in 0..out.width {
                for o in 0..c_out {
                    let mut sum = conv.bias[o];
                    for ky in 0..k {
                        for kx in 0..k {
                            let (Some(iy), Some(ix)) = (
                                (oy * win.stride + ky).checked_sub(win.pad),
                                (ox * win.stride + kx).checked_sub(win.pad),
                            ) else {
                                continue;
                            };
                            if iy >= g.height || ix >= g.width {
                                continue;
                            }
                            for ci in 0..c_in {
                                sum += conv.weight[[o, ci, ky, kx]]
                                    * x[[b, (iy * g.width + ix) * c_in + ci]];
                            }
                        }
                    }
                    y[[b, (oy * out.width + ox) * c_out + o]] = sum;
                }
            }
        }
    }
    y
}

/// The plain convolution's backward pass: `(dx, dW, db)` for `dy (batch, h_out·w_out·c_out)`.
/// The oracle for [`Conv2d`]'s backward pass.
pub fn reference_backward(
    conv: &Conv2d,
    x: ArrayView2<'_, f32>,
    dy: ArrayView2<'_, f32>,
) -> (Array2<f32>, Array4<f32>, Array1<f32>) {
    let (g, win, out) = (conv.input, conv.window, conv.output());
    let (c_out, c_in, k, _) = conv.weight.dim();
    let mut dx = Array2::<f32>::zeros(x.dim());
    let mut dw = Array4::<f32>::zeros(conv.weight.dim());
    let mut db = Array1::<f32>::zeros(c_out);
    for b in 0..x.nrows() {
        for oy in 0..out.height {
            for ox in 0..out.width {
                for o in 0..c_out {
                    let d = dy[[b, (oy * out.width + ox) * c_out + o]];
                    db[o] += d;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (Some(iy), Some(ix)) = (
                                (oy * win.stride + ky).checked_sub(win.pad),
                                (ox * win.stride + kx).checked_sub(win.pad),
                            ) else {
                                continue;
                            };
                            if iy >= g.height || ix >= g.width {
                                continue;
                            }
                            for ci in 0..c_in {
                                let at = (iy * g.width + ix) * c_in + ci;
                                dw[[o, ci, ky, kx]] += d * x[[b, at]];
                                dx[[b, at]] += d * conv.weight[[o, ci, ky, kx]];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use rand::SeedableRng;

    fn values(shape: (usize, usize), seed: usize) -> Array2<f32> {
        Array2::from_shape_fn(shape, |(i, j)| {
            (((i * 131 + j * 71 + seed * 17) % 199) as f32 - 99.0) / 100.0
        })
    }

    fn conv(input: Geometry, c_out: usize, k: usize, stride: usize) -> Conv2d {
        let w = Array4::from_shape_fn((c_out, input.channels, k, k), |(o, i, y, x)| {
            (((o * 7 + i * 5 + y * 3 + x * 11) % 23) as f32 - 11.0) / 20.0
        });
        let mut c = Conv2d::new(input, w, stride);
        c.bias = Array1::from_shape_fn(c_out, |o| o as f32 * 0.1 - 0.2);
        // These tests hold im2col to the oracle; winograd.rs does the same for Winograd.
        c.set_algorithm(Algorithm::Im2col);
        c
    }

    #[test]
    fn cost_model_keeps_im2col_for_rgb_input_strides_and_other_kernels() {
        let choose =
            |h, c_in, c_out, k, s| Algorithm::choose(Geometry::new(h, h, c_in), c_out, k, s);
        // The `cnn` preset's first layer reads 3 channels: the transforms do not pay back.
        assert_eq!(choose(64, 3, 16, 3, 1), Algorithm::Im2col);
        assert_eq!(choose(32, 16, 32, 3, 2), Algorithm::Im2col);
        assert_eq!(choose(32, 16, 32, 5, 1), Algorithm::Im2col);
        assert_eq!(choose(32, 16, 32, 1, 1), Algorithm::Im2col);
        // Its deeper 3×3 layers too: measured, Winograd's transforms cost more than the
        // multiplies it saves there (`cargo bench --bench layers`).
        for (h, c_in, c_out) in [(32, 16, 32), (16, 32, 64), (8, 64, 64), (8, 128, 128)] {
            assert_eq!(
                choose(h, c_in, c_out, 3, 1),
                Algorithm::Im2col,
                "{h} {c_in}"
            );
        }
        // Wide layers take F(4×4, 3×3); at 6 pixels F(4×4) wastes half of its tiles' outputs
        // on padding, and F(2×2) is cheaper.
        assert_eq!(choose(8, 512, 512, 3, 1), Algorithm::Winograd(Tile::F4));
        assert_eq!(choose(6, 512, 512, 3, 1), Algorithm::Winograd(Tile::F2));
    }

    #[test]
    fn fast_conv_equals_the_plain_loops_forward_and_backward() {
        // Odd and even sides, strides 1 and 2, kernels 1, 3 and 5, more images than a group.
        for (g, c_out, k, stride, batch) in [
            (Geometry::new(6, 5, 3), 4, 3, 1, 3),
            (Geometry::new(7, 8, 2), 5, 3, 2, 2),
            (Geometry::new(6, 6, 3), 2, 5, 1, 2),
            (Geometry::new(5, 4, 3), 6, 1, 1, 2),
            (Geometry::new(5, 5, 2), 3, 1, 2, 2),
            (Geometry::new(4, 4, 8), 16, 3, 1, 300),
        ] {
            let layer = conv(g, c_out, k, stride);
            let x = values((batch, g.len()), 1);
            let (y, _) = layer.forward(x.view(), &mut Mode::Infer);
            assert_abs_diff_eq!(y, reference_forward(&layer, x.view()), epsilon = 1e-4);
            let dy = values(y.dim(), 2);
            let back = layer.backward(x.view(), y.view(), &None, dy.clone(), true);
            let (dx, dw, db) = reference_backward(&layer, x.view(), dy.view());
            assert_abs_diff_eq!(back.dx.clone().unwrap(), dx, epsilon = 1e-3);
            assert_abs_diff_eq!(back.grads[0], dw.into_dyn(), epsilon = 1e-2);
            assert_abs_diff_eq!(back.grads[1], db.into_dyn(), epsilon = 1e-2);
            let no_dx = layer.backward(x.view(), y.view(), &None, dy.clone(), false);
            assert!(no_dx.dx.is_none());
            assert_eq!(no_dx.grads, back.grads);
            // A training pass keeps its patches; backward from them gives the same result.
            let mut rng = crate::Rng::seed_from_u64(1);
            let (y_train, kept) = layer.forward(x.view(), &mut Mode::Train(&mut rng));
            assert_eq!(y_train, y);
            assert_eq!(kept.is_some(), !layer.is_pointwise());
            // dx the same bytes; dW and db as one product over the batch rather than summed
            // per group, so the same values up to rounding.
            let from_kept = layer.backward(x.view(), y.view(), &kept, dy, true);
            assert_eq!(from_kept.dx, back.dx);
            for (a, b) in from_kept.grads.iter().zip(&back.grads) {
                let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert_abs_diff_eq!(a, b, epsilon = 1e-5 * scale.max(1.0));
            }
        }
    }

    #[test]
    fn kernel_matrix_orders_columns_as_patches_and_round_trips() {
        let layer = conv(Geometry::new(4, 4, 3), 2, 3, 1);
        let m = layer.kernel_matrix();
        // Column (ky=1, kx=2, ci=0) of output channel 1.
        assert_eq!(m[[1, (3 + 2) * 3]], layer.weight[[1, 0, 1, 2]]);
        assert_eq!(layer.weight_from_kernel_matrix(&m), layer.weight);
    }

    #[test]
    fn folding_batch_norm_equals_conv_then_batch_norm_at_inference() {
        let mut worst = Vec::new();
        for (g, c_out, k, stride) in [
            (Geometry::new(8, 8, 16), 12, 3, 1),
            (Geometry::new(7, 6, 3), 5, 3, 2),
            (Geometry::new(6, 6, 4), 3, 5, 1),
        ] {
            let winograd = (k == 3 && stride == 1).then_some(Algorithm::Winograd(Tile::F4));
            for algorithm in std::iter::once(Algorithm::Im2col).chain(winograd) {
                let mut layer = conv(g, c_out, k, stride);
                layer.set_algorithm(algorithm);
                let mut bn = BatchNorm::new(layer.output());
                bn.gamma = Array1::from_shape_fn(c_out, |o| 0.5 + o as f32 * 0.3);
                bn.beta = Array1::from_shape_fn(c_out, |o| o as f32 * 0.2 - 0.4);
                bn.running_mean = Array1::from_shape_fn(c_out, |o| o as f32 * 0.1 - 0.3);
                bn.running_var = Array1::from_shape_fn(c_out, |o| 0.2 + o as f32 * 0.5);
                let x = values((3, g.len()), 1);
                let (z, _) = layer.forward(x.view(), &mut Mode::Infer);
                let (want, _) = bn.forward(z.view(), &mut Mode::Infer);
                let (got, _) = layer
                    .fold_batchnorm(&bn)
                    .forward(x.view(), &mut Mode::Infer);
                // Magnitude: |s|·(|W|·|x| + |b| + |mean|) + |β|, per output value.
                let mut abs = layer.clone();
                abs.weight.mapv_inplace(f32::abs);
                abs.bias = &layer.bias.mapv(f32::abs) + &bn.running_mean.mapv(f32::abs);
                let (az, _) = abs.forward(x.mapv(f32::abs).view(), &mut Mode::Infer);
                let scale = &bn.gamma / &bn.running_var.mapv(|v| (v + BN_EPSILON).sqrt());
                let error =
                    ndarray::Zip::indexed(&got)
                        .and(&want)
                        .fold(0.0f32, |e, (b, i), &g, &w| {
                            let o = i % c_out;
                            let m = scale[o].abs() * az[[b, i]] + bn.beta[o].abs();
                            e.max((g - w).abs() / m)
                        });
                worst.push(error);
                assert!(
                    error <= FOLD_ERROR_BOUND,
                    "{g} {k}×{k} s{stride} {algorithm:?}: error {error}"
                );
                assert_eq!(layer.fold_batchnorm(&bn).algorithm(), algorithm);
            }
        }
        eprintln!("fold errors (im2col, F(4×4) where 3×3 s1) {worst:?}");
    }
}
