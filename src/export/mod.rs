//! Taking a trained model out of deepcat: [`onnx`] writes it as one ONNX file that ONNX
//! Runtime, tract, Triton or a browser runtime can run without deepcat.
//!
//! The export is a translation, not a second implementation: each layer's trained tensors
//! become the constant inputs of the standard operator that computes the same function at
//! inference (batch norm with its running statistics, no dropout), and the tests hold the
//! exported file's probabilities to deepcat's own on real images. [`proto`] declares the
//! protobuf messages the file is made of. This module does not read ONNX files, nor export
//! training state (optimiser slots, batch statistics).

pub mod onnx;
pub mod proto;
