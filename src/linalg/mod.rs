//! The one matrix product, and the Gram product built on it.
//!
//! Every product in deepcat goes through [`matmul_into`], so the engine can be swapped and
//! benchmarked in one place. The engine is faer's sequential kernel (AVX-512/AVX2, chosen at
//! run time); we split the output into one block per rayon thread ourselves, because on the
//! document's skinny shapes (1348×49152 · 49152×20) that beats faer's own parallel split
//! (measured side by side: `cargo bench --bench matmul`).
//!
//! [`matmul_reference`] is the plain ndarray product, kept beside the fast path so the two can
//! be compared in tests. Neither knows anything about neural networks.
//!
//! Engines and thread counts differ by rounding: compare across them with tolerances.

pub mod bytes;
mod madd16;
#[cfg(test)]
mod tile_check;
mod vnni;

use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// When set, [`matmul_into`] uses [`matmul_reference`]'s engine instead of faer.
static USE_REFERENCE: AtomicBool = AtomicBool::new(false);

/// Makes every product in this process use the plain ndarray engine (`true`) or faer (`false`,
/// the default). For checks only: it shows how far two correct f32 products of the same
/// matrices drift apart over training.
pub fn use_reference_engine(on: bool) {
    USE_REFERENCE.store(on, Ordering::Relaxed);
}

/// Below this many multiply-adds a product runs on the calling thread: splitting costs more
/// than it saves (and faer's thread pool spins under load, see CRATES.md).
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// Borrows an ndarray view as a faer view, without copying.
fn as_faer(a: ArrayView2<'_, f32>) -> MatRef<'_, f32> {
    let (rows, cols) = a.dim();
    let strides = a.strides();
    // SAFETY: the pointer and strides come from a live ndarray view, which guarantees that every
    // element at `ptr + i*strides[0] + j*strides[1]` (i < rows, j < cols) is initialised and
    // readable for the view's lifetime, which the returned MatRef inherits.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), rows, cols, strides[0], strides[1]) }
}

/// Borrows a mutable ndarray view as a mutable faer view, without copying.
fn as_faer_mut(mut a: ArrayViewMut2<'_, f32>) -> MatMut<'_, f32> {
    let (rows, cols) = a.dim();
    let (rs, cs) = (a.strides()[0], a.strides()[1]);
    let ptr = a.as_mut_ptr();
    // SAFETY: as in `as_faer`; a mutable ndarray view is the unique borrow of its elements and
    // never aliases itself (ndarray forbids zero strides on mutable views of more than one
    // element), so the MatMut is the only access for its lifetime.
    unsafe { MatMut::from_raw_parts_mut(ptr, rows, cols, rs, cs) }
}

/// `c = alpha · a · b` (or `c += alpha · a · b` when `accumulate`).
///
/// Shapes: `a (m, k)`, `b (k, n)`, `c (m, n)`; any strides (transposed views are free).
///
/// # Panics
/// If the shapes do not chain; the message gives all three.
pub fn matmul_into(
    c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    alpha: f32,
    accumulate: bool,
) {
    matmul_on(c, a, b, alpha, accumulate, true);
}

/// The product of [`matmul_into`], split across threads only when `parallel`.
fn matmul_on(
    mut c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        a.ncols() == b.nrows() && c.nrows() == a.nrows() && c.ncols() == b.ncols(),
        "matmul shapes do not chain: a {:?} · b {:?} into c {:?}",
        a.dim(),
        b.dim(),
        c.dim()
    );
    if USE_REFERENCE.load(Ordering::Relaxed) {
        ndarray::linalg::general_mat_mul(alpha, &a, &b, if accumulate { 1.0 } else { 0.0 }, &mut c);
        return;
    }
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    let threads = rayon::current_num_threads();
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // faer's sequential kernel on one block of the output.
    let block = |c: ArrayViewMut2<'_, f32>, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>| {
        faer::linalg::matmul::matmul(
            as_faer_mut(c),
            accum,
            as_faer(a),
            as_faer(b),
            alpha,
            Par::Seq,
        )
    };
    if !parallel || threads < 2 || m * n * k < PARALLEL_MIN_WORK || m.max(n) < 2 * threads {
        block(c, a, b);
        return;
    }
    // One block of the output per thread, along its longer side: rows of `c` pair with rows of
    // `a`, columns of `c` with columns of `b`. Each block runs faer's sequential kernel. The
    // reduction dimension is never split, so results do not depend on the thread count.
    if m >= n {
        let chunk = m.div_ceil(threads);
        c.axis_chunks_iter_mut(Axis(0), chunk)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), chunk).into_par_iter())
            .for_each(|(c, a)| block(c, a, b));
    } else {
        let chunk = n.div_ceil(threads);
        c.axis_chunks_iter_mut(Axis(1), chunk)
            .into_par_iter()
            .zip(b.axis_chunks_iter(Axis(1), chunk).into_par_iter())
            .for_each(|(c, b)| block(c, a, b));
    }
}

/// [`matmul_into`] on the calling thread only: for products inside loops that are already
/// parallel (a convolution runs one per group of images on every thread). Same shapes, same
/// panics, the same engine (and so the same rounding as a sequential `matmul_into`).
pub fn matmul_into_seq(
    c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    alpha: f32,
    accumulate: bool,
) {
    matmul_on(c, a, b, alpha, accumulate, false);
}

/// `a · b` into a new standard-layout array. Shapes: `a (m, k)`, `b (k, n)` → `(m, n)`.
///
/// # Panics
/// If the shapes do not chain.
pub fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    matmul_into(c.view_mut(), a, b, 1.0, false);
    c
}

/// The plain ndarray product (matrixmultiply, one thread): the reference [`matmul`] is tested
/// against. Shapes as in [`matmul`].
pub fn matmul_reference(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    a.dot(&b)
}

/// The Gram matrix `x · xᵀ` of the rows of `x`: `x (m, n)` → `(m, m)`, symmetric.
///
/// Only the lower triangle is computed (half the work of a full product), then mirrored.
pub fn gram(x: ArrayView2<'_, f32>) -> Array2<f32> {
    let m = x.nrows();
    let mut g = Array2::<f32>::zeros((m, m));
    faer::linalg::matmul::triangular::matmul(
        as_faer_mut(g.view_mut()),
        BlockStructure::TriangularLower,
        Accum::Replace,
        as_faer(x),
        BlockStructure::Rectangular,
        as_faer(x.t()),
        BlockStructure::Rectangular,
        1.0,
        Par::rayon(rayon::current_num_threads()),
    );
    for i in 0..m {
        for j in 0..i {
            g[[j, i]] = g[[i, j]];
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::s;

    fn sample(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            (((i * 31 + j * 17 + seed * 7) % 97) as f32 - 48.0) / 50.0
        })
    }

    #[test]
    fn matmul_matches_reference_for_every_layout() {
        // Large enough to take the parallel split, in both directions, with transposed operands.
        for &(m, k, n) in &[
            (300, 500, 20),
            (20, 300, 700),
            (3, 5, 4),
            (1, 1, 1),
            (129, 257, 131),
        ] {
            let a = sample(m, k, 1);
            let b = sample(k, n, 2);
            let at = a.t().to_owned(); // (k, m) standard layout; at.t() is a transposed view
            let bt = b.t().to_owned();
            let expected = matmul_reference(a.view(), b.view());
            for (av, bv) in [
                (a.view(), b.view()),
                (at.t(), b.view()),
                (a.view(), bt.t()),
                (at.t(), bt.t()),
            ] {
                let got = matmul(av, bv);
                assert_abs_diff_eq!(got, expected, epsilon = 1e-3);
            }
        }
    }

    #[test]
    fn matmul_into_writes_strided_blocks_and_accumulates() {
        let a = sample(200, 3000, 3);
        let b = sample(3000, 40, 4);
        let mut big = Array2::<f32>::ones((210, 50));
        matmul_into(
            big.slice_mut(s![5..205, 3..43]),
            a.view(),
            b.view(),
            0.5,
            true,
        );
        let expected = matmul_reference(a.view(), b.view()) * 0.5 + 1.0;
        assert_abs_diff_eq!(big.slice(s![5..205, 3..43]), expected, epsilon = 1e-2);
        // Nothing outside the block was touched.
        assert_eq!(big[[0, 0]], 1.0);
        assert_eq!(big[[209, 49]], 1.0);
        assert_eq!(big[[4, 10]], 1.0);
        assert_eq!(big[[10, 43]], 1.0);
    }

    #[test]
    fn gram_is_symmetric_and_matches_the_product() {
        let x = sample(150, 900, 5);
        let g = gram(x.view());
        let expected = matmul_reference(x.view(), x.t());
        assert_abs_diff_eq!(g, expected, epsilon = 1e-2);
        assert_eq!(g, g.t());
    }
}
