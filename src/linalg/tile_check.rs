//! The check both integer forms of the exact Gram tiles pass (tests only): against plain i64
//! sums, on shapes off each form's register tile, step and block, and on the largest sums.

use super::bytes::{IntegerSums, integer_tile};
use ndarray::Array2;

/// Pseudo-random bytes (xorshift), the same for the same seed.
fn bytes(rows: usize, cols: usize, seed: u64) -> Array2<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array2::from_shape_fn((rows, cols), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 32) as u8
    })
}

/// `x · yᵀ` in i64, one sum at a time; the lower triangle only on a diagonal tile.
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

/// Asserts that `form` gives the plain sums: rows off a register tile, columns of one, one
/// short of a `step`, across a block boundary of `block` columns, and all bytes 255 over three
/// blocks.
pub fn check(form: IntegerSums, step: usize, block: usize) {
    for &(a, b, k) in &[
        (1, 1, 1),
        (7, 5, step - 1),
        (9, 13, 200),
        (6, 3, block + step + 1),
    ] {
        let x = bytes(a, k, 1);
        let y = bytes(b, k, 2);
        let got = integer_tile(form, x.view(), y.view(), false);
        assert_eq!(got, Some(plain(&x, &y, false)), "{a}x{b}x{k}");
        let got = integer_tile(form, x.view(), x.view(), true);
        assert_eq!(got, Some(plain(&x, &x, true)), "{a}x{k}");
    }
    let x = Array2::from_elem((5, 3 * block + 1), 255u8);
    let got = integer_tile(form, x.view(), x.view(), false);
    assert_eq!(got, Some(plain(&x, &x, false)));
}
