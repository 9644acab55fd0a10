//! Exact integer dot products of byte rows with AVX2's `vpmaddwd`: the fast form of
//! [`bytes`](super::bytes)' exact Gram tiles on processors without AVX-512 VNNI (which
//! [`vnni`](super::vnni) serves). The f32 tile form stays the oracle.
//!
//! Each block of [`K_BLOCK`] columns is first widened to 16-bit integers, once per tile.
//! `vpmaddwd` then multiplies 16 pairs of them and adds neighbouring products into 8 i32
//! lanes: 16 multiply-adds per instruction, twice an AVX2 f32 fused multiply-add's 8, and no
//! sum is ever rounded. A lane adds at most `2 · 255²` per step of 16 columns, so it cannot
//! overflow below about 260,000 columns; the blocks' sums are added in i64 all the same.
//! Every sum is an exact integer, so the result is the f32 path's, bit for bit (a test
//! compares the two on awkward shapes).

use ndarray::Array2;

/// Columns per block: long, because each register tile's sums are gathered across lanes
/// once per block (summed lane by lane, 512 columns ran at 0.97× the f32 form, 2048 at 1.10×;
/// by horizontal adds, 4096 at 1.18×, on a Zen 3 core pair); a register tile's rows of `x`
/// (24 KiB) stay in L1 while `y`'s pass.
const K_BLOCK: usize = 4096;

/// Columns per step of the kernel: one 256-bit vector of i16.
const STEP: usize = 16;

/// Rows of `x` per register tile.
const RX: usize = 3;
/// Rows of `y` per register tile: 12 accumulators, 3 vectors of `x` and one of `y` at a time
/// fill AVX2's 16 registers (3 × 4 ran 1.1× a 2 × 4 tile on a Zen 3 core).
const RY: usize = 4;

/// Whether this processor has AVX2, checked at run time.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
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
        "madd16::sums on a processor without its instructions"
    );
    assert!(
        x.iter().chain(y).all(|r| r.len() >= k),
        "madd16::sums: a row is short"
    );
    let (a, b) = (x.len(), y.len());
    let mut total = Array2::<i64>::zeros((a, b));
    if a == 0 || b == 0 {
        return total;
    }
    let mut xw = vec![0i16; a * K_BLOCK];
    let mut yw = vec![0i16; if diagonal { 0 } else { b * K_BLOCK }];
    for k0 in (0..k).step_by(K_BLOCK) {
        let len = K_BLOCK.min(k - k0);
        let width = len.div_ceil(STEP) * STEP;
        widen(x, k0, len, width, &mut xw);
        if !diagonal {
            widen(y, k0, len, width, &mut yw);
        }
        let ys_all: &[i16] = if diagonal { &xw } else { &yw };
        for i0 in (0..a).step_by(RX) {
            let xs: [&[i16]; RX] = std::array::from_fn(|r| row(&xw, (i0 + r).min(a - 1), width));
            let j_end = if diagonal { (i0 + RX).min(b) } else { b };
            for j0 in (0..j_end).step_by(RY) {
                let ys: [&[i16]; RY] =
                    std::array::from_fn(|s| row(ys_all, (j0 + s).min(b - 1), width));
                let sums = block(&xs, &ys, width);
                for (r, sums) in sums.iter().enumerate().take(a - i0) {
                    for (s, &v) in sums.iter().enumerate().take(b - j0) {
                        total[[i0 + r, j0 + s]] += i64::from(v);
                    }
                }
            }
        }
    }
    total
}

/// Row `i` of widened rows `width` long.
fn row(m: &[i16], i: usize, width: usize) -> &[i16] {
    &m[i * width..(i + 1) * width]
}

/// Columns `k0 .. k0 + len` of each row as i16, each row `width` long (zero past `len`), one
/// after another in `out`.
fn widen(rows: &[&[u8]], k0: usize, len: usize, width: usize, out: &mut [i16]) {
    for (row, out) in rows.iter().zip(out.chunks_exact_mut(width)) {
        let (head, tail) = out.split_at_mut(len);
        head.iter_mut()
            .zip(&row[k0..k0 + len])
            .for_each(|(o, &v)| *o = i16::from(v));
        tail.fill(0);
    }
}

/// `Σ x_r · y_s` over `width` columns (a multiple of [`STEP`]) for a register tile of rows.
fn block(xs: &[&[i16]; RX], ys: &[&[i16]; RY], width: usize) -> [[i32; RY]; RX] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: callers reach this only after `sums` saw AVX2, the feature `block_avx2`
        // is compiled for; every slice holds `width` values.
        unsafe { block_avx2(xs, ys, width) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xs, ys, width);
        unreachable!("madd16::available is false off x86_64")
    }
}

/// [`block`] with `vpmaddwd`, 16 columns per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_avx2(xs: &[&[i16]; RX], ys: &[&[i16]; RY], width: usize) -> [[i32; RY]; RX] {
    use std::arch::x86_64::*;
    assert!(width.is_multiple_of(STEP) && xs.iter().chain(ys).all(|s| s.len() >= width));
    let mut acc = [[_mm256_setzero_si256(); RY]; RX];
    let mut k = 0;
    while k < width {
        // Plain loops, no closures: a closure would not inherit this function's features.
        let mut xv = [_mm256_setzero_si256(); RX];
        for r in 0..RX {
            // SAFETY: `k + 16 <= width <= xs[r].len()` (checked above).
            xv[r] = unsafe { _mm256_loadu_si256(xs[r].as_ptr().add(k).cast()) };
        }
        for s in 0..RY {
            // SAFETY: as for `x`.
            let y = unsafe { _mm256_loadu_si256(ys[s].as_ptr().add(k).cast()) };
            for r in 0..RX {
                acc[r][s] = _mm256_add_epi32(acc[r][s], _mm256_madd_epi16(xv[r], y));
            }
        }
        k += STEP;
    }
    // Each row's four accumulators summed across their lanes at once: pairwise horizontal
    // adds leave [Σ a0, Σ a1, Σ a2, Σ a3] split over the two 128-bit halves.
    let mut out = [[0i32; RY]; RX];
    for r in 0..RX {
        let [a0, a1, a2, a3] = acc[r];
        let h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
        let sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        // SAFETY: `out[r]` holds exactly one 128-bit vector.
        unsafe { _mm_storeu_si128(out[r].as_mut_ptr().cast(), sums) };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madd16_sums_are_the_exact_integer_sums() {
        if !available() {
            eprintln!("no AVX2 on this processor: the f32 form runs, nothing to compare");
            return;
        }
        super::super::tile_check::check(sums, STEP, K_BLOCK);
    }
}
