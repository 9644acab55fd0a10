//! A deepcat model as an ONNX graph (opset 17, IR version 8).
//!
//! **The contract.** Input `input`: float32 `(N, 3, S, S)`, RGB in `[0, 1]`, channels first
//! (torchvision's convention): the photo resized to `S × S` with the model's resize filter,
//! each byte divided by 255. Output `probabilities`: float32 `(N, classes)`, one column per
//! class in the model's class order, as `deepcat predict --json` prints them. A sigmoid head
//! (two classes, one output unit) becomes two columns, `p` for the positive class and `1 − p`
//! for the other, so both heads give `(N, classes)`. A model trained with `--tta flip` runs the
//! network on the photo and on its mirror (a `Gather` reversing the width axis) and averages
//! the two, as `predict` does. The metadata properties say all of this in words
//! ([`metadata`]).
//!
//! **Layouts.** deepcat's rows are channels last (`h·w·c` flattened); ONNX's images are
//! `(N, C, H, W)`. Conv weights are already PyTorch's `(c_out, c_in, k, k)`, which is ONNX's,
//! so images stay NCHW from the input to the first dense layer or global average pool, which
//! flatten them. A dense layer reading an image reads it flattened in `c·h·w` order there, so
//! its weight columns are permuted from deepcat's `h·w·c` order ([`chw_columns`]).
//!
//! **Layers.** conv → `Conv` with explicit `pads` (`k / 2` on every side) and `strides`;
//! batch norm → `BatchNormalization` in inference form (running mean and variance, ε =
//! 10⁻⁵); ReLU → `Relu`; max-pool → `MaxPool` 2×2 stride 2 (floor: an odd last row is
//! dropped, as deepcat does); gap → `GlobalAveragePool` then `Flatten`; dense → `Gemm` with
//! `transB = 1`; dropout → nothing (it is the identity at inference); a residual block →
//! its body and shortcut, `Add`, `Relu`.

use super::proto::{
    ATTR_FLOAT, ATTR_INT, ATTR_INTS, AttributeProto, Dimension, DimensionValue, FLOAT, GraphProto,
    INT64, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use crate::loss::Head;
use crate::model::Model;
use crate::nn::batchnorm::EPSILON;
use crate::nn::spec::describe;
use crate::nn::{AnyLayer, Geometry, LayerSpec};
use crate::{Error, Result};
use ndarray::ArrayViewD;
use prost::Message;
use std::collections::HashSet;
use std::path::Path;

/// The ONNX operator-set version the graph is written against: every operator used here has
/// had its current form since opset 15 or earlier, and ONNX Runtime and tract both run it.
pub const OPSET: i64 = 17;
/// The ONNX IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 8;
/// The graph input's name.
pub const INPUT: &str = "input";
/// The graph output's name.
pub const OUTPUT: &str = "probabilities";

/// The input layout, in words, as the metadata property `input_layout` states it.
pub const INPUT_LAYOUT: &str = "float32 (N, 3, S, S): RGB, channels first (NCHW), values in \
     [0, 1] (each 8-bit value divided by 255) after resizing the photo to S x S with the \
     resize_filter property's filter, ignoring its aspect ratio";

/// `model` as an ONNX file's bytes.
///
/// # Errors
/// [`Error::Config`] if the network's input is not the `S × S × 3` image its preprocessing
/// makes (no model deepcat writes is like that).
pub fn to_bytes(model: &Model) -> Result<Vec<u8>> {
    Ok(model_proto(model)?.encode_to_vec())
}

/// Writes `model` as an ONNX file at `path`, atomically (a temporary file beside it, renamed
/// into place), as model files are written.
///
/// # Errors
/// As [`to_bytes`], and [`Error::Io`] naming `path` if it cannot be written.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    crate::model_file::write_atomically(path, &to_bytes(model)?)
}

/// `model` as an ONNX `ModelProto`.
///
/// # Errors
/// As [`to_bytes`].
pub fn model_proto(model: &Model) -> Result<ModelProto> {
    let size = model.preprocess.size as usize;
    let image = Geometry::image(size);
    if model.network.input_units() != image.len() {
        return Err(Error::Config(format!(
            "cannot export: the network reads {} values, not a {size}×{size} RGB image",
            model.network.input_units()
        )));
    }
    let mut g = Graph::default();
    let input = Value {
        name: INPUT.into(),
        geometry: image,
        nchw: true,
    };
    let mut p = probabilities(&mut g, model, input.clone(), "");
    if model.tta {
        let reversed: Vec<i64> = (0..size as i64).rev().collect();
        let indices = g.int64s("tta.reversed_columns", &reversed);
        let attrs = vec![int("axis", 3)];
        let mirrored = Value {
            name: g.op("Gather", "tta.mirror", &[INPUT, &indices], attrs),
            ..input
        };
        let q = probabilities(&mut g, model, mirrored, "mirror/");
        let sum = g.op("Add", "tta.sum", &[&p, &q], vec![]);
        let half = g.floats("tta.half", &[1], &[0.5]);
        p = g.op("Mul", "tta.mean", &[&sum, &half], vec![]);
    }
    class_columns(&mut g, model, &p);
    g.rename_last_output(OUTPUT);
    let classes = model.classes.len();
    let graph = GraphProto {
        node: g.nodes,
        name: "deepcat".into(),
        initializer: g.initializers,
        doc_string: String::new(),
        input: vec![tensor_info(INPUT, &[None, Some(3), Some(size), Some(size)])],
        output: vec![tensor_info(OUTPUT, &[None, Some(classes)])],
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "deepcat".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "An image classifier trained by deepcat.".into(),
        graph: Some(graph),
        metadata_props: metadata(model),
    })
}

/// The metadata properties: `classes` (a JSON array, in output column order),
/// `positive_class` (the sigmoid's class; empty with softmax), `image_size` (S),
/// `resize_filter` (`nearest`, `bilinear` or `lanczos`), `exif_orientation` (`applied` or
/// `ignored`), `input_layout` ([`INPUT_LAYOUT`]), `tta` (`flip` or `none`), `head`
/// (`sigmoid` or `softmax`) and `architecture` (the layers in `--arch`'s text form).
pub fn metadata(model: &Model) -> Vec<StringStringEntryProto> {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: key.into(),
        value,
    };
    let pre = &model.preprocess;
    vec![
        entry(
            "classes",
            serde_json::Value::from(model.classes.names.clone()).to_string(),
        ),
        entry(
            "positive_class",
            model.classes.positive_name().unwrap_or_default().into(),
        ),
        entry("image_size", pre.size.to_string()),
        entry("resize_filter", pre.filter.name().into()),
        entry(
            "exif_orientation",
            if pre.exif_orientation {
                "applied"
            } else {
                "ignored"
            }
            .into(),
        ),
        entry("input_layout", INPUT_LAYOUT.into()),
        entry("tta", if model.tta { "flip" } else { "none" }.into()),
        entry("head", model.network.head().name().into()),
        entry("architecture", describe(&model.network.architecture().body)),
    ]
}

/// A value flowing through the graph: its name, deepcat's geometry for it, and whether it is
/// held as an image `(N, C, H, W)` or as rows `(N, features)`.
#[derive(Debug, Clone)]
struct Value {
    name: String,
    geometry: Geometry,
    nchw: bool,
}

/// The graph being built: nodes in order and the constants they read, each constant once
/// (the mirrored branch of test-time flips reads the same weights).
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    constants: HashSet<String>,
}

impl Graph {
    /// Adds a node `op` named `name` reading `inputs`, whose one output is also called
    /// `name`; returns that name.
    fn op(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute,
        });
        name.to_string()
    }

    /// The last node's output renamed: the graph's output is whatever it computes last.
    fn rename_last_output(&mut self, name: &str) {
        if let Some(last) = self.nodes.last_mut() {
            last.output = vec![name.to_string()];
        }
    }

    /// A constant tensor, added unless one of that name already is; returns its name.
    fn constant(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: i32,
        raw_data: Vec<u8>,
    ) -> String {
        if self.constants.insert(name.to_string()) {
            self.initializers.push(TensorProto {
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type,
                name: name.to_string(),
                raw_data,
            });
        }
        name.to_string()
    }

    /// A float32 constant of shape `dims` from `values` in row-major order.
    fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(name, dims, FLOAT, raw)
    }

    /// A float32 constant holding `tensor` as it is.
    fn tensor(&mut self, name: &str, tensor: &ArrayViewD<'_, f32>) -> String {
        let values: Vec<f32> = tensor.iter().copied().collect();
        self.floats(name, tensor.shape(), &values)
    }

    /// A one-dimensional int64 constant.
    fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(name, &[values.len()], INT64, raw)
    }
}

/// An integer attribute.
fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INT,
        i,
        ..Default::default()
    }
}

/// A list-of-integers attribute.
fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INTS,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

/// A float attribute.
fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_FLOAT,
        f,
        ..Default::default()
    }
}

/// A float32 tensor's name and shape (`None`: the batch axis, named `N`).
fn tensor_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(n) => DimensionValue::DimValue(*n as i64),
                None => DimensionValue::DimParam("N".into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string: String::new(),
    }
}

/// The whole network on `input`, then its head: the network's probabilities `(N, outputs)`
/// (one column with the sigmoid head). Node names start with `prefix`.
fn probabilities(g: &mut Graph, model: &Model, input: Value, prefix: &str) -> String {
    let network = &model.network;
    let layers: Vec<(String, &dyn AnyLayer)> = network
        .layer_names()
        .into_iter()
        .zip(network.layers().iter().map(|l| l.as_ref()))
        .collect();
    let logits = sequence(g, &layers, input, prefix, "");
    let logits = rows(g, logits);
    match network.head() {
        Head::Sigmoid => g.op(
            "Sigmoid",
            &format!("{prefix}sigmoid"),
            &[&logits.name],
            vec![],
        ),
        Head::Softmax => g.op(
            "Softmax",
            &format!("{prefix}softmax"),
            &[&logits.name],
            vec![int("axis", 1)],
        ),
    }
}

/// The network's probabilities `p (N, outputs)` as class columns `(N, classes)`: softmax's
/// as they are; the sigmoid's `p` in the positive class's column and `1 − p` in the other's.
fn class_columns(g: &mut Graph, model: &Model, p: &str) {
    let Some(positive) = model.classes.positive else {
        return;
    };
    let one = g.floats("one", &[1], &[1.0]);
    let other = g.op("Sub", "other_class", &[&one, p], vec![]);
    let columns: [&str; 2] = if positive == 0 {
        [p, &other]
    } else {
        [&other, p]
    };
    g.op(
        "Concat",
        "class_probabilities",
        &columns,
        vec![int("axis", 1)],
    );
}

/// Layers one after another from `x`; `path` is the enclosing block's parameter path
/// (`residual1.`), `prefix` the branch's node-name prefix.
fn sequence(
    g: &mut Graph,
    layers: &[(String, &dyn AnyLayer)],
    x: Value,
    prefix: &str,
    path: &str,
) -> Value {
    layers.iter().fold(x, |x, (name, layer)| {
        emit(g, &format!("{path}{name}"), *layer, x, prefix)
    })
}

/// One layer on `x`; `name` is its full parameter path (`conv1`, `residual2.shortcut.conv1`).
fn emit(g: &mut Graph, name: &str, layer: &dyn AnyLayer, x: Value, prefix: &str) -> Value {
    let node = format!("{prefix}{name}");
    let geometry = layer.output();
    let same = |name: String, x: &Value| Value {
        name,
        geometry,
        nchw: x.nchw,
    };
    match layer.spec() {
        LayerSpec::Dense(_) => dense(g, name, layer, x, prefix),
        LayerSpec::Conv(spec) => {
            let x = image(g, x);
            let w = g.tensor(&format!("{name}.weight"), &param(layer, "weight"));
            let b = g.tensor(&format!("{name}.bias"), &param(layer, "bias"));
            let pad = spec.kernel / 2;
            let attrs = vec![
                ints("kernel_shape", &[spec.kernel, spec.kernel]),
                ints("strides", &[spec.stride, spec.stride]),
                ints("pads", &[pad, pad, pad, pad]),
            ];
            same(g.op("Conv", &node, &[&x.name, &w, &b], attrs), &x)
        }
        LayerSpec::BatchNorm(_) => {
            let inputs = ["weight", "bias", "running_mean", "running_var"]
                .map(|t| g.tensor(&format!("{name}.{t}"), &param(layer, t)));
            let [scale, shift, mean, var] = &inputs;
            let attrs = vec![float("epsilon", EPSILON)];
            let y = g.op(
                "BatchNormalization",
                &node,
                &[&x.name, scale, shift, mean, var],
                attrs,
            );
            same(y, &x)
        }
        LayerSpec::Relu(_) => same(g.op("Relu", &node, &[&x.name], vec![]), &x),
        LayerSpec::MaxPool(_) => {
            let x = image(g, x);
            let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
            same(g.op("MaxPool", &node, &[&x.name], attrs), &x)
        }
        LayerSpec::Gap(_) if !x.nchw => Value { geometry, ..x },
        LayerSpec::Gap(_) => {
            let pooled = g.op(
                "GlobalAveragePool",
                &format!("{node}.pool"),
                &[&x.name],
                vec![],
            );
            let flat = g.op("Flatten", &node, &[&pooled], vec![int("axis", 1)]);
            Value {
                name: flat,
                geometry,
                nchw: false,
            }
        }
        LayerSpec::Dropout(_) => x,
        LayerSpec::Residual(_) => residual(g, name, layer, x, prefix),
    }
}

/// `z = x · Wᵀ + b` as `Gemm`. An image input is flattened in `c·h·w` order first, and the
/// weight's columns permuted to match.
fn dense(g: &mut Graph, name: &str, layer: &dyn AnyLayer, x: Value, prefix: &str) -> Value {
    let weight = param(layer, "weight");
    let (units, inputs) = (weight.shape()[0], weight.shape()[1]);
    let (x, w) = if x.nchw {
        let flat = g.op(
            "Flatten",
            &format!("{prefix}{name}.flatten"),
            &[&x.name],
            vec![int("axis", 1)],
        );
        let values = chw_columns(&weight, x.geometry);
        let w = g.floats(&format!("{name}.weight"), &[units, inputs], &values);
        (flat, w)
    } else {
        (x.name, g.tensor(&format!("{name}.weight"), &weight))
    };
    let b = g.tensor(&format!("{name}.bias"), &param(layer, "bias"));
    let z = g.op(
        "Gemm",
        &format!("{prefix}{name}"),
        &[&x, &w, &b],
        vec![int("transB", 1)],
    );
    Value {
        name: z,
        geometry: Geometry::flat(units),
        nchw: false,
    }
}

/// A dense weight `(units, h·w·c)` whose columns follow deepcat's channels-last rows, with its
/// columns reordered for rows flattened channels first: column `c·(h·w) + y·w + x` of the
/// result is column `(y·w + x)·c_count + c` of `weight`. Row-major values.
///
/// # Panics
/// If `weight` is not two-dimensional with `geometry.len()` columns.
pub fn chw_columns(weight: &ArrayViewD<'_, f32>, geometry: Geometry) -> Vec<f32> {
    let shape = weight.shape();
    assert!(
        shape.len() == 2 && shape[1] == geometry.len(),
        "a dense weight {shape:?} does not read {geometry}"
    );
    let (pixels, channels) = (geometry.pixels(), geometry.channels);
    let mut out = Vec::with_capacity(weight.len());
    for row in weight.outer_iter() {
        for c in 0..channels {
            out.extend((0..pixels).map(|p| row[p * channels + c]));
        }
    }
    out
}

/// `relu(body(x) + shortcut(x))`, the shortcut the identity when the block has none.
fn residual(g: &mut Graph, name: &str, layer: &dyn AnyLayer, x: Value, prefix: &str) -> Value {
    let (shortcut, body): (Vec<_>, Vec<_>) = layer
        .children()
        .into_iter()
        .partition(|(child, _)| child.starts_with("shortcut."));
    let path = format!("{name}.");
    let a = sequence(g, &body, x.clone(), prefix, &path);
    let b = if shortcut.is_empty() {
        x
    } else {
        sequence(g, &shortcut, x, prefix, &path)
    };
    // Both branches give the same geometry; one may hold it as rows (a dense layer's
    // `1 × 1 × units`), which flattening the other matches.
    let (a, b) = if a.nchw == b.nchw {
        (a, b)
    } else {
        (rows(g, a), rows(g, b))
    };
    let node = format!("{prefix}{name}");
    let sum = g.op("Add", &format!("{node}.add"), &[&a.name, &b.name], vec![]);
    Value {
        name: g.op("Relu", &node, &[&sum], vec![]),
        geometry: layer.output(),
        nchw: a.nchw,
    }
}

/// `x` as rows `(N, features)`: flattened if it is held as an image, which must then be
/// `1 × 1 × c` (a layer whose output is one pixel), so the order is the same either way.
fn rows(g: &mut Graph, x: Value) -> Value {
    if !x.nchw {
        return x;
    }
    debug_assert_eq!(
        x.geometry.pixels(),
        1,
        "only a single pixel flattens in both orders"
    );
    let name = g.op(
        "Flatten",
        &format!("{}.rows", x.name),
        &[&x.name],
        vec![int("axis", 1)],
    );
    Value {
        name,
        nchw: false,
        ..x
    }
}

/// `x` as an image `(N, C, H, W)`: a `1 × 1 × c` row vector reshaped if it is held as rows.
fn image(g: &mut Graph, x: Value) -> Value {
    if x.nchw {
        return x;
    }
    let gm = x.geometry;
    let dims = [0, gm.channels as i64, gm.height as i64, gm.width as i64];
    let shape = g.int64s(
        &format!("shape_{}x{}x{}", gm.channels, gm.height, gm.width),
        &dims,
    );
    let name = g.op(
        "Reshape",
        &format!("{}.image", x.name),
        &[&x.name, &shape],
        vec![],
    );
    Value {
        name,
        nchw: true,
        ..x
    }
}

/// The tensor named `name` among `layer`'s parameters and buffers.
///
/// # Panics
/// If the layer has none of that name: every kind matched in [`emit`] has the tensors asked
/// for there.
fn param<'a>(layer: &'a dyn AnyLayer, name: &str) -> ArrayViewD<'a, f32> {
    let found = layer
        .params()
        .into_iter()
        .map(|p| (p.name, p.value))
        .chain(layer.buffers())
        .find(|(n, _)| n == name);
    match found {
        Some((_, value)) => value,
        None => panic!("a {} layer has no tensor {name}", layer.spec().kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn dense_columns_move_from_channels_last_to_channels_first() {
        // 2 × 2 pixels, 3 channels: column (pixel p, channel c) = 10·p + c.
        let g = Geometry::new(2, 2, 3);
        let w = Array2::from_shape_fn((1, 12), |(_, j)| ((j / 3) * 10 + j % 3) as f32);
        let out = chw_columns(&w.view().into_dyn(), g);
        let expected = [0., 10., 20., 30., 1., 11., 21., 31., 2., 12., 22., 32.];
        assert_eq!(out, expected);
    }
}
