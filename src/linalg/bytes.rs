//! Products with images kept as bytes.
//!
//! A decoded image is a row of bytes; the network sees each byte `v` as `v / 255` (an f32).
//! Keeping the bytes and scaling them block by block just before a product reads a quarter of
//! the memory of keeping f32 rows, and each block is scaled into a buffer that stays in cache.
//! Blocks are fixed in size and summed in a fixed order, so results do not depend on the
//! number of threads.
//!
//! The Gram matrix of byte rows is a matrix of integers, and [`gram`] computes it exactly:
//! products of bytes summed 256 columns at a time are integers below 2²⁴, which f32 holds
//! exactly whatever order the kernel adds them in; the blocks are then added in f64, where
//! every sum up to 2⁵³ is exact.

use super::matmul_into_seq;
use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip, s};
use rayon::prelude::*;

/// `1/255` in f64: `v · (1/255)` in f64, rounded to f32, is exactly the f32 quotient `v / 255`
/// for every byte (a test checks all 256), and multiplies vectorise where divisions crawl.
const INV_255: f64 = 1.0 / 255.0;

/// The value a byte stands for: `v / 255` (the f32 quotient), as deepcat has always scaled
/// pixels.
#[inline]
pub fn unit(v: u8) -> f32 {
    (f64::from(v) * INV_255) as f32
}

/// `dst = src / 255`, elementwise, for contiguous slices of the same length. With AVX2 and
/// FMA (checked at run time) in eight f32 lanes: `q = v·r` with `r` the f32 nearest `1/255`,
/// then one correction `q + (v − 255·q)·r` with fused multiply-adds, which gives the f32
/// quotient exactly for every byte (a test checks all 256). Without them, in f64 ([`unit`]).
/// With SSE2 alone the scaling inside the direct path's products took a third of an iteration.
#[inline]
fn scale_slice(src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the processor was just asked whether it has AVX2 and FMA, the only
        // requirement of `scale_slice_fma`; the function itself is safe code compiled for them.
        unsafe { scale_slice_fma(src, dst) };
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = unit(s);
    }
}

/// `v / 255` by a product and one fused correction (exact for bytes; see [`scale_slice`]).
/// Only fast where `mul_add` is an instruction.
#[inline]
fn unit_fma(v: u8) -> f32 {
    const R: f32 = 1.0 / 255.0;
    let x = f32::from(v);
    let q = x * R;
    (-q).mul_add(255.0, x).mul_add(R, q)
}

/// [`scale_slice`]'s loop by [`unit_fma`], compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scale_slice_fma(src: &[u8], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = unit_fma(s);
    }
}

/// `out = x / 255` for two blocks of the same shape, row by row (rows of `x` may be strided
/// slices of a larger matrix).
fn scale_block(x: ArrayView2<'_, u8>, mut out: ArrayViewMut2<'_, f32>) {
    for (row, mut o) in x.rows().into_iter().zip(out.rows_mut()) {
        match (row.as_slice(), o.as_slice_mut()) {
            (Some(r), Some(o)) => scale_slice(r, o),
            _ => Zip::from(&mut o).and(&row).for_each(|o, &v| *o = unit(v)),
        }
    }
}

/// Rows of bytes as values in `[0, 1]` (a new standard-layout array).
pub fn to_unit(x: ArrayView2<'_, u8>) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(x.dim());
    to_unit_into(x, out.view_mut());
    out
}

/// `out = x / 255`, elementwise; in parallel over rows for large blocks.
///
/// # Panics
/// If the shapes differ.
pub fn to_unit_into(x: ArrayView2<'_, u8>, mut out: ArrayViewMut2<'_, f32>) {
    assert_eq!(x.dim(), out.dim(), "to_unit_into: shapes differ");
    if x.len() >= 1 << 18 {
        Zip::from(out.rows_mut())
            .and(x.rows())
            .par_for_each(|o, x| scale_block(x.insert_axis(Axis(0)), o.insert_axis(Axis(0))));
    } else {
        scale_block(x, out);
    }
}

/// Rows `rows` of `x`, scaled to `[0, 1]` (a mini-batch), into `out` (`(rows.len(),
/// x.ncols())`), every value of which it writes.
///
/// # Panics
/// If `out` has another shape.
pub fn select_unit_into(x: ArrayView2<'_, u8>, rows: &[usize], mut out: ArrayViewMut2<'_, f32>) {
    assert_eq!(
        out.dim(),
        (rows.len(), x.ncols()),
        "select_unit_into: shape"
    );
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(rows.par_iter())
        .for_each(|(o, &r)| {
            scale_block(x.row(r).insert_axis(Axis(0)), o.insert_axis(Axis(0)));
        });
}

/// Rows per block of the left operand in [`unit_times`].
const LEFT_ROWS: usize = 32;
/// Columns per block of `x` in both products: a block of `LEFT_ROWS × BLOCK_COLS` f32 is
/// 512 KiB.
const BLOCK_COLS: usize = 4096;
/// Rows per block of `x` in [`times_unit`].
const RIGHT_ROWS: usize = 128;
/// Columns per block in [`times_unit`].
const RIGHT_COLS: usize = 1024;

/// `c = (x / 255) · b`: `x (m, k)` bytes, `b (k, n)`, `c (m, n)`. In parallel over blocks of
/// rows of `x`; each block is scaled a slice of columns at a time and multiplied into its
/// rows of `c`.
///
/// # Panics
/// If the shapes do not chain.
pub fn unit_times(mut c: ArrayViewMut2<'_, f32>, x: ArrayView2<'_, u8>, b: ArrayView2<'_, f32>) {
    assert!(
        x.ncols() == b.nrows() && c.nrows() == x.nrows() && c.ncols() == b.ncols(),
        "unit_times shapes do not chain: x {:?} · b {:?} into c {:?}",
        x.dim(),
        b.dim(),
        c.dim()
    );
    if x.ncols() == 0 {
        c.fill(0.0);
        return;
    }
    c.axis_chunks_iter_mut(Axis(0), LEFT_ROWS)
        .into_par_iter()
        .zip(x.axis_chunks_iter(Axis(0), LEFT_ROWS).into_par_iter())
        .for_each(|(mut c, x)| {
            let mut block = Array2::<f32>::zeros((x.nrows(), BLOCK_COLS.min(x.ncols())));
            for (j, start) in (0..x.ncols()).step_by(BLOCK_COLS).enumerate() {
                let end = (start + BLOCK_COLS).min(x.ncols());
                let mut scaled = block.slice_mut(s![.., ..end - start]);
                scale_block(x.slice(s![.., start..end]), scaled.view_mut());
                let b = b.slice(s![start..end, ..]);
                matmul_into_seq(c.view_mut(), scaled.view(), b, 1.0, j > 0);
            }
        });
}

/// `c = a · (x / 255)`: `a (m, k)`, `x (k, n)` bytes, `c (m, n)`. In parallel over blocks of
/// columns of `x`; each column block is scaled a slice of rows at a time and its products
/// summed in row order.
///
/// # Panics
/// If the shapes do not chain.
pub fn times_unit(c: ArrayViewMut2<'_, f32>, a: ArrayView2<'_, f32>, x: ArrayView2<'_, u8>) {
    times_unit_add(c, a, x, false);
}

/// [`times_unit`], added to `c` when `accumulate`: `c (+)= a · (x/255)`. Over consecutive
/// blocks of `x`'s rows (each a multiple of 128 rows but the last), in order, the sums are
/// those of one call on all the rows.
pub fn times_unit_add(
    mut c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    x: ArrayView2<'_, u8>,
    accumulate: bool,
) {
    assert!(
        a.ncols() == x.nrows() && c.nrows() == a.nrows() && c.ncols() == x.ncols(),
        "times_unit shapes do not chain: a {:?} · x {:?} into c {:?}",
        a.dim(),
        x.dim(),
        c.dim()
    );
    if x.nrows() == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    c.axis_chunks_iter_mut(Axis(1), RIGHT_COLS)
        .into_par_iter()
        .zip(x.axis_chunks_iter(Axis(1), RIGHT_COLS).into_par_iter())
        .for_each(|(mut c, x)| {
            let mut block = Array2::<f32>::zeros((RIGHT_ROWS.min(x.nrows()), x.ncols()));
            for (i, start) in (0..x.nrows()).step_by(RIGHT_ROWS).enumerate() {
                let end = (start + RIGHT_ROWS).min(x.nrows());
                let mut scaled = block.slice_mut(s![..end - start, ..]);
                scale_block(x.slice(s![start..end, ..]), scaled.view_mut());
                let a = a.slice(s![.., start..end]);
                matmul_into_seq(c.view_mut(), a, scaled.view(), 1.0, accumulate || i > 0);
            }
        });
}

/// Columns summed exactly in f32 per block: 256 products of two bytes (each at most 255²)
/// add up to less than 2²⁴.
const EXACT_COLS: usize = 256;

/// The Gram matrix of the scaled rows, `(x/255) · (x/255)ᵀ`, from the exact integer sums:
/// `x (m, k)` bytes → `(m, m)`, symmetric. Half of it is computed, then mirrored.
pub fn gram(x: ArrayView2<'_, u8>) -> Array2<f32> {
    exact_products(x, None, TileForm::Fastest)
}

/// How the exact integer sums of [`gram`] and [`cross_gram`] are computed. Every form gives
/// the same integers; `cargo bench --bench matmul` times them side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileForm {
    /// The fastest form this processor has: byte products with AVX-512 VNNI, else 16-bit
    /// products with AVX2, else f32.
    Fastest,
    /// f32 products of 256 columns at a time, added in f64: the oracle.
    F32,
}

/// [`gram`] computed in the given form.
pub fn gram_in(x: ArrayView2<'_, u8>, form: TileForm) -> Array2<f32> {
    exact_products(x, None, form)
}

/// `(x/255) · (y/255)ᵀ` from the exact integer sums: `x (p, k)`, `y (m, k)` bytes → `(p, m)`.
///
/// # Panics
/// If the rows differ in length.
pub fn cross_gram(x: ArrayView2<'_, u8>, y: ArrayView2<'_, u8>) -> Array2<f32> {
    assert_eq!(x.ncols(), y.ncols(), "cross_gram: rows differ in length");
    exact_products(x, Some(y), TileForm::Fastest)
}

/// Side of the output tiles of the exact products: a tile's f64 sums, its f32 block products
/// and its two blocks of converted rows stay in a core's cache while every block of columns
/// is added in, so the sums are never streamed through memory once per block.
const EXACT_TILE: usize = 128;

/// Integer sums of `x · yᵀ` (`y = x` when `None`, lower triangle only, then mirrored),
/// scaled by `1/255²`. The output is cut into tiles, computed in parallel, each in `form`
/// ([`tile_sums`] or its f32 oracle). Every sum is an exact integer, so the result
/// does not depend on the order of the sums, the tiling or the thread count.
fn exact_products(
    x: ArrayView2<'_, u8>,
    y: Option<ArrayView2<'_, u8>>,
    form: TileForm,
) -> Array2<f32> {
    let triangle = y.is_none();
    let y = y.unwrap_or(x);
    let (p, m) = (x.nrows(), y.nrows());
    let tiles: Vec<(usize, usize)> = (0..p)
        .step_by(EXACT_TILE)
        .flat_map(|i| {
            (0..m)
                .step_by(EXACT_TILE)
                .filter(move |&j| !triangle || j <= i)
                .map(move |j| (i, j))
        })
        .collect();
    let sums: Vec<Array2<f64>> = tiles
        .par_iter()
        .map(|&(i, j)| {
            let (xi, yj, diagonal) = (tile_rows(x, i), tile_rows(y, j), triangle && i == j);
            match form {
                TileForm::Fastest => tile_sums(xi, yj, diagonal),
                TileForm::F32 => tile_sums_f32(xi, yj, diagonal),
            }
        })
        .collect();
    let scale = 1.0 / (255.0f64 * 255.0);
    let mut out = Array2::<f32>::zeros((p, m));
    for (&(i, j), t) in tiles.iter().zip(&sums) {
        let (a, b) = t.dim();
        out.slice_mut(s![i..i + a, j..j + b])
            .zip_mut_with(t, |o, &t| *o = (t * scale) as f32);
    }
    if triangle {
        for i in 0..p {
            for j in 0..i {
                out[[j, i]] = out[[i, j]];
            }
        }
    }
    out
}

/// The rows of the tile starting at row `start`.
fn tile_rows(a: ArrayView2<'_, u8>, start: usize) -> ArrayView2<'_, u8> {
    let end = (start + EXACT_TILE).min(a.nrows());
    a.slice_move(s![start..end, ..])
}

/// One tile's integer sums `x · yᵀ` in f64 (`x (a, k)`, `y (b, k)` bytes); on the diagonal of
/// a Gram matrix (`y` is `x`), the lower triangle only. In the [`integer_form`] this processor
/// has where the rows are contiguous, else in f32 ([`tile_sums_f32`]): the same exact
/// integers every way.
fn tile_sums(x: ArrayView2<'_, u8>, y: ArrayView2<'_, u8>, diagonal: bool) -> Array2<f64> {
    integer_form()
        .and_then(|form| integer_tile(form, x, y, diagonal))
        .unwrap_or_else(|| tile_sums_f32(x, y, diagonal))
}

/// An integer form of the tile sums: byte rows `x` and `y` and their length `k` → `x · yᵀ` in
/// i64, on a diagonal tile (`y` is `x`) at least the lower triangle.
pub(super) type IntegerSums = fn(&[&[u8]], &[&[u8]], usize, bool) -> Array2<i64>;

/// The integer form this processor has: byte products with AVX-512 VNNI
/// ([`vnni`](super::vnni), 4× the multiply-adds per instruction of an f32 product), else
/// 16-bit products with AVX2 ([`madd16`](super::madd16), 2×); none without AVX2.
fn integer_form() -> Option<IntegerSums> {
    if super::vnni::available() {
        Some(super::vnni::sums)
    } else if super::madd16::available() {
        Some(super::madd16::sums)
    } else {
        None
    }
}

/// `form` on one tile, as [`tile_sums`] gives it (zeros above a diagonal tile's diagonal);
/// `None` if a view's rows are not contiguous.
pub(super) fn integer_tile(
    form: IntegerSums,
    x: ArrayView2<'_, u8>,
    y: ArrayView2<'_, u8>,
    diagonal: bool,
) -> Option<Array2<f64>> {
    let mut total = form(
        &contiguous_rows(x)?,
        &contiguous_rows(y)?,
        x.ncols(),
        diagonal,
    );
    if diagonal {
        for ((i, j), t) in total.indexed_iter_mut() {
            if j > i {
                *t = 0;
            }
        }
    }
    Some(total.mapv(|v| v as f64))
}

/// The rows of `m` as slices, if each is contiguous.
fn contiguous_rows<'a>(m: ArrayView2<'a, u8>) -> Option<Vec<&'a [u8]>> {
    m.into_outer_iter().map(|r| r.to_slice()).collect()
}

/// [`tile_sums`] in f32 products, 256 columns at a time, added in f64: the oracle of the
/// integer forms, and the form on processors with neither.
fn tile_sums_f32(x: ArrayView2<'_, u8>, y: ArrayView2<'_, u8>, diagonal: bool) -> Array2<f64> {
    let ((a, k), b) = (x.dim(), y.nrows());
    let mut total = Array2::<f64>::zeros((a, b));
    let mut part = Array2::<f32>::zeros((a, b));
    let mut xs = Array2::<f32>::zeros((a, EXACT_COLS.min(k)));
    let mut ys = Array2::<f32>::zeros((b, EXACT_COLS.min(k)));
    let whole = |v: &mut f32, &b: &u8| *v = f32::from(b);
    for start in (0..k).step_by(EXACT_COLS) {
        let end = (start + EXACT_COLS).min(k);
        let mut xb = xs.slice_mut(s![.., ..end - start]);
        xb.zip_mut_with(&x.slice(s![.., start..end]), whole);
        if !diagonal {
            let mut yb = ys.slice_mut(s![.., ..end - start]);
            yb.zip_mut_with(&y.slice(s![.., start..end]), whole);
        }
        let xb = xs.slice(s![.., ..end - start]);
        let yb = if diagonal {
            xb
        } else {
            ys.slice(s![.., ..end - start])
        };
        // On the diagonal only the lower triangle is written; the rest of `part` stays 0.
        faer::linalg::matmul::triangular::matmul(
            super::as_faer_mut(part.view_mut()),
            if diagonal {
                BlockStructure::TriangularLower
            } else {
                BlockStructure::Rectangular
            },
            Accum::Replace,
            super::as_faer(xb),
            BlockStructure::Rectangular,
            super::as_faer(yb.t()),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        total.zip_mut_with(&part, |t, &v| *t += f64::from(v));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::matmul_reference;
    use approx::assert_abs_diff_eq;

    fn bytes(rows: usize, cols: usize, seed: usize) -> Array2<u8> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * 131 + j * 71 + seed * 29 + (i * j) % 13) % 256) as u8
        })
    }

    /// The exact `(x/255)·(y/255)ᵀ` from u64 sums, rounded once to f32.
    fn exact(x: &Array2<u8>, y: &Array2<u8>) -> Array2<f32> {
        Array2::from_shape_fn((x.nrows(), y.nrows()), |(i, j)| {
            let sum: u64 = x
                .row(i)
                .iter()
                .zip(y.row(j))
                .map(|(&a, &b)| u64::from(a) * u64::from(b))
                .sum();
            (sum as f64 / (255.0 * 255.0)) as f32
        })
    }

    #[test]
    fn both_tile_forms_give_the_same_sums() {
        // Over two tiles, with rows and columns off every block size.
        let x = bytes(EXACT_TILE + 9, 4200, 3);
        let y = bytes(EXACT_TILE - 3, 4200, 4);
        let f32_form = tile_sums_f32(x.view(), y.view(), false);
        assert_eq!(tile_sums(x.view(), y.view(), false), f32_form);
        let diag = tile_sums_f32(x.view(), x.view(), true);
        assert_eq!(tile_sums(x.view(), x.view(), true), diag);
        if integer_form().is_none() {
            eprintln!("neither AVX-512 VNNI nor AVX2 here: both calls ran the f32 form");
        }
    }

    #[test]
    fn gram_of_bytes_is_exact_across_many_column_blocks() {
        // 1000 columns of values up to 255: the integer sums pass 2²⁴ (where f32 sums round)
        // by far, and span four blocks.
        let mut x = bytes(70, 1000, 1);
        x.row_mut(0).fill(255);
        let g = gram(x.view());
        assert_eq!(g, exact(&x, &x));
        assert_eq!(g, g.t());
        assert_eq!(g[[0, 0]], 1000.0);
        // An f32 product of the scaled rows rounds: it is close but not always equal.
        let xf = to_unit(x.view());
        assert_abs_diff_eq!(g, matmul_reference(xf.view(), xf.t()), epsilon = 1e-2);
    }

    #[test]
    fn cross_gram_of_bytes_is_exact() {
        let x = bytes(9, 700, 2);
        let y = bytes(40, 700, 3);
        assert_eq!(cross_gram(x.view(), y.view()), exact(&x, &y));
    }

    #[test]
    fn products_with_scaled_bytes_match_the_f32_products() {
        // Shapes that leave partial blocks in both directions.
        let x = bytes(77, 5000, 4);
        let xf = to_unit(x.view());
        let w = Array2::from_shape_fn((5000, 7), |(i, j)| ((i * 3 + j) % 11) as f32 / 11.0 - 0.5);
        let mut c = Array2::<f32>::from_elem((77, 7), f32::NAN);
        unit_times(c.view_mut(), x.view(), w.view());
        assert_abs_diff_eq!(c, matmul_reference(xf.view(), w.view()), epsilon = 2e-3);

        let a = Array2::from_shape_fn((6, 77), |(i, j)| ((i * 5 + j) % 7) as f32 / 7.0 - 0.5);
        let mut d = Array2::<f32>::from_elem((6, 5000), f32::NAN);
        times_unit(d.view_mut(), a.view(), x.view());
        assert_abs_diff_eq!(d, matmul_reference(a.view(), xf.view()), epsilon = 1e-3);
    }

    #[test]
    fn both_scalings_are_the_f32_quotient_for_every_byte() {
        for v in 0..=255u8 {
            assert_eq!(unit(v), f32::from(v) / 255.0, "byte {v}");
            assert_eq!(unit_fma(v), f32::from(v) / 255.0, "byte {v}, fused");
        }
        // And through the dispatching loop, whichever way it goes on this machine.
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0.0f32; 256];
        scale_slice(&all, &mut out);
        assert!(
            out.iter()
                .zip(&all)
                .all(|(&o, &v)| o == f32::from(v) / 255.0)
        );
    }

    #[test]
    fn scaling_is_the_loaders_division_by_255() {
        let x = bytes(3, 300, 5);
        let rows = [2, 0, 2];
        let mut picked = Array2::<f32>::zeros((3, 300));
        select_unit_into(x.view(), &rows, picked.view_mut());
        for (k, &r) in rows.iter().enumerate() {
            for j in 0..300 {
                assert_eq!(picked[[k, j]], f32::from(x[[r, j]]) / 255.0);
            }
        }
        assert_eq!(to_unit(x.view()).row(2), picked.row(0));
    }
}
