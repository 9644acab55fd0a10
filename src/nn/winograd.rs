//! Winograd's minimal filtering for 3×3, stride-1, "same" convolutions (Lavin & Gray 2015):
//! the fast path [`Conv2d`](super::Conv2d) takes where it pays, with the plain-loop
//! convolution in `conv.rs` as its oracle.
//!
//! F(m×m, 3×3) cuts the output into `m × m` tiles; each reads an `α × α` input tile
//! (`α = m + 2`, overlapping its neighbours by 2). With the transform matrices `Bᵀ (α, α)`,
//! `G (α, 3)` and `Aᵀ (m, α)`, one tile of one channel pair is
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: `α²` multiplies instead of `9 m²` (2.25× fewer for
//! F(2×2, 3×3), 4× for F(4×4, 3×3)). Summed over input channels, each of the `α²` positions
//! ξ becomes one matrix product, `M_ξ (tiles, c_out) = V_ξ (tiles, c_in) · U_ξ (c_in, c_out)`,
//! which goes through [`linalg`](crate::linalg) like every other product: the speed comes
//! from the same GEMM, on fewer multiplies.
//!
//! Backward, per image group:
//! - **Weight gradient**: the adjoint of the forward formula in `g`,
//!   `dg = Gᵀ [Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)] G`, so `dU_ξ (c_in, c_out) = V_ξᵀ · Z_ξ` with
//!   `Z = A dY Aᵀ`, and the transformed input `V` is the one the training pass kept.
//! - **Input gradient**: a stride-1 "same" convolution's input gradient is the convolution of
//!   `dy` with the flipped kernel, input and output channels swapped; it runs through the
//!   forward code on `dy` with that kernel.
//!
//! Tiles past the image's right or bottom edge read zeros (the padding) and their outputs are
//! dropped; their gradients are zero, so they add nothing to `dg`.
//!
//! Images are processed in fixed groups (sized by the geometry, never by the thread count),
//! every product inside a group runs on one thread, and the weight gradient adds the groups'
//! parts in group order: results do not depend on `--threads`.
//!
//! **Error.** The transforms round, and F(4×4, 3×3)'s have entries up to 8 (`Aᵀ`) and 5
//! (`Bᵀ`), so it loses about 4 bits against im2col; both lose 3 to 4 bits in the weight
//! gradient. The bounds measured against the oracle, as error over the value's magnitude
//! (the same convolution on `|x|`, `|w|` and `|dy|`), are [`MEASURED_ERROR`]; the tests hold
//! each tile size and pass to [`ERROR_BOUND`]. The benchmark row that justifies the fast
//! path is `cargo bench --bench layers`' conv table.

// The `expect`s below state facts about arrays this module makes or makes contiguous itself,
// never about user data.
#![allow(clippy::expect_used)]

use super::recycle::with_scratch;
use super::{Geometry, recycle};
use crate::linalg::matmul_into_seq;
use ndarray::{Array1, Array2, Array4, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// A Winograd tile size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 products, 2.25× fewer multiplies than direct.
    F2,
    /// F(4×4, 3×3): 6×6 input tiles, 36 products, 4× fewer multiplies than direct.
    F4,
}

/// F(2, 3)'s `Bᵀ (4, 4)`, interpolation points 0, 1, −1, ∞.
const F2_BT: [f32; 16] = [
    1.0, 0.0, -1.0, 0.0, //
    0.0, 1.0, 1.0, 0.0, //
    0.0, -1.0, 1.0, 0.0, //
    0.0, 1.0, 0.0, -1.0,
];
/// F(2, 3)'s `G (4, 3)`.
const F2_G: [f32; 12] = [
    1.0, 0.0, 0.0, //
    0.5, 0.5, 0.5, //
    0.5, -0.5, 0.5, //
    0.0, 0.0, 1.0,
];
/// F(2, 3)'s `Aᵀ (2, 4)`.
const F2_AT: [f32; 8] = [
    1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, -1.0,
];
/// F(4, 3)'s `Bᵀ (6, 6)`, interpolation points 0, ±1, ±2, ∞.
const F4_BT: [f32; 36] = [
    4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
    0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
    0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
    0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
    0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
    0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
];
/// F(4, 3)'s `G (6, 3)`.
const F4_G: [f32; 18] = [
    1.0 / 4.0,
    0.0,
    0.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 12.0,
    1.0 / 6.0,
    1.0 / 24.0,
    -1.0 / 12.0,
    1.0 / 6.0,
    0.0,
    0.0,
    1.0,
];
/// F(4, 3)'s `Aᵀ (4, 6)`.
const F4_AT: [f32; 24] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
    0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
    0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
];

/// Worst error measured against the plain-loop oracle summing in f64, as
/// `|fast − oracle| / magnitude` where the magnitude is the oracle run on `|x|`, `|w|` and
/// `|dy|`, over the shapes of this module's tests, per tile size ([`Tile::index`]): forward,
/// input gradient, weight gradient. im2col measured 1.6e-7, 9.9e-8 and 2.8e-7 on the same
/// cases. F(4×4, 3×3) loses about 4 bits against im2col in every pass. The weight gradients
/// of both lose 3 to 4: they sum over every tile in the transformed space, where the values
/// are larger than the result that `Gᵀ · G` brings back (the back-transform cancels), so the
/// sums' rounding lands on smaller values.
pub const MEASURED_ERROR: [[f32; 3]; 2] = [[1.1e-7, 1.7e-7, 2.2e-6], [2.3e-6, 2.3e-6, 3.5e-6]];

/// What the tests allow, per tile size and pass as in [`MEASURED_ERROR`]: four times the
/// worst measured error, rounded up, so that a wrong transform (errors of order 1) or one
/// that loses two more bits fails.
pub const ERROR_BOUND: [[f32; 3]; 2] = [[5e-7, 7e-7, 9e-6], [1e-5, 1e-5, 1.4e-5]];

impl Tile {
    /// Output tile side `m`.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input tile side `α = m + 2`; there are `α²` products.
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    /// `Bᵀ (α, α)`, row-major.
    fn bt(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_BT,
            Tile::F4 => &F4_BT,
        }
    }

    /// `G (α, 3)`, row-major.
    fn g(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_G,
            Tile::F4 => &F4_G,
        }
    }

    /// `Aᵀ (m, α)`, row-major.
    fn at(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_AT,
            Tile::F4 => &F4_AT,
        }
    }

    /// Channel-vector operations per tile and channel: `(input, output)` transform, each
    /// the gather (or scatter) plus the multiply-adds of [`sandwich`] with zeros skipped.
    pub fn transform_ops(self) -> (usize, usize) {
        let nnz = |l: &[f32]| l.iter().filter(|&&v| v != 0.0).count();
        let (m, a) = (self.m(), self.alpha());
        (
            a * a + 2 * a * nnz(self.bt()),
            m * m + (m + a) * nnz(self.at()),
        )
    }

    /// The tile's index in [`ERROR_BOUND`] and [`MEASURED_ERROR`].
    pub fn index(self) -> usize {
        match self {
            Tile::F2 => 0,
            Tile::F4 => 1,
        }
    }
}

/// `(rows, cols)` row-major matrix transposed.
fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows)
        .map(|i| m[(i % rows) * cols + i / rows])
        .collect()
}

/// `out = L · src · Lᵀ` for a block of `s × s` pixels of `c` channels each, channel by
/// channel: `L (r, s)` row-major; pixel `p` of `src` is `src[p·src_stride..][..c]`, pixel `q`
/// of the `r × r` result goes to `out[q·out_stride..][..c]`; `tmp` holds `r·s·c` values.
/// Zero entries of `L` are skipped; the channel loops vectorise.
#[allow(clippy::too_many_arguments)]
fn sandwich(
    l: &[f32],
    (r, s, c): (usize, usize, usize),
    src: &[f32],
    src_stride: usize,
    tmp: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    // tmp[i][j] = Σ_k L[i][k] · src[k][j]
    for i in 0..r {
        for j in 0..s {
            let t = &mut tmp[(i * s + j) * c..][..c];
            t.fill(0.0);
            for k in 0..s {
                let a = l[i * s + k];
                if a != 0.0 {
                    let p = &src[(k * s + j) * src_stride..][..c];
                    t.iter_mut().zip(p).for_each(|(t, &p)| *t += a * p);
                }
            }
        }
    }
    // out[i][j] = Σ_k L[j][k] · tmp[i][k]
    for i in 0..r {
        for j in 0..r {
            let o = &mut out[(i * r + j) * out_stride..][..c];
            o.fill(0.0);
            for k in 0..s {
                let a = l[j * s + k];
                if a != 0.0 {
                    let t = &tmp[(i * s + k) * c..][..c];
                    o.iter_mut().zip(t).for_each(|(o, &t)| *o += a * t);
                }
            }
        }
    }
}

/// `U = G g Gᵀ` for every channel pair of `weight (c_out, c_in, 3, 3)`: `(α², c_in·c_out)`,
/// position-major, each position a `(c_in, c_out)` matrix.
fn filter_transform(tile: Tile, weight: &Array4<f32>) -> Array2<f32> {
    let (c_out, c_in, _, _) = weight.dim();
    let a = tile.alpha();
    let mut u = Array2::<f32>::zeros((a * a, c_in * c_out));
    let us = u.as_slice_mut().expect("fresh array");
    let mut tmp = vec![0.0f32; a * 3];
    let mut g = [0.0f32; 9];
    for o in 0..c_out {
        for i in 0..c_in {
            for (v, w) in g.iter_mut().zip(weight.slice(ndarray::s![o, i, .., ..])) {
                *v = *w;
            }
            let at = i * c_out + o;
            sandwich(
                tile.g(),
                (a, 3, 1),
                &g,
                1,
                &mut tmp,
                &mut us[at..],
                c_in * c_out,
            );
        }
    }
    u
}

/// `dW (c_out, c_in, 3, 3) = Gᵀ dU G` for `du (α², c_in·c_out)` laid out as
/// [`filter_transform`]'s result: the adjoint of that transform.
fn filter_gradient(tile: Tile, du: &Array2<f32>, c_out: usize, c_in: usize) -> Array4<f32> {
    let a = tile.alpha();
    let gt = transposed(tile.g(), a, 3);
    let dus = du.as_slice().expect("contiguous");
    let mut dw = Array4::<f32>::zeros((c_out, c_in, 3, 3));
    let mut tmp = vec![0.0f32; 3 * a];
    let mut out = [0.0f32; 9];
    for o in 0..c_out {
        for i in 0..c_in {
            let at = i * c_out + o;
            sandwich(
                &gt,
                (3, a, 1),
                &dus[at..],
                c_in * c_out,
                &mut tmp,
                &mut out,
                1,
            );
            for (w, v) in dw.slice_mut(ndarray::s![o, i, .., ..]).iter_mut().zip(out) {
                *w = v;
            }
        }
    }
    dw
}

/// The kernel of the input gradient: `weight (c_out, c_in, 3, 3)` flipped in both spatial
/// axes, with input and output channels swapped: `(c_in, c_out, 3, 3)`.
fn flipped(weight: &Array4<f32>) -> Array4<f32> {
    let (c_out, c_in, _, _) = weight.dim();
    Array4::from_shape_fn((c_in, c_out, 3, 3), |(i, o, y, x)| {
        weight[[o, i, 2 - y, 2 - x]]
    })
}

/// The tiling of one image: `tiles_y × tiles_x` tiles of `m × m` outputs over `image`.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    tile: Tile,
    image: Geometry,
    tiles_y: usize,
    tiles_x: usize,
}

impl Tiling {
    fn new(tile: Tile, image: Geometry) -> Self {
        Tiling {
            tile,
            image,
            tiles_y: image.height.div_ceil(tile.m()),
            tiles_x: image.width.div_ceil(tile.m()),
        }
    }

    /// Tiles per image.
    fn per_image(&self) -> usize {
        self.tiles_y * self.tiles_x
    }

    /// `V = Bᵀ d B` of every input tile of `images (n, h·w·c)`, into `v (α², n·tiles, c)`
    /// (flat), tile `t = image · tiles + ty · tiles_x + tx`.
    fn input_transform(&self, images: ArrayView2<'_, f32>, v: &mut [f32]) {
        let (a, m, c) = (self.tile.alpha(), self.tile.m(), self.image.channels);
        let (h, w) = (self.image.height, self.image.width);
        let total = images.nrows() * self.per_image();
        let mut block = vec![0.0f32; a * a * c];
        let mut tmp = vec![0.0f32; a * a * c];
        for (n, image) in images.rows().into_iter().enumerate() {
            let image = image.to_slice().expect("standard layout");
            for ty in 0..self.tiles_y {
                for tx in 0..self.tiles_x {
                    // Input rows and columns ty·m − 1 .. ty·m − 1 + α, zero outside.
                    for by in 0..a {
                        let row = &mut block[by * a * c..][..a * c];
                        let Some(iy) = (ty * m + by).checked_sub(1).filter(|&iy| iy < h) else {
                            row.fill(0.0);
                            continue;
                        };
                        for bx in 0..a {
                            let px = &mut row[bx * c..][..c];
                            match (tx * m + bx).checked_sub(1).filter(|&ix| ix < w) {
                                Some(ix) => px.copy_from_slice(&image[(iy * w + ix) * c..][..c]),
                                None => px.fill(0.0),
                            }
                        }
                    }
                    let t = n * self.per_image() + ty * self.tiles_x + tx;
                    let out = &mut v[t * c..];
                    sandwich(
                        self.tile.bt(),
                        (a, a, c),
                        &block,
                        c,
                        &mut tmp,
                        out,
                        total * c,
                    );
                }
            }
        }
    }

    /// `Z = A dY Aᵀ` of every output tile of `dy (n, h·w·c)`, into `z (α², n·tiles, c)`,
    /// tiles numbered as in [`input_transform`](Tiling::input_transform).
    fn gradient_transform(&self, dy: ArrayView2<'_, f32>, z: &mut [f32]) {
        let (a, m, c) = (self.tile.alpha(), self.tile.m(), self.image.channels);
        let (h, w) = (self.image.height, self.image.width);
        let total = dy.nrows() * self.per_image();
        let at = transposed(self.tile.at(), m, a);
        let mut block = vec![0.0f32; m * m * c];
        let mut tmp = vec![0.0f32; a * m * c];
        for (n, image) in dy.rows().into_iter().enumerate() {
            let image = image.to_slice().expect("standard layout");
            for ty in 0..self.tiles_y {
                for tx in 0..self.tiles_x {
                    for by in 0..m {
                        for bx in 0..m {
                            let px = &mut block[(by * m + bx) * c..][..c];
                            let (iy, ix) = (ty * m + by, tx * m + bx);
                            if iy < h && ix < w {
                                px.copy_from_slice(&image[(iy * w + ix) * c..][..c]);
                            } else {
                                px.fill(0.0);
                            }
                        }
                    }
                    let t = n * self.per_image() + ty * self.tiles_x + tx;
                    sandwich(
                        &at,
                        (a, m, c),
                        &block,
                        c,
                        &mut tmp,
                        &mut z[t * c..],
                        total * c,
                    );
                }
            }
        }
    }

    /// `Y = Aᵀ M A (+ bias)` of every tile of `m_ (α², n·tiles, c_out)` into `y (n, h·w·c_out)`,
    /// every value written; outputs past the edge are dropped.
    fn output_transform(&self, prod: &[f32], bias: Option<&[f32]>, mut y: ArrayViewMut2<'_, f32>) {
        let (a, m) = (self.tile.alpha(), self.tile.m());
        let (h, w) = (self.image.height, self.image.width);
        let c = y.ncols() / self.image.pixels();
        let total = y.nrows() * self.per_image();
        let mut block = vec![0.0f32; m * m * c];
        let mut tmp = vec![0.0f32; m * a * c];
        for (n, mut image) in y.rows_mut().into_iter().enumerate() {
            let image = image.as_slice_mut().expect("standard layout");
            for ty in 0..self.tiles_y {
                for tx in 0..self.tiles_x {
                    let t = n * self.per_image() + ty * self.tiles_x + tx;
                    let src = &prod[t * c..];
                    sandwich(
                        self.tile.at(),
                        (m, a, c),
                        src,
                        total * c,
                        &mut tmp,
                        &mut block,
                        c,
                    );
                    for by in 0..m.min(h - ty * m) {
                        for bx in 0..m.min(w - tx * m) {
                            let (iy, ix) = (ty * m + by, tx * m + bx);
                            let px = &mut image[(iy * w + ix) * c..][..c];
                            px.copy_from_slice(&block[(by * m + bx) * c..][..c]);
                            if let Some(b) = bias {
                                px.iter_mut().zip(b).for_each(|(p, &b)| *p += b);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The `α²` products `out_ξ (T, q) = v_ξ (T, p) · u_ξ (p, q)`, with `v (α², T, p)` and
/// `out (α², T, q)` flat and `u (α², p·q)`.
fn products(v: &[f32], u: &Array2<f32>, out: &mut [f32], tiles: usize) {
    let p = v.len() / u.nrows() / tiles;
    let q = u.ncols() / p;
    for (xi, u) in u.rows().into_iter().enumerate() {
        let u = u.into_shape_with_order((p, q)).expect("contiguous");
        let v = ArrayView2::from_shape((tiles, p), &v[xi * tiles * p..][..tiles * p])
            .expect("tile block shape");
        let o = ArrayViewMut2::from_shape((tiles, q), &mut out[xi * tiles * q..][..tiles * q])
            .expect("tile block shape");
        matmul_into_seq(o, v, u, 1.0, false);
    }
}

/// A Winograd convolution of fixed geometry: 3×3 kernel, stride 1, padding 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Winograd {
    /// The tile size.
    pub tile: Tile,
    /// The input geometry `h × w × c_in`.
    pub input: Geometry,
    /// Output channels.
    pub c_out: usize,
}

/// Transformed-tile bytes a task aims at (input and product tiles of a group together):
/// larger than im2col's group because each group runs `α²` separate products, and small
/// products spend more of their time outside the multiply loop.
const GROUP_BYTES: usize = 2 << 20;

impl Winograd {
    fn tiling(&self) -> Tiling {
        Tiling::new(self.tile, self.input)
    }

    /// Rows of the transformed input per image: `α² · tiles`.
    fn rows_per_image(&self) -> usize {
        self.tile.alpha().pow(2) * self.tiling().per_image()
    }

    /// Images per task, from the geometry alone.
    pub fn group(&self) -> usize {
        let bytes = self.rows_per_image() * (self.input.channels + self.c_out) * 4;
        (GROUP_BYTES / bytes.max(1)).max(1)
    }

    /// `x (batch, h·w·c_in)` → `y (batch, h·w·c_out)` with `weight (c_out, c_in, 3, 3)` and
    /// `bias (c_out,)`; when `keep`, also the transformed input `V (batch · α² · tiles, c_in)`
    /// (per group of [`group`](Winograd::group) images, `(α², tiles, c_in)` each), which
    /// [`backward`](Winograd::backward) takes for the weight gradient.
    pub fn forward(
        &self,
        weight: &Array4<f32>,
        bias: &Array1<f32>,
        x: ArrayView2<'_, f32>,
        keep: bool,
    ) -> (Array2<f32>, Option<Array2<f32>>) {
        let u = filter_transform(self.tile, weight);
        let bias = bias.as_slice().expect("a fresh bias is contiguous");
        let (c_in, group) = (self.input.channels, self.group());
        let mut kept = keep.then(|| recycle::scratch((x.nrows() * self.rows_per_image(), c_in)));
        let mut kept_groups: Vec<Option<ArrayViewMut2<'_, f32>>> = match kept.as_mut() {
            Some(k) => k
                .axis_chunks_iter_mut(Axis(0), group * self.rows_per_image())
                .map(Some)
                .collect(),
            None => (0..x.nrows().div_ceil(group)).map(|_| None).collect(),
        };
        let mut y = recycle::scratch((x.nrows(), self.input.pixels() * self.c_out));
        y.axis_chunks_iter_mut(Axis(0), group)
            .into_par_iter()
            .zip(x.axis_chunks_iter(Axis(0), group).into_par_iter())
            .zip(kept_groups.par_iter_mut())
            .for_each(|((y, x), kept)| {
                let rows = x.nrows() * self.rows_per_image();
                let v_len = if kept.is_some() { 0 } else { rows * c_in };
                with_scratch(v_len + rows * self.c_out, |buf| {
                    let (v_buf, m_buf) = buf.split_at_mut(v_len);
                    let v = match kept {
                        Some(k) => k.as_slice_mut().expect("kept tiles are contiguous"),
                        None => v_buf,
                    };
                    self.convolve(&u, x, v, m_buf, Some(bias), y);
                });
            });
        drop(kept_groups);
        (y, kept)
    }

    /// One group: transform `x` into `v`, multiply by `u` into `m`, transform back into `y`.
    fn convolve(
        &self,
        u: &Array2<f32>,
        x: ArrayView2<'_, f32>,
        v: &mut [f32],
        m: &mut [f32],
        bias: Option<&[f32]>,
        y: ArrayViewMut2<'_, f32>,
    ) {
        let tiling = Tiling::new(
            self.tile,
            Geometry {
                channels: x.ncols() / self.input.pixels(),
                ..self.input
            },
        );
        let tiles = x.nrows() * tiling.per_image();
        tiling.input_transform(x, v);
        products(v, u, m, tiles);
        tiling.output_transform(m, bias, y);
    }

    /// Given the input `x (batch, h·w·c_in)`, the transformed input the training pass kept
    /// (or `None`: it is computed again) and `dy (batch, h·w·c_out)`: `(dx, dW, db)`, `dx`
    /// only when `need_dx`. Shapes as in [`forward`](Winograd::forward).
    pub fn backward(
        &self,
        weight: &Array4<f32>,
        x: ArrayView2<'_, f32>,
        kept: Option<&Array2<f32>>,
        dy: ArrayView2<'_, f32>,
        need_dx: bool,
    ) -> (Option<Array2<f32>>, Array4<f32>, Array1<f32>) {
        let (c_in, c_out, group) = (self.input.channels, self.c_out, self.group());
        let a2 = self.tile.alpha().pow(2);
        let u_flip = need_dx.then(|| filter_transform(self.tile, &flipped(weight)));
        let kept: Vec<Option<ArrayView2<'_, f32>>> = match kept {
            Some(k) => k
                .axis_chunks_iter(Axis(0), group * self.rows_per_image())
                .map(Some)
                .collect(),
            None => (0..x.nrows().div_ceil(group)).map(|_| None).collect(),
        };
        let mut dx = need_dx.then(|| recycle::scratch(x.dim()));
        let mut dx_groups: Vec<Option<ArrayViewMut2<'_, f32>>> = match dx.as_mut() {
            Some(dx) => dx.axis_chunks_iter_mut(Axis(0), group).map(Some).collect(),
            None => (0..x.nrows().div_ceil(group)).map(|_| None).collect(),
        };
        // Each group's share of dU and db, added up below in group order.
        let parts: Vec<(Array2<f32>, Array1<f32>)> = dx_groups
            .par_iter_mut()
            .zip(x.axis_chunks_iter(Axis(0), group).into_par_iter())
            .zip(dy.axis_chunks_iter(Axis(0), group).into_par_iter())
            .zip(kept.into_par_iter())
            .map(|(((dx, x), dy), kept)| {
                let rows = x.nrows() * self.rows_per_image();
                let mut du = Array2::<f32>::zeros((a2, c_in * c_out));
                let v_len = if kept.is_some() { 0 } else { rows * c_in };
                let dx_len = if dx.is_some() {
                    rows * (c_in + c_out)
                } else {
                    0
                };
                with_scratch(v_len + rows * c_out + dx_len, |buf| {
                    let (v_buf, rest) = buf.split_at_mut(v_len);
                    let (z, rest) = rest.split_at_mut(rows * c_out);
                    let v: &[f32] = match kept {
                        Some(k) => k.to_slice().expect("kept tiles are contiguous"),
                        None => {
                            self.tiling().input_transform(x, v_buf);
                            v_buf
                        }
                    };
                    let dy_tiling = Tiling::new(
                        self.tile,
                        Geometry {
                            channels: c_out,
                            ..self.input
                        },
                    );
                    dy_tiling.gradient_transform(dy, z);
                    self.weight_products(v, z, &mut du, rows / a2);
                    if let (Some(dx), Some(u_flip)) = (dx, u_flip.as_ref()) {
                        let (v2, m2) = rest.split_at_mut(rows * c_out);
                        self.convolve(u_flip, dy, v2, m2, None, dx.view_mut());
                    }
                });
                let pixels = dy.len() / c_out;
                let per_pixel = dy
                    .into_shape_with_order((pixels, c_out))
                    .expect("contiguous");
                (du, per_pixel.sum_axis(Axis(0)))
            })
            .collect();
        drop(dx_groups);
        let mut du = Array2::<f32>::zeros((a2, c_in * c_out));
        let mut db = Array1::<f32>::zeros(c_out);
        for (u, b) in &parts {
            du += u;
            db += b;
        }
        (dx, filter_gradient(self.tile, &du, c_out, c_in), db)
    }

    /// `dU_ξ (c_in, c_out) = V_ξᵀ · Z_ξ` for every position, into `du (α², c_in·c_out)`.
    fn weight_products(&self, v: &[f32], z: &[f32], du: &mut Array2<f32>, tiles: usize) {
        let (c_in, c_out) = (self.input.channels, self.c_out);
        for (xi, du) in du.rows_mut().into_iter().enumerate() {
            let du = du.into_shape_with_order((c_in, c_out)).expect("contiguous");
            let v = ArrayView2::from_shape((tiles, c_in), &v[xi * tiles * c_in..][..tiles * c_in])
                .expect("tile block shape");
            let z =
                ArrayView2::from_shape((tiles, c_out), &z[xi * tiles * c_out..][..tiles * c_out])
                    .expect("tile block shape");
            matmul_into_seq(du, v.t(), z, 1.0, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::{Algorithm, Conv2d};
    use crate::nn::{Layer, Mode};
    use rand::SeedableRng;

    /// Values in [−1, 1) from a hash of their index: no pattern the transforms could align with.
    fn hashed(n: usize, seed: u64) -> impl Iterator<Item = f32> {
        (0..n as u64).map(move |i| {
            let h = (i ^ (seed << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
    }

    fn matrix(shape: (usize, usize), seed: u64) -> Array2<f32> {
        Array2::from_shape_vec(shape, hashed(shape.0 * shape.1, seed).collect()).unwrap()
    }

    fn layer(input: Geometry, c_out: usize, algorithm: Algorithm) -> Conv2d {
        let shape = (c_out, input.channels, 3, 3);
        let w = Array4::from_shape_vec(shape, hashed(c_out * input.channels * 9, 7).collect());
        let mut conv = Conv2d::new(input, w.unwrap(), 1);
        conv.bias = Array1::from_iter(hashed(c_out, 8));
        conv.set_algorithm(algorithm);
        conv
    }

    /// The oracle's plain loops (those of `conv::reference_forward` and
    /// `conv::reference_backward`, for 3×3, stride 1, padding 1) summing in f64: `(y, dx, dW,
    /// db)` of `conv` at `x` and `dy`, flat in the fast path's layouts. Its own rounding is
    /// negligible next to f32's, so an error measured against it is the fast path's alone.
    fn oracle64(conv: &Conv2d, x: &Array2<f32>, dy: &Array2<f32>) -> [Vec<f64>; 4] {
        let g = conv.input();
        let (c_out, c_in, _, _) = conv.weight.dim();
        let (mut y, mut dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
        let (mut dw, mut db) = (vec![0.0; conv.weight.len()], vec![0.0; c_out]);
        for (b, oy, ox, o) in itertools(x.nrows(), g.height, g.width, c_out) {
            let at_y = b * g.pixels() * c_out + (oy * g.width + ox) * c_out + o;
            let d = f64::from(dy.as_slice().unwrap()[at_y]);
            let mut sum = f64::from(conv.bias[o]);
            db[o] += d;
            for (ky, kx) in (0..9).map(|k| (k / 3, k % 3)) {
                let (Some(iy), Some(ix)) = ((oy + ky).checked_sub(1), (ox + kx).checked_sub(1))
                else {
                    continue;
                };
                if iy >= g.height || ix >= g.width {
                    continue;
                }
                for ci in 0..c_in {
                    let at_x = b * g.len() + (iy * g.width + ix) * c_in + ci;
                    let w = f64::from(conv.weight[[o, ci, ky, kx]]);
                    let v = f64::from(x.as_slice().unwrap()[at_x]);
                    sum += w * v;
                    dx[at_x] += d * w;
                    dw[((o * c_in + ci) * 3 + ky) * 3 + kx] += d * v;
                }
            }
            y[at_y] = sum;
        }
        [y, dx, dw, db]
    }

    /// Every `(b, oy, ox, o)` in row-major order.
    fn itertools(
        n: usize,
        h: usize,
        w: usize,
        c: usize,
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        (0..n * h * w * c).map(move |i| (i / (h * w * c), i / (w * c) % h, i / c % w, i % c))
    }

    /// `max |got − want| / magnitude`, elementwise, over `magnitude > 0`.
    fn relative_error<'a>(
        got: impl IntoIterator<Item = &'a f32>,
        want: &[f64],
        magnitude: &[f64],
    ) -> f32 {
        got.into_iter()
            .zip(want)
            .zip(magnitude)
            .filter(|(_, m)| **m > 0.0)
            .map(|((g, w), m)| ((f64::from(*g) - w).abs() / m) as f32)
            .fold(0.0, f32::max)
    }

    /// `(forward, input gradient, weight gradient)` errors of `algorithm` against the oracle,
    /// each relative to the magnitude of the values (the oracle on absolute values).
    fn errors(input: Geometry, c_out: usize, batch: usize, algorithm: Algorithm) -> [f32; 3] {
        let conv = layer(input, c_out, algorithm);
        let x = matrix((batch, input.len()), 1);
        let dy = matrix((batch, input.pixels() * c_out), 2);
        let mut abs = conv.clone();
        abs.weight.mapv_inplace(f32::abs);
        abs.bias.mapv_inplace(f32::abs);
        let [y, dx, dw, db] = oracle64(&conv, &x, &dy);
        let [my, mdx, mdw, mdb] = oracle64(&abs, &x.mapv(f32::abs), &dy.mapv(f32::abs));
        let (got, _) = conv.forward(x.view(), &mut Mode::Infer);
        let back = conv.backward(x.view(), got.view(), &None, dy.clone(), true);
        let bias = relative_error(&back.grads[1], &db, &mdb);
        assert!(bias < 1e-5, "bias gradient error {bias}");
        [
            relative_error(&got, &y, &my),
            relative_error(back.dx.as_ref().unwrap(), &dx, &mdx),
            relative_error(&back.grads[0], &dw, &mdw),
        ]
    }

    /// Odd sides, sides that are not a multiple of the tile, one pixel, one channel, and
    /// more images than a group.
    const CASES: [(usize, usize, usize, usize, usize); 6] = [
        (4, 4, 8, 16, 3),
        (7, 5, 3, 4, 2),
        (1, 1, 2, 3, 2),
        (9, 10, 5, 6, 2),
        (6, 3, 1, 1, 3),
        (16, 16, 32, 32, 20),
    ];

    #[test]
    fn transform_matrices_compute_the_one_dimensional_correlation() {
        for tile in [Tile::F2, Tile::F4] {
            let (m, a) = (tile.m(), tile.alpha());
            let g: Vec<f64> = hashed(3, 3).map(f64::from).collect();
            let d: Vec<f64> = hashed(a, 4).map(f64::from).collect();
            let mat = |l: &[f32], r: usize, v: &[f64]| -> Vec<f64> {
                (0..r)
                    .map(|i| {
                        (0..v.len())
                            .map(|k| f64::from(l[i * v.len() + k]) * v[k])
                            .sum()
                    })
                    .collect()
            };
            let prod: Vec<f64> = mat(tile.g(), a, &g)
                .iter()
                .zip(mat(tile.bt(), a, &d))
                .map(|(u, v)| u * v)
                .collect();
            let y = mat(tile.at(), m, &prod);
            for (i, y) in y.iter().enumerate() {
                let want: f64 = (0..3).map(|k| g[k] * d[i + k]).sum();
                // The f32 matrices hold 1/6, 1/12 and 1/24 rounded: relative 6e-8 each.
                assert!(
                    (y - want).abs() < 1e-6,
                    "{tile:?} output {i}: {y} vs {want}"
                );
            }
        }
    }

    #[test]
    fn each_tile_size_stays_within_its_error_bound_in_forward_and_both_gradients() {
        for tile in [Tile::F2, Tile::F4] {
            let mut worst = [0.0f32; 3];
            let mut im2col = [0.0f32; 3];
            for (h, w, c_in, c_out, batch) in CASES {
                let g = Geometry::new(h, w, c_in);
                let e = errors(g, c_out, batch, Algorithm::Winograd(tile));
                let base = errors(g, c_out, batch, Algorithm::Im2col);
                for k in 0..3 {
                    worst[k] = worst[k].max(e[k]);
                    im2col[k] = im2col[k].max(base[k]);
                }
            }
            eprintln!("{tile:?}: forward, dx, dW errors {worst:?}; im2col {im2col:?}");
            let passes = ["forward", "input gradient", "weight gradient"];
            for ((what, e), bound) in passes.iter().zip(worst).zip(ERROR_BOUND[tile.index()]) {
                assert!(
                    e <= bound,
                    "{tile:?} {what}: error {e} over the bound {bound}"
                );
            }
        }
    }

    #[test]
    fn backward_from_the_kept_tiles_equals_backward_from_the_input() {
        let g = Geometry::new(6, 7, 4);
        for tile in [Tile::F2, Tile::F4] {
            let conv = layer(g, 5, Algorithm::Winograd(tile));
            let x = matrix((3, g.len()), 1);
            let mut rng = crate::Rng::seed_from_u64(1);
            let (y, kept) = conv.forward(x.view(), &mut Mode::Train(&mut rng));
            assert!(kept.is_some());
            assert_eq!(y, conv.forward(x.view(), &mut Mode::Infer).0);
            let dy = matrix(y.dim(), 2);
            let a = conv.backward(x.view(), y.view(), &kept, dy.clone(), true);
            let b = conv.backward(x.view(), y.view(), &None, dy.clone(), true);
            assert_eq!(a.grads, b.grads);
            assert_eq!(a.dx, b.dx);
            let no_dx = conv.backward(x.view(), y.view(), &kept, dy, false);
            assert!(no_dx.dx.is_none());
            assert_eq!(no_dx.grads, a.grads);
        }
    }

    #[test]
    fn results_are_the_same_bytes_on_one_and_two_threads() {
        let g = Geometry::new(16, 16, 32);
        for tile in [Tile::F2, Tile::F4] {
            let conv = layer(g, 32, Algorithm::Winograd(tile));
            let batch = 3 * conv.winograd().unwrap().group() + 1;
            let x = matrix((batch, g.len()), 1);
            let dy = matrix((batch, g.pixels() * 32), 2);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut rng = crate::Rng::seed_from_u64(1);
                    let (y, kept) = conv.forward(x.view(), &mut Mode::Train(&mut rng));
                    let back = conv.backward(x.view(), y.view(), &kept, dy.clone(), true);
                    (y, back.dx, back.grads)
                })
            };
            assert_eq!(run(1), run(2), "{tile:?}");
        }
    }
}
