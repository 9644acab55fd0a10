//! The matrix-product engines on the document's shapes, side by side in one run:
//! `cargo bench --bench matmul`. This is the measurement behind `src/linalg.rs`'s choice
//! (faer's kernel, one output block per thread). Times are best-of-N milliseconds.

use deepcat::linalg::bytes::{TileForm, gram_in};
use deepcat::linalg::{gram, matmul_into, matmul_reference};
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use std::time::Instant;

const REPEATS: usize = 5;

fn best_ms(mut f: impl FnMut()) -> f64 {
    f();
    (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn faer_ref(a: ArrayView2<'_, f32>) -> MatRef<'_, f32> {
    let s = a.strides();
    // SAFETY: pointer and strides of a live ndarray view, as in src/linalg.rs.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), a.nrows(), a.ncols(), s[0], s[1]) }
}

fn faer_mut(mut a: ArrayViewMut2<'_, f32>) -> MatMut<'_, f32> {
    let (r, c, s0, s1) = (a.nrows(), a.ncols(), a.strides()[0], a.strides()[1]);
    // SAFETY: as above, for a unique mutable view.
    unsafe { MatMut::from_raw_parts_mut(a.as_mut_ptr(), r, c, s0, s1) }
}

fn faer_par(c: &mut Array2<f32>, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) {
    let threads = rayon::current_num_threads();
    faer::linalg::matmul::matmul(
        faer_mut(c.view_mut()),
        Accum::Replace,
        faer_ref(a),
        faer_ref(b),
        1.0,
        Par::rayon(threads),
    );
}

fn main() {
    let (m, n, h) = (1348usize, 49152usize, 20usize);
    let x = Array2::from_shape_fn((m, n), |(i, j)| ((i * 7 + j * 13) % 256) as f32 / 255.0);
    let w = Array2::from_shape_fn((h, n), |(i, j)| {
        (((i * 31 + j * 17) % 97) as f32 - 48.0) / 1e4
    });
    let dz = Array2::from_shape_fn((m, h), |(i, j)| (((i * 3 + j * 5) % 11) as f32 - 5.0) / 1e3);
    let mut z = Array2::<f32>::zeros((m, h));
    let mut dw = Array2::<f32>::zeros((h, n));
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "{:<44} {:>10} {:>12} {:>10}",
        "product (the document's first layer)", "deepcat", "faer rayon", "ndarray"
    );
    let ours = best_ms(|| matmul_into(z.view_mut(), x.view(), w.t(), 1.0, false));
    let theirs = best_ms(|| faer_par(&mut z, x.view(), w.t()));
    let nd = best_ms(|| z = matmul_reference(x.view(), w.t()));
    println!(
        "{:<44} {ours:>10.1} {theirs:>12.1} {nd:>10.1}",
        "forward Z1 = X·W1ᵀ (1348×49152 · 49152×20)"
    );
    let ours = best_ms(|| matmul_into(dw.view_mut(), dz.t(), x.view(), 1.0, false));
    let theirs = best_ms(|| faer_par(&mut dw, dz.t(), x.view()));
    let nd = best_ms(|| dw = matmul_reference(dz.t(), x.view()));
    println!(
        "{:<44} {ours:>10.1} {theirs:>12.1} {nd:>10.1}",
        "weight gradient dW1 = dZ1ᵀ·X"
    );
    let t = Instant::now();
    let g = gram(x.view());
    println!(
        "{:<44} {:>10.1}",
        "Gram G = X·Xᵀ (lower triangle, once)",
        t.elapsed().as_secs_f64() * 1e3
    );
    exact_gram_forms(m, n);
    let ours = best_ms(|| matmul_into(z.view_mut(), g.view(), dz.view(), 1.0, false));
    let theirs = best_ms(|| faer_par(&mut z, g.view(), dz.view()));
    let nd = best_ms(|| z = matmul_reference(g.view(), dz.view()));
    println!(
        "{:<44} {ours:>10.2} {theirs:>12.2} {nd:>10.2}",
        "Gram step G·C (1348×1348 · 1348×20)"
    );
}

/// The exact Gram matrix of the document's image bytes, in its fastest form on this
/// processor (AVX-512 VNNI or AVX2 integer products) and in the f32 oracle form, alternating,
/// each the best of three: milliseconds and the ratio.
fn exact_gram_forms(m: usize, n: usize) {
    let x = Array2::from_shape_fn((m, n), |(i, j)| {
        ((i * 7 + j * 13 + (i * j) % 31) % 256) as u8
    });
    let (mut fast, mut oracle) = (f64::INFINITY, f64::INFINITY);
    let mut same = true;
    for _ in 0..3 {
        let t = Instant::now();
        let a = gram_in(x.view(), TileForm::Fastest);
        fast = fast.min(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let b = gram_in(x.view(), TileForm::F32);
        oracle = oracle.min(t.elapsed().as_secs_f64() * 1e3);
        same &= a == b;
    }
    println!(
        "{:<44} {fast:>10.1} {:>12} {oracle:>10.1}  ({:.2}x the f32 form, same values: {same})",
        "exact byte Gram (fastest form | f32 form)",
        "",
        oracle / fast
    );
}
