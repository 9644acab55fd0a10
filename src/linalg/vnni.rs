//! Exact integer dot products of byte rows with AVX-512 VNNI: the fast form of
//! [`bytes`](super::bytes)' exact Gram tiles, which keep their f32 form as the oracle.
//!
//! `vpdpbusd` multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four
//! products into one of 16 i32 lanes: 64 multiply-adds per instruction, four times an f32
//! fused multiply-add's 16. One side must be signed, so `y` is seen as `y − 128` (its top bit
//! flipped), and the sum is corrected back (the flip happens as `y` is loaded):
//!
//! ```text
//! Σ x·y = Σ x·(y − 128) + 128·Σ x
//! ```
//!
//! Columns are taken [`K_BLOCK`] at a time, so no i32 lane can overflow whatever the row
//! length; the blocks' sums are added in i64. Every sum is an exact integer, so the result is
//! the f32 path's, bit for bit (a test compares the two on awkward shapes).

// Indices into slices this module sizes itself; `expect`s state layout facts checked by
// `usable` before any kernel runs.
#![allow(clippy::expect_used)]

use ndarray::{Array2, ArrayView2};

/// Columns per block: a lane adds `K_BLOCK / 16` products of at most `255 · 128` (≈ 2²⁴ for
/// 4096 columns, far below 2³¹), and a tile's `128` rows of `y` over it (512 KiB) stay in a
/// core's L2 cache while every strip of `x` passes over them.
const K_BLOCK: usize = 4096;

/// Rows of `x` and of `y` per register tile: 16 accumulators, 8 loaded vectors.
const R: usize = 4;

/// Whether this processor has the instructions (AVX-512 F, BW and VNNI), checked at run time.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`tile_sums`] can run on these rows: the instructions are there and every row is
/// contiguous.
pub fn usable(x: ArrayView2<'_, u8>, y: ArrayView2<'_, u8>) -> bool {
    let contiguous = |a: &ArrayView2<'_, u8>| a.ncols() <= 1 || a.strides()[1] == 1;
    available() && contiguous(&x) && contiguous(&y)
}

/// The integer sums `x · yᵀ` (`x (a, k)`, `y (b, k)` bytes) in f64; on the diagonal of a Gram
/// matrix (`diagonal`: `y` is `x`) the lower triangle only, zeros above, as the f32 form.
///
/// # Panics
/// If [`usable`] is false for these rows.
pub fn tile_sums(x: ArrayView2<'_, u8>, y: ArrayView2<'_, u8>, diagonal: bool) -> Array2<f64> {
    assert!(
        usable(x, y),
        "vnni::tile_sums on a processor or layout it cannot use"
    );
    let ((a, k), b) = (x.dim(), y.nrows());
    let mut total = Array2::<i64>::zeros((a, b));
    if a == 0 || b == 0 {
        return total.mapv(|v| v as f64);
    }
    let x_rows = rows(x);
    let y_rows = rows(y);
    for k0 in (0..k).step_by(K_BLOCK) {
        let len = K_BLOCK.min(k - k0);
        for i0 in (0..a).step_by(R) {
            let xs: [&[u8]; R] = std::array::from_fn(|r| &x_rows[(i0 + r).min(a - 1)][k0..]);
            let j_end = if diagonal { (i0 + R).min(b) } else { b };
            for j0 in (0..j_end).step_by(R) {
                let ys: [&[u8]; R] = std::array::from_fn(|s| &y_rows[(j0 + s).min(b - 1)][k0..]);
                let sums = block(&xs, &ys, len);
                for (r, sums) in sums.iter().enumerate().take(a - i0) {
                    for (s, &v) in sums.iter().enumerate().take(b - j0) {
                        total[[i0 + r, j0 + s]] += i64::from(v);
                    }
                }
            }
        }
    }
    // Σ x·y = Σ x·(y − 128) + 128·Σ x.
    for (i, x) in x_rows.iter().enumerate() {
        let sx = row_sum(x);
        total.row_mut(i).iter_mut().for_each(|t| *t += 128 * sx);
    }
    if diagonal {
        for i in 0..a {
            for j in i + 1..b {
                total[[i, j]] = 0;
            }
        }
    }
    total.mapv(|v| v as f64)
}

/// The rows of a view whose columns are contiguous (checked by [`usable`]).
fn rows<'a>(m: ArrayView2<'a, u8>) -> Vec<&'a [u8]> {
    m.into_outer_iter()
        .map(|r| r.to_slice().expect("contiguous row"))
        .collect()
}

/// `Σ x` over a row of bytes.
fn row_sum(x: &[u8]) -> i64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: reached only after `usable` saw AVX-512 F and BW, which `row_sum_avx512`
        // is compiled for.
        unsafe { row_sum_avx512(x) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        x.iter().map(|&v| i64::from(v)).sum()
    }
}

/// [`row_sum`] by `vpsadbw` against zero: eight sums of eight bytes per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn row_sum_avx512(x: &[u8]) -> i64 {
    use std::arch::x86_64::*;
    let mut acc = _mm512_setzero_si512();
    let mut chunks = x.chunks_exact(64);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 64 bytes.
        let v = unsafe { _mm512_loadu_si512(c.as_ptr().cast()) };
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, _mm512_setzero_si512()));
    }
    let tail: i64 = chunks.remainder().iter().map(|&v| i64::from(v)).sum();
    _mm512_reduce_add_epi64(acc) + tail
}

/// `Σ x_r · (y_s − 128)` over `len` columns for a register tile of rows (`y`'s top bits are
/// flipped as it is loaded).
fn block(xs: &[&[u8]; R], ys: &[&[u8]; R], len: usize) -> [[i32; R]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: callers reach this only after `usable` saw AVX-512 F, BW and VNNI, the
        // features `block_vnni` is compiled for; every slice holds at least `len` bytes.
        unsafe { block_vnni(xs, ys, len) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xs, ys, len);
        unreachable!("vnni::usable is false off x86_64")
    }
}

/// [`block`] with `vpdpbusd`, 64 columns per step, the last step's bytes masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block_vnni(xs: &[&[u8]; R], ys: &[&[u8]; R], len: usize) -> [[i32; R]; R] {
    use std::arch::x86_64::*;
    assert!(xs.iter().chain(ys).all(|s| s.len() >= len));
    let top = _mm512_set1_epi8(i8::MIN);
    let mut acc = [[_mm512_setzero_si512(); R]; R];
    let mut xv = [_mm512_setzero_si512(); R];
    let mut yv = [_mm512_setzero_si512(); R];
    let mut k = 0;
    while k < len {
        let mask: __mmask64 = if len - k >= 64 {
            u64::MAX
        } else {
            (1u64 << (len - k)) - 1
        };
        // Plain loops, no closures: a closure would not inherit this function's features.
        for r in 0..R {
            // SAFETY: the masked lanes cover `k .. min(k + 64, len)`, inside every slice
            // (checked above); masked-off bytes are neither read nor faulted on.
            xv[r] = unsafe { _mm512_maskz_loadu_epi8(mask, xs[r].as_ptr().add(k).cast()) };
            // SAFETY: as for `x`. Masked-off bytes load as 0, flip to −128 and meet x's 0.
            let y = unsafe { _mm512_maskz_loadu_epi8(mask, ys[r].as_ptr().add(k).cast()) };
            yv[r] = _mm512_xor_si512(y, top);
        }
        for r in 0..R {
            for s in 0..R {
                acc[r][s] = _mm512_dpbusd_epi32(acc[r][s], xv[r], yv[s]);
            }
        }
        k += 64;
    }
    let mut out = [[0i32; R]; R];
    for r in 0..R {
        for s in 0..R {
            out[r][s] = _mm512_reduce_add_epi32(acc[r][s]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(rows: usize, cols: usize, seed: u64) -> Array2<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Array2::from_shape_fn((rows, cols), |_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
    }

    fn plain(x: &Array2<u8>, y: &Array2<u8>, diagonal: bool) -> Array2<f64> {
        Array2::from_shape_fn((x.nrows(), y.nrows()), |(i, j)| {
            if diagonal && j > i {
                return 0.0;
            }
            x.row(i)
                .iter()
                .zip(y.row(j))
                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                .sum::<i64>() as f64
        })
    }

    #[test]
    fn vnni_sums_are_the_exact_integer_sums() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this processor: the f32 form runs, nothing to compare");
            return;
        }
        // Row counts off the register tile, columns off the 64-byte step and past a block.
        for &(a, b, k) in &[(1, 1, 1), (7, 5, 63), (9, 13, 200), (6, 3, K_BLOCK + 65)] {
            let x = bytes(a, k, 1);
            let y = bytes(b, k, 2);
            assert_eq!(
                tile_sums(x.view(), y.view(), false),
                plain(&x, &y, false),
                "{a}x{b}x{k}"
            );
            assert_eq!(
                tile_sums(x.view(), x.view(), true),
                plain(&x, &x, true),
                "{a}x{k}"
            );
        }
        // The largest sums: all bytes 255.
        let x = Array2::from_elem((5, 3 * K_BLOCK), 255u8);
        assert_eq!(tile_sums(x.view(), x.view(), false), plain(&x, &x, false));
    }
}
