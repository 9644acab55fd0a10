//! The Gram engine's products with the training images, wherever the images are: one call on
//! the matrix in memory, or block by block for images streamed from a pack. Blocks are a
//! multiple of [`ROW_ALIGN`](crate::data::stream::ROW_ALIGN) rows, so each product meets the
//! same blocks of [`crate::linalg::bytes`] either way, and the Gram matrices are exact integer
//! sums: streamed results are the in-memory results, bit for bit.

use crate::data::Images;
use crate::linalg::bytes;
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, s};

fn read_error(e: std::io::Error) -> Error {
    Error::io("cannot read the training images from the decoded cache", e)
}

/// `(x/255)·(y/255)ᵀ` exactly (`y = x` when `None`, [`bytes::gram`]); a streamed `x` or `y`
/// is read one block at a time against each block of the other.
pub fn gram<'a>(x: Images<'a>, y: Option<Images<'a>>) -> Result<Array2<f32>> {
    match (x.in_memory(), y.map(|y| y.in_memory())) {
        (Some(x), None) => return Ok(bytes::gram(x)),
        (Some(x), Some(Some(y))) => return Ok(bytes::cross_gram(x, y)),
        _ => {}
    }
    let right = y.unwrap_or(x);
    let mut out = Array2::<f32>::zeros((x.nrows(), right.nrows()));
    x.for_each_block(|i0, xi| {
        let rows = i0..i0 + xi.nrows();
        right.for_each_block(|j0, yj| {
            let cols = j0..j0 + yj.nrows();
            // The lower triangle of a Gram matrix, mirrored as bytes::gram does.
            if y.is_none() && j0 > i0 {
                return Ok::<(), std::io::Error>(());
            }
            let block = if y.is_none() && i0 == j0 {
                bytes::gram(xi)
            } else {
                bytes::cross_gram(xi, yj)
            };
            out.slice_mut(s![rows.clone(), cols.clone()]).assign(&block);
            if y.is_none() && j0 < i0 {
                out.slice_mut(s![cols, rows.clone()]).assign(&block.t());
            }
            Ok(())
        })
    })
    .map_err(read_error)?;
    Ok(out)
}

/// `(x/255) · b` ([`bytes::unit_times`]), block by block of rows.
pub fn unit_times(x: Images<'_>, b: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let mut out = Array2::<f32>::zeros((x.nrows(), b.ncols()));
    x.for_each_block(|start, rows| {
        let end = start + rows.nrows();
        bytes::unit_times(out.slice_mut(s![start..end, ..]), rows, b);
        Ok::<(), std::io::Error>(())
    })
    .map_err(read_error)?;
    Ok(out)
}

/// `c = a · (x/255)` ([`bytes::times_unit`]), summed block by block of `x`'s rows in order.
pub fn times_unit(
    mut c: ArrayViewMut2<'_, f32>,
    a: ArrayView2<'_, f32>,
    x: Images<'_>,
) -> Result<()> {
    if let Some(x) = x.in_memory() {
        bytes::times_unit(c, a, x);
        return Ok(());
    }
    if x.nrows() == 0 {
        c.fill(0.0);
    }
    x.for_each_block(|start, rows| {
        let end = start + rows.nrows();
        bytes::times_unit_add(c.view_mut(), a.slice(s![.., start..end]), rows, start > 0);
        Ok::<(), std::io::Error>(())
    })
    .map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cache::{Fingerprint, PackWriter};
    use crate::data::{PackedRows, Preprocess};
    use rand::{RngExt, SeedableRng};
    use std::sync::Arc;

    /// `m` random rows of 8 px images, in memory and in an unnamed pack read 128 rows at a time.
    fn rows(m: usize, seed: u64) -> (Array2<u8>, PackedRows) {
        let pre = Preprocess {
            size: 8,
            ..Preprocess::default()
        };
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        let x = Array2::from_shape_fn((m, pre.features()), |_| rng.random::<u8>());
        let mut writer = PackWriter::anonymous(&pre).unwrap();
        let print = Fingerprint {
            len: 1,
            modified_ns: 2,
            changed_ns: 3,
        };
        let at: Vec<(u64, u32)> = x
            .rows()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let name = std::path::PathBuf::from(format!("{i}.png"));
                writer
                    .push(&name, print, Ok(r.to_slice().unwrap()))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let file = writer.persist().unwrap();
        let packed = PackedRows::new(Arc::new(file), at, pre.features(), 128);
        (x, packed)
    }

    #[test]
    fn streamed_products_are_the_in_memory_products_bit_for_bit() {
        let (x, px) = rows(300, 1);
        let (v, pv) = rows(150, 2);
        let (mem, streamed) = (Images::Memory(x.view()), Images::Packed(&px));
        assert_eq!(gram(streamed, None).unwrap(), bytes::gram(x.view()));
        let val = Images::Packed(&pv);
        assert_eq!(
            gram(val, Some(streamed)).unwrap(),
            bytes::cross_gram(v.view(), x.view())
        );
        assert_eq!(
            gram(val, Some(mem)).unwrap(),
            bytes::cross_gram(v.view(), x.view())
        );
        let mut rng = rand_pcg::Pcg64::seed_from_u64(3);
        let b = Array2::from_shape_fn((x.ncols(), 7), |_| rng.random::<f32>() - 0.5);
        assert_eq!(
            unit_times(streamed, b.view()).unwrap(),
            unit_times(mem, b.view()).unwrap()
        );
        let a = Array2::from_shape_fn((7, x.nrows()), |_| rng.random::<f32>() - 0.5);
        let (mut c1, mut c2) = (Array2::zeros((7, x.ncols())), Array2::zeros((7, x.ncols())));
        times_unit(c1.view_mut(), a.view(), streamed).unwrap();
        times_unit(c2.view_mut(), a.view(), mem).unwrap();
        assert_eq!(c1, c2);
    }

    #[test]
    fn a_row_changed_on_disk_is_an_error_not_other_pixels() {
        use std::os::unix::fs::FileExt;
        let (x, _) = rows(200, 4);
        let pre = Preprocess {
            size: 8,
            ..Preprocess::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let cache = crate::data::Cache::at(dir.path());
        let mut writer = cache.writer(dir.path(), &pre).unwrap();
        let print = Fingerprint {
            len: 1,
            modified_ns: 2,
            changed_ns: 3,
        };
        let mut at = Vec::new();
        for (i, r) in x.rows().into_iter().enumerate() {
            let name = std::path::PathBuf::from(format!("{i}.png"));
            at.push(
                writer
                    .push(&name, print, Ok(r.to_slice().unwrap()))
                    .unwrap()
                    .unwrap(),
            );
        }
        let file = writer.persist().unwrap();
        let packed = PackedRows::new(Arc::new(file), at.clone(), pre.features(), 128);
        assert_eq!(packed.select(&[5, 150]).unwrap().row(1), x.row(150));
        // Another process rewrites one byte of row 150 in place.
        let pack = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        let other = std::fs::OpenOptions::new().write(true).open(pack).unwrap();
        other
            .write_all_at(&[x[[150, 3]] ^ 1], at[150].0 + 3)
            .unwrap();
        let err = packed.select(&[5, 150]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(packed.select(&[5, 149]).is_ok());
    }
}
