//! What a network's first layer reads: rows of f32 values, or rows of image bytes that stand
//! for `v / 255` ([`crate::linalg::bytes`]).
//!
//! Datasets keep images as bytes (a quarter of the memory). A layer that can read bytes
//! directly (a dense layer, by products that scale the bytes block by block) does so; every
//! other layer is handed the scaled values ([`Layer::forward_rows`](super::Layer)).

use super::recycle;
use crate::linalg::bytes;
use ndarray::{Array2, ArrayView2, Axis, CowArray, Ix2};

/// A batch of inputs, one example per row.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// Values as the network computes with them.
    Values(ArrayView2<'a, f32>),
    /// Image bytes; each stands for `v / 255`.
    Bytes(ArrayView2<'a, u8>),
}

impl<'a> Rows<'a> {
    /// Number of examples.
    pub fn nrows(&self) -> usize {
        match self {
            Rows::Values(v) => v.nrows(),
            Rows::Bytes(b) => b.nrows(),
        }
    }

    /// Values per example.
    pub fn ncols(&self) -> usize {
        match self {
            Rows::Values(v) => v.ncols(),
            Rows::Bytes(b) => b.ncols(),
        }
    }

    /// The values: borrowed, or the bytes scaled into a new array.
    pub fn values(&self) -> CowArray<'a, f32, Ix2> {
        match *self {
            Rows::Values(v) => CowArray::from(v),
            Rows::Bytes(b) => CowArray::from(bytes::to_unit(b)),
        }
    }

    /// Rows `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Rows<'a> {
        let range = ndarray::Slice::from(start..end);
        match *self {
            Rows::Values(v) => Rows::Values(v.slice_axis_move(Axis(0), range)),
            Rows::Bytes(b) => Rows::Bytes(b.slice_axis_move(Axis(0), range)),
        }
    }

    /// The rows `batch`, as values (a mini-batch), in a recycled buffer: hand it back with
    /// [`recycle::give`] when done.
    pub fn select(&self, batch: &[usize]) -> Array2<f32> {
        match *self {
            Rows::Values(v) => v.select(Axis(0), batch),
            Rows::Bytes(b) => {
                let mut out = recycle::scratch((batch.len(), b.ncols()));
                bytes::select_unit_into(b, batch, out.view_mut());
                out
            }
        }
    }
}

impl<'a> From<ArrayView2<'a, f32>> for Rows<'a> {
    fn from(v: ArrayView2<'a, f32>) -> Self {
        Rows::Values(v)
    }
}

impl<'a> From<&'a Array2<f32>> for Rows<'a> {
    fn from(v: &'a Array2<f32>) -> Self {
        Rows::Values(v.view())
    }
}

impl<'a> From<ArrayView2<'a, u8>> for Rows<'a> {
    fn from(b: ArrayView2<'a, u8>) -> Self {
        Rows::Bytes(b)
    }
}

impl<'a> From<&'a Array2<u8>> for Rows<'a> {
    fn from(b: &'a Array2<u8>) -> Self {
        Rows::Bytes(b.view())
    }
}
