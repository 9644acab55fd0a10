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

use ndarray::Array2;

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

/// The integer sums `x · yᵀ` over `k` columns of byte rows `x` and `y`; on the diagonal of a
/// Gram matrix (`diagonal`: `y` is `x`) the lower triangle at least. The shape of
/// [`IntegerSums`](super::bytes::IntegerSums), which `bytes` wraps.
///
/// # Panics
/// If [`available`] is false, or a row is shorter than `k`.
pub fn sums(x: &[&[u8]], y: &[&[u8]], k: usize, diagonal: bool) -> Array2<i64> {
    assert!(
        available(),
        "vnni::sums on a processor without its instructions"
    );
    assert!(
        x.iter().chain(y).all(|r| r.len() >= k),
        "vnni::sums: a row is short"
    );
    let (a, b) = (x.len(), y.len());
    let mut total = Array2::<i64>::zeros((a, b));
    if a == 0 || b == 0 {
        return total;
    }
    for k0 in (0..k).step_by(K_BLOCK) {
        let len = K_BLOCK.min(k - k0);
        for i0 in (0..a).step_by(R) {
            let xs: [&[u8]; R] = std::array::from_fn(|r| &x[(i0 + r).min(a - 1)][k0..]);
            let j_end = if diagonal { (i0 + R).min(b) } else { b };
            for j0 in (0..j_end).step_by(R) {
                let ys: [&[u8]; R] = std::array::from_fn(|s| &y[(j0 + s).min(b - 1)][k0..]);
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
    for (i, x) in x.iter().enumerate() {
        let sx = row_sum(x);
        total.row_mut(i).iter_mut().for_each(|t| *t += 128 * sx);
    }
    total
}

/// `Σ x` over a row of bytes.
fn row_sum(x: &[u8]) -> i64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: reached only after `sums` checked `available` (AVX-512 F and BW among it), which `row_sum_avx512`
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
        // SAFETY: callers reach this only after `sums` saw AVX-512 F, BW and VNNI, the
        // features `block_vnni` is compiled for; every slice holds at least `len` bytes.
        unsafe { block_vnni(xs, ys, len) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xs, ys, len);
        unreachable!("vnni::available is false off x86_64")
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

    #[test]
    fn vnni_sums_are_the_exact_integer_sums() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this processor: the f32 form runs, nothing to compare");
            return;
        }
        super::super::tile_check::check(sums, 64, K_BLOCK);
    }
}
