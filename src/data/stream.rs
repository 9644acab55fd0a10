//! Images larger than memory: rows kept in a pack on disk (the decoded cache, or an unnamed
//! temporary pack) and read when they are needed, a mini-batch or a block of rows at a time.
//!
//! [`Images`] is what training and prediction read: the bytes in memory, or [`PackedRows`].
//! Every row read from a pack is checked against its CRC-32, so a pack changed under a
//! running job is an error, never a silently different image. The bytes read are the bytes
//! decoding gives, so a streamed run computes with exactly the values an in-memory run does.

use super::Dataset;
use super::cache::read_at;
use ndarray::{Array2, ArrayView2, Axis};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// Rows are read in blocks of a multiple of this many rows, so that the blocked products of
/// [`crate::linalg::bytes`] (32 and 128 rows at a time) meet the same blocks in memory and
/// streamed: same sums in the same order, same results.
pub const ROW_ALIGN: usize = 128;

/// Rows of image bytes in a pack file: where each row is and its CRC-32.
#[derive(Debug, Clone)]
pub struct PackedRows {
    file: Arc<File>,
    rows: Vec<(u64, u32)>,
    features: usize,
    block_rows: usize,
}

impl PackedRows {
    /// Rows of `features` bytes at `rows` (offset, CRC-32) in `file`, read `block_rows` (rounded
    /// down to a multiple of [`ROW_ALIGN`], at least one) at a time when read in order.
    pub fn new(file: Arc<File>, rows: Vec<(u64, u32)>, features: usize, block_rows: usize) -> Self {
        let block_rows = (block_rows / ROW_ALIGN).max(1) * ROW_ALIGN;
        PackedRows {
            file,
            rows,
            features,
            block_rows,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes per row.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Rows read at a time when reading in order.
    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// Reads rows `batch` into `out` (`batch.len() × features`), one read per run of rows
    /// that lie one after the other in the file, and checks every row's CRC-32.
    ///
    /// # Errors
    /// The read error, or [`std::io::ErrorKind::InvalidData`] when a row fails its check.
    pub fn gather(&self, batch: &[usize], out: &mut [u8]) -> std::io::Result<()> {
        let f = self.features;
        assert_eq!(
            out.len(),
            batch.len() * f,
            "gather: buffer of the wrong size"
        );
        let mut i = 0;
        while i < batch.len() {
            let mut j = i + 1;
            while j < batch.len() && self.rows[batch[j]].0 == self.rows[batch[j - 1]].0 + f as u64 {
                j += 1;
            }
            read_at(&self.file, self.rows[batch[i]].0, &mut out[i * f..j * f])?;
            i = j;
        }
        for (row, &r) in out.chunks_exact(f).zip(batch) {
            if crc32fast::hash(row) != self.rows[r].1 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "image {r} in the decoded cache fails its checksum (was the pack changed \
                         while this run used it?)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Rows `batch` as a new matrix.
    ///
    /// # Errors
    /// As [`gather`](Self::gather).
    pub fn select(&self, batch: &[usize]) -> std::io::Result<Array2<u8>> {
        let mut out = vec![0; batch.len() * self.features];
        self.gather(batch, &mut out)?;
        Array2::from_shape_vec((batch.len(), self.features), out).map_err(std::io::Error::other)
    }
}

/// Image rows as bytes, wherever they are.
#[derive(Debug, Clone, Copy)]
pub enum Images<'a> {
    /// In memory.
    Memory(ArrayView2<'a, u8>),
    /// In a pack on disk.
    Packed(&'a PackedRows),
}

impl<'a> Images<'a> {
    /// Number of rows.
    pub fn nrows(&self) -> usize {
        match self {
            Images::Memory(x) => x.nrows(),
            Images::Packed(p) => p.len(),
        }
    }

    /// Bytes per row.
    pub fn ncols(&self) -> usize {
        match self {
            Images::Memory(x) => x.ncols(),
            Images::Packed(p) => p.features(),
        }
    }

    /// The rows in memory, if they are.
    pub fn in_memory(&self) -> Option<ArrayView2<'a, u8>> {
        match self {
            Images::Memory(x) => Some(*x),
            Images::Packed(_) => None,
        }
    }

    /// Rows `batch` as a new matrix.
    ///
    /// # Errors
    /// A read error of a packed row.
    pub fn select(&self, batch: &[usize]) -> std::io::Result<Array2<u8>> {
        match self {
            Images::Memory(x) => Ok(x.select(Axis(0), batch)),
            Images::Packed(p) => p.select(batch),
        }
    }

    /// Calls `visit(start, rows)` on consecutive blocks of rows, in order: the whole matrix
    /// once in memory, else blocks of [`PackedRows::block_rows`] (a multiple of [`ROW_ALIGN`])
    /// read one after the other into one buffer.
    ///
    /// # Errors
    /// A read error, or the first error `visit` returns.
    pub fn for_each_block<E: From<std::io::Error>>(
        &self,
        visit: impl FnMut(usize, ArrayView2<'_, u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_block_in(0..self.nrows(), visit)
    }

    /// [`for_each_block`](Self::for_each_block) over the rows `range` only (one process's
    /// share of a set, say): `visit(start, rows)` with `start` counted from the set's first
    /// row. In memory the range is one view; in a pack, blocks of
    /// [`PackedRows::block_rows`] read one after the other.
    ///
    /// # Errors
    /// A read error, or the first error `visit` returns.
    pub fn for_each_block_in<E: From<std::io::Error>>(
        &self,
        range: std::ops::Range<usize>,
        mut visit: impl FnMut(usize, ArrayView2<'_, u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Images::Memory(x) => visit(range.start, x.slice(ndarray::s![range, ..])),
            Images::Packed(p) => {
                let mut buf = Vec::new();
                let rows: Vec<usize> = range.clone().collect();
                for (i, batch) in rows.chunks(p.block_rows()).enumerate() {
                    buf.resize(batch.len() * p.features(), 0);
                    p.gather(batch, &mut buf)?;
                    let view = ArrayView2::from_shape((batch.len(), p.features()), &buf)
                        .map_err(std::io::Error::other)?;
                    visit(range.start + i * p.block_rows(), view)?;
                }
                Ok(())
            }
        }
    }
}

/// Labelled examples, in memory ([`Dataset`]) or streamed from disk ([`Streamed`]).
pub trait Examples: Sync {
    /// The images, one row each.
    fn images(&self) -> Images<'_>;
    /// Class index of each row.
    fn labels(&self) -> &[usize];
    /// Source file of each row.
    fn paths(&self) -> &[PathBuf];
    /// Number of examples.
    fn count(&self) -> usize {
        self.labels().len()
    }
    /// Examples per class, for `classes` classes.
    fn counts_per_class(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in self.labels() {
            counts[l] += 1;
        }
        counts
    }
}

impl Examples for Dataset {
    fn images(&self) -> Images<'_> {
        Images::Memory(self.x.view())
    }
    fn labels(&self) -> &[usize] {
        &self.labels
    }
    fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

/// A labelled set whose images stay on disk.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// The images.
    pub rows: PackedRows,
    /// Class index of each row.
    pub labels: Vec<usize>,
    /// Source file of each row.
    pub paths: Vec<PathBuf>,
}

impl Examples for Streamed {
    fn images(&self) -> Images<'_> {
        Images::Packed(&self.rows)
    }
    fn labels(&self) -> &[usize] {
        &self.labels
    }
    fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}
