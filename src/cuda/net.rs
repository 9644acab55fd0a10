//! A [`Network`] copied to the GPU: the same layers, each a forward/backward pair on device
//! buffers, side by side as in [`crate::nn`].
//!
//! The copy is built by walking the host network's layers: each layer's
//! [`spec`](crate::nn::AnyLayer::spec) says its kind, its [`params`](crate::nn::AnyLayer::params)
//! and [`buffers`](crate::nn::AnyLayer::buffers) give its tensors, and a residual block's
//! [`children`](crate::nn::AnyLayer::children) give its body and its shortcut (the children
//! named `shortcut.…`). Parameters keep the network's order, so gradients, optimiser state and
//! the copy back ([`DeviceNet::write_to`]) line up with [`Network::params`].
//!
//! A conv weight lives on the device in patch order, `(c_out, k, k, c_in)`, the order of
//! im2col's columns (as the CPU's kernel matrix), and is permuted on the way up and down.
//!
//! Activations are `(batch, features)` row-major, channels last, as on the CPU. A training
//! pass keeps every layer's output and what its backward needs ([`Step`]); inference keeps
//! only the current output. Batch norm's running statistics are moved towards each training
//! batch's by [`DeviceNet::absorb`], as [`Network::absorb`] does on the host.

use super::ops::{BnParams, Buf, Images, Stats, Window};
use super::{Gpu, failed};
use crate::device::Forward;
use crate::nn::batchnorm::{EPSILON, MOMENTUM};
use crate::nn::{AnyLayer, Geometry, LayerSpec, Network, Rows};
use crate::{Error, Result, Rng};
use cudarc::driver::CudaSlice;
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, IxDyn};
use rand::RngExt;
use std::sync::Arc;

/// A parameter, buffer or optimiser slot on the device, and the host shape it comes from.
pub struct Tensor {
    /// The values (a conv weight in patch order).
    pub buf: Buf,
    /// The host shape.
    shape: Vec<usize>,
    /// Whether this is a conv weight: `(c_out, c_in, k, k)` on the host, `(c_out, k, k, c_in)`
    /// on the device.
    patch_order: bool,
}

impl Tensor {
    /// A device copy of `value`.
    ///
    /// # Errors
    /// [`Error::Device`] when the copy fails.
    pub fn upload(gpu: &Gpu, value: ArrayViewD<'_, f32>, patch_order: bool) -> Result<Self> {
        let shape = value.shape().to_vec();
        let values: Vec<f32> = if patch_order {
            value
                .permuted_axes(IxDyn(&[0, 2, 3, 1]))
                .iter()
                .copied()
                .collect()
        } else {
            value.iter().copied().collect()
        };
        Ok(Tensor {
            buf: gpu.upload(&values)?,
            shape,
            patch_order,
        })
    }

    /// Zeros shaped like `self` (an optimiser slot).
    ///
    /// # Errors
    /// [`Error::Device`] when out of memory.
    pub fn zeros_like(&self, gpu: &Gpu) -> Result<Self> {
        Ok(Tensor {
            buf: gpu.zeros(self.buf.len())?,
            shape: self.shape.clone(),
            patch_order: self.patch_order,
        })
    }

    /// `value` (shaped like `self` on the host) as a device tensor laid out like `self`.
    ///
    /// # Errors
    /// [`Error::Device`] when the copy fails.
    pub fn upload_like(&self, gpu: &Gpu, value: ArrayViewD<'_, f32>) -> Result<Self> {
        Tensor::upload(gpu, value, self.patch_order)
    }

    /// The values on the host, in the host's shape and order.
    ///
    /// # Errors
    /// [`Error::Device`] when the copy fails.
    pub fn download(&self, gpu: &Gpu) -> Result<ArrayD<f32>> {
        self.download_as_self(gpu, &self.buf)
    }

    /// `buf` (laid out like `self`: a gradient of this parameter) on the host, in the host's
    /// shape and order.
    ///
    /// # Errors
    /// [`Error::Device`] when the copy fails or `buf` has another size.
    pub fn download_as_self(&self, gpu: &Gpu, buf: &Buf) -> Result<ArrayD<f32>> {
        let values = gpu.download(buf)?;
        let shape_error = |e| Error::Device(format!("a tensor of the wrong size: {e}"));
        if !self.patch_order {
            return ArrayD::from_shape_vec(IxDyn(&self.shape), values).map_err(shape_error);
        }
        let s = &self.shape;
        let device = ArrayD::from_shape_vec(IxDyn(&[s[0], s[2], s[3], s[1]]), values)
            .map_err(shape_error)?;
        Ok(device
            .permuted_axes(IxDyn(&[0, 3, 1, 2]))
            .as_standard_layout()
            .into_owned())
    }
}

/// One layer on the device: its kind with its tensors, and its output geometry.
pub struct DeviceLayer {
    kind: Kind,
    output: Geometry,
}

enum Kind {
    Dense {
        weight: Tensor,
        bias: Tensor,
        inputs: usize,
    },
    Conv {
        weight: Tensor,
        bias: Tensor,
        input: Geometry,
        window: Window,
    },
    BatchNorm {
        gamma: Tensor,
        beta: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        input: Geometry,
    },
    Relu,
    MaxPool {
        input: Geometry,
    },
    Gap {
        input: Geometry,
    },
    Dropout {
        p: f32,
    },
    Residual {
        body: Vec<DeviceLayer>,
        shortcut: Vec<DeviceLayer>,
    },
}

/// What a training pass keeps of one layer: its output and what its backward needs.
pub struct Step {
    /// The layer's output `(batch, units_out)`.
    pub y: Buf,
    saved: Saved,
}

enum Saved {
    Nothing,
    /// im2col's patch matrix.
    Cols(Buf),
    /// Batch norm's batch statistics.
    Stats(Stats),
    /// Max-pooling's arg-max positions.
    ArgMax(CudaSlice<u8>),
    /// Dropout's mask.
    Mask(Buf),
    /// A residual block's two passes (the identity shortcut has none).
    Branches {
        body: Vec<Step>,
        shortcut: Vec<Step>,
    },
}

fn images(g: Geometry, batch: usize) -> Images {
    Images {
        batch,
        height: g.height,
        width: g.width,
        channels: g.channels,
    }
}

/// Builds the device copy of `layer`, whose input is `input`.
fn build(gpu: &Gpu, layer: &dyn AnyLayer, input: Geometry) -> Result<DeviceLayer> {
    let output = layer.output();
    let params = layer.params();
    let buffers = layer.buffers();
    let missing = || Error::Device(format!("layer {} lacks a tensor", layer.spec().token()));
    let param = |i: usize, patch: bool| {
        let p = params.get(i).ok_or_else(missing)?;
        Tensor::upload(gpu, p.value.view(), patch)
    };
    let buffer = |i: usize| {
        let b = buffers.get(i).ok_or_else(missing)?;
        Tensor::upload(gpu, b.1.view(), false)
    };
    let kind = match layer.spec() {
        LayerSpec::Dense(_) => Kind::Dense {
            weight: param(0, false)?,
            bias: param(1, false)?,
            inputs: input.len(),
        },
        LayerSpec::Conv(c) => Kind::Conv {
            weight: param(0, true)?,
            bias: param(1, false)?,
            input,
            window: Window {
                kernel: c.kernel,
                stride: c.stride,
                pad: c.kernel / 2,
                out_height: output.height,
                out_width: output.width,
            },
        },
        LayerSpec::BatchNorm(_) => Kind::BatchNorm {
            gamma: param(0, false)?,
            beta: param(1, false)?,
            running_mean: buffer(0)?,
            running_var: buffer(1)?,
            input,
        },
        LayerSpec::Relu(_) => Kind::Relu,
        LayerSpec::MaxPool(_) => Kind::MaxPool { input },
        LayerSpec::Gap(_) => Kind::Gap { input },
        LayerSpec::Dropout(d) => Kind::Dropout { p: d.p },
        LayerSpec::Residual(_) => {
            let (mut body, mut shortcut) = (Vec::new(), Vec::new());
            let (mut body_in, mut shortcut_in) = (input, input);
            for (name, child) in layer.children() {
                if name.starts_with("shortcut.") {
                    shortcut.push(build(gpu, child, shortcut_in)?);
                    shortcut_in = child.output();
                } else {
                    body.push(build(gpu, child, body_in)?);
                    body_in = child.output();
                }
            }
            Kind::Residual { body, shortcut }
        }
    };
    Ok(DeviceLayer { kind, output })
}

/// `layer`'s forward pass on `x (batch, units_in)`: training when `train` holds the step's
/// generator (dropout's seeds, batch statistics), inference otherwise.
fn forward_layer(
    gpu: &Gpu,
    layer: &DeviceLayer,
    x: &Buf,
    batch: usize,
    train: Option<&mut Rng>,
) -> Result<Step> {
    let step = |y: Buf, saved: Saved| Ok(Step { y, saved });
    match &layer.kind {
        Kind::Dense { .. } => step(dense_forward(gpu, layer, x, batch)?, Saved::Nothing),
        Kind::Conv { .. } => {
            let (y, cols) = conv_forward(gpu, layer, x, batch)?;
            step(
                y,
                if train.is_some() {
                    Saved::Cols(cols)
                } else {
                    Saved::Nothing
                },
            )
        }
        Kind::BatchNorm { .. } => {
            let (y, stats) = batchnorm_forward(gpu, layer, x, batch, train.is_some())?;
            step(y, stats.map_or(Saved::Nothing, Saved::Stats))
        }
        Kind::Relu => step(gpu.relu(x)?, Saved::Nothing),
        Kind::MaxPool { input } => {
            let (y, which) = gpu.maxpool(x, images(*input, batch), train.is_some())?;
            step(y, which.map_or(Saved::Nothing, Saved::ArgMax))
        }
        Kind::Gap { input } => step(gpu.gap(x, images(*input, batch))?, Saved::Nothing),
        Kind::Dropout { p } => match train {
            Some(rng) => {
                let (y, mask) = gpu.dropout(x, *p, rng.random::<u64>())?;
                step(y, Saved::Mask(mask))
            }
            None => step(gpu.copy(x)?, Saved::Nothing),
        },
        Kind::Residual { body, shortcut } => residual_forward(gpu, body, shortcut, x, batch, train),
    }
}

/// Dense: `x (batch, inputs)` → `z = x·Wᵀ + b (batch, units)`.
fn dense_forward(gpu: &Gpu, layer: &DeviceLayer, x: &Buf, batch: usize) -> Result<Buf> {
    let Kind::Dense {
        weight,
        bias,
        inputs,
    } = &layer.kind
    else {
        return Err(Error::Device("not a dense layer".into()));
    };
    let units = layer.output.len();
    let mut y = gpu.zeros(batch * units)?;
    gpu.matmul(
        x,
        false,
        &weight.buf,
        true,
        &mut y,
        (batch, units, *inputs),
        0.0,
    )?;
    gpu.add_bias(&mut y, &bias.buf, batch, units)?;
    Ok(y)
}

/// Dense: `dW = dzᵀ·x`, `db = Σ dz` and, if asked, `dx = dz·W`.
fn dense_backward(
    gpu: &Gpu,
    layer: &DeviceLayer,
    x: &Buf,
    dy: &Buf,
    batch: usize,
    need_dx: bool,
) -> Result<Grads> {
    let Kind::Dense { weight, inputs, .. } = &layer.kind else {
        return Err(Error::Device("not a dense layer".into()));
    };
    let (units, inputs) = (layer.output.len(), *inputs);
    let mut dw = gpu.zeros(units * inputs)?;
    gpu.matmul(dy, true, x, false, &mut dw, (units, inputs, batch), 0.0)?;
    let db = gpu.column_sums(dy, batch, units)?;
    let dx = if need_dx {
        let mut dx = gpu.zeros(batch * inputs)?;
        let shape = (batch, inputs, units);
        gpu.matmul(dy, false, &weight.buf, false, &mut dx, shape, 0.0)?;
        Some(dx)
    } else {
        None
    };
    Ok((vec![dw, db], dx))
}

/// Conv: `x (batch, h·w·c_in)` → im2col's `cols (batch·pixels_out, k·k·c_in)` → `y = cols·Wᵀ
/// + b`, `(batch, pixels_out·c_out)`. Returns the patches too (backward's other factor).
fn conv_forward(gpu: &Gpu, layer: &DeviceLayer, x: &Buf, batch: usize) -> Result<(Buf, Buf)> {
    let Kind::Conv {
        weight,
        bias,
        input,
        window,
    } = &layer.kind
    else {
        return Err(Error::Device("not a conv layer".into()));
    };
    let c_out = layer.output.channels;
    let cols = gpu.im2col(x, images(*input, batch), *window)?;
    let rows = batch * layer.output.pixels();
    let k = window.kernel * window.kernel * input.channels;
    let mut y = gpu.zeros(rows * c_out)?;
    gpu.matmul(
        &cols,
        false,
        &weight.buf,
        true,
        &mut y,
        (rows, c_out, k),
        0.0,
    )?;
    gpu.add_bias(&mut y, &bias.buf, rows, c_out)?;
    Ok((y, cols))
}

/// Conv: `dW = dYᵀ·cols`, `db = Σ dY` and, if asked, `dx` = col2im of `dcols = dY·W`. The
/// patches are gathered again when the forward pass did not keep them.
fn conv_backward(
    gpu: &Gpu,
    layer: &DeviceLayer,
    (x, cols): (&Buf, Option<&Buf>),
    dy: &Buf,
    batch: usize,
    need_dx: bool,
) -> Result<Grads> {
    let Kind::Conv {
        weight,
        input,
        window,
        ..
    } = &layer.kind
    else {
        return Err(Error::Device("not a conv layer".into()));
    };
    let recomputed;
    let cols = match cols {
        Some(c) => c,
        None => {
            recomputed = gpu.im2col(x, images(*input, batch), *window)?;
            &recomputed
        }
    };
    let out = layer.output;
    let (rows, c_out) = (batch * out.pixels(), out.channels);
    let k = window.kernel * window.kernel * input.channels;
    let mut dw = gpu.zeros(c_out * k)?;
    gpu.matmul(dy, true, cols, false, &mut dw, (c_out, k, rows), 0.0)?;
    let db = gpu.column_sums(dy, rows, c_out)?;
    let dx = if need_dx {
        let mut dcols = gpu.zeros(rows * k)?;
        gpu.matmul(
            dy,
            false,
            &weight.buf,
            false,
            &mut dcols,
            (rows, k, c_out),
            0.0,
        )?;
        Some(gpu.col2im(&dcols, images(*input, batch), *window)?)
    } else {
        None
    };
    Ok((vec![dw, db], dx))
}

/// Batch norm: the batch's statistics in training (returned for backward and the running
/// statistics), the running statistics at inference.
fn batchnorm_forward(
    gpu: &Gpu,
    layer: &DeviceLayer,
    x: &Buf,
    batch: usize,
    train: bool,
) -> Result<(Buf, Option<Stats>)> {
    let Kind::BatchNorm {
        gamma,
        beta,
        running_mean,
        running_var,
        input,
    } = &layer.kind
    else {
        return Err(Error::Device("not a batch norm".into()));
    };
    let p = BnParams {
        gamma: &gamma.buf,
        beta: &beta.buf,
        running_mean: &running_mean.buf,
        running_var: &running_var.buf,
    };
    let c = input.channels;
    if !train {
        return Ok((gpu.bn_infer(x, c, &p, EPSILON)?, None));
    }
    let stats = gpu.bn_statistics(x, batch * input.pixels(), c, EPSILON)?;
    Ok((gpu.bn_forward(x, c, &p, &stats)?, Some(stats)))
}

/// `relu(body(x) + shortcut(x))`; training keeps both passes.
fn residual_forward(
    gpu: &Gpu,
    body: &[DeviceLayer],
    shortcut: &[DeviceLayer],
    x: &Buf,
    batch: usize,
    train: Option<&mut Rng>,
) -> Result<Step> {
    let Some(rng) = train else {
        let b = infer(gpu, body, x, batch)?;
        let s = if shortcut.is_empty() {
            None
        } else {
            Some(infer(gpu, shortcut, x, batch)?)
        };
        let y = gpu.add_relu(&b, s.as_ref().unwrap_or(x))?;
        return Ok(Step {
            y,
            saved: Saved::Nothing,
        });
    };
    let body_steps = forward(gpu, body, x, batch, Some(&mut *rng))?;
    let shortcut_steps = forward(gpu, shortcut, x, batch, Some(rng))?;
    let b = body_steps.last().map_or(x, |s| &s.y);
    let s = shortcut_steps.last().map_or(x, |s| &s.y);
    let y = gpu.add_relu(b, s)?;
    Ok(Step {
        y,
        saved: Saved::Branches {
            body: body_steps,
            shortcut: shortcut_steps,
        },
    })
}

/// A training (or, with `train` `None`, inference) pass through `layers`, keeping every step.
fn forward(
    gpu: &Gpu,
    layers: &[DeviceLayer],
    x: &Buf,
    batch: usize,
    mut train: Option<&mut Rng>,
) -> Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::with_capacity(layers.len());
    for layer in layers {
        let input = steps.last().map_or(x, |s| &s.y);
        let step = forward_layer(gpu, layer, input, batch, train.as_deref_mut())?;
        steps.push(step);
    }
    Ok(steps)
}

/// An inference pass through `layers`, keeping only the current output.
fn infer(gpu: &Gpu, layers: &[DeviceLayer], x: &Buf, batch: usize) -> Result<Buf> {
    let mut current: Option<Buf> = None;
    for layer in layers {
        let input = current.as_ref().unwrap_or(x);
        current = Some(forward_layer(gpu, layer, input, batch, None)?.y);
    }
    match current {
        Some(y) => Ok(y),
        None => gpu.copy(x),
    }
}

/// Parameter gradients (in the layer's parameter order) and, if `need_dx`, `∂cost/∂x`.
type Grads = (Vec<Buf>, Option<Buf>);

fn no_saved(layer: &str) -> Error {
    Error::Device(format!(
        "{layer}'s backward pass needs a training forward pass"
    ))
}

/// `layer`'s backward pass from `dy = ∂cost/∂y`, given its input `x` and its training step.
fn backward_layer(
    gpu: &Gpu,
    layer: &DeviceLayer,
    x: &Buf,
    step: &Step,
    dy: Buf,
    batch: usize,
    need_dx: bool,
) -> Result<Grads> {
    match (&layer.kind, &step.saved) {
        (Kind::Dense { .. }, _) => dense_backward(gpu, layer, x, &dy, batch, need_dx),
        (Kind::Conv { .. }, saved) => {
            let cols = match saved {
                Saved::Cols(c) => Some(c),
                _ => None,
            };
            conv_backward(gpu, layer, (x, cols), &dy, batch, need_dx)
        }
        (Kind::BatchNorm { gamma, input, .. }, Saved::Stats(stats)) => {
            let shape = (batch * input.pixels(), input.channels);
            let (dx, dgamma, dbeta) = gpu.bn_backward(x, &dy, shape, &gamma.buf, stats)?;
            Ok((vec![dgamma, dbeta], Some(dx)))
        }
        (Kind::BatchNorm { .. }, _) => Err(no_saved("batch norm")),
        (Kind::Relu, _) => Ok((Vec::new(), Some(gpu.relu_backward(&step.y, &dy)?))),
        (Kind::MaxPool { input }, Saved::ArgMax(which)) => {
            let dx = gpu.maxpool_backward(which, &dy, images(*input, batch))?;
            Ok((Vec::new(), Some(dx)))
        }
        (Kind::MaxPool { .. }, _) => Err(no_saved("max-pooling")),
        (Kind::Gap { input }, _) => Ok((
            Vec::new(),
            Some(gpu.gap_backward(&dy, images(*input, batch))?),
        )),
        (Kind::Dropout { .. }, Saved::Mask(mask)) => {
            Ok((Vec::new(), Some(gpu.multiply(&dy, mask)?)))
        }
        (Kind::Dropout { .. }, _) => Ok((Vec::new(), Some(dy))),
        (
            Kind::Residual { body, shortcut },
            Saved::Branches {
                body: bs,
                shortcut: ss,
            },
        ) => residual_backward(
            gpu,
            (body, shortcut),
            (bs, ss),
            x,
            &step.y,
            dy,
            batch,
            need_dx,
        ),
        (Kind::Residual { .. }, _) => Err(no_saved("a residual block")),
    }
}

/// `dsum = relu'(y) ⊙ dy` down the body and the shortcut; `dx` is the sum of the two input
/// gradients (the identity's is `dsum` itself).
#[allow(clippy::too_many_arguments)]
fn residual_backward(
    gpu: &Gpu,
    (body, shortcut): (&[DeviceLayer], &[DeviceLayer]),
    (body_steps, shortcut_steps): (&[Step], &[Step]),
    x: &Buf,
    y: &Buf,
    dy: Buf,
    batch: usize,
    need_dx: bool,
) -> Result<Grads> {
    let dsum = gpu.relu_backward(y, &dy)?;
    let (mut grads, dx_body) =
        backward(gpu, body, x, body_steps, gpu.copy(&dsum)?, batch, need_dx)?;
    let dx_shortcut = if shortcut.is_empty() {
        need_dx.then_some(dsum)
    } else {
        let (g, dx) = backward(gpu, shortcut, x, shortcut_steps, dsum, batch, need_dx)?;
        grads.extend(g);
        dx
    };
    let dx = match (dx_body, dx_shortcut) {
        (Some(mut a), Some(b)) => {
            gpu.add_into(&mut a, &b)?;
            Some(a)
        }
        _ => None,
    };
    Ok((grads, dx))
}

/// Backward through `layers` along their training `steps`, from `dy` at the last output:
/// every parameter's gradient in order and, if `need_dx`, `∂cost/∂x`.
fn backward(
    gpu: &Gpu,
    layers: &[DeviceLayer],
    x: &Buf,
    steps: &[Step],
    dy: Buf,
    batch: usize,
    need_dx: bool,
) -> Result<Grads> {
    let mut per_layer: Vec<Vec<Buf>> = Vec::with_capacity(layers.len());
    let mut d = Some(dy);
    for (i, (layer, step)) in layers.iter().zip(steps).enumerate().rev() {
        let input = if i == 0 { x } else { &steps[i - 1].y };
        let dy = d
            .take()
            .ok_or_else(|| Error::Device("a layer gave no input gradient".into()))?;
        let (grads, dx) = backward_layer(gpu, layer, input, step, dy, batch, i > 0 || need_dx)?;
        per_layer.push(grads);
        d = dx;
    }
    per_layer.reverse();
    Ok((per_layer.into_iter().flatten().collect(), d))
}

/// Every parameter of `layers`, in the network's order.
fn params_of<'a>(layers: &'a [DeviceLayer], out: &mut Vec<&'a Tensor>) {
    for layer in layers {
        match &layer.kind {
            Kind::Dense { weight, bias, .. } | Kind::Conv { weight, bias, .. } => {
                out.extend([weight, bias]);
            }
            Kind::BatchNorm { gamma, beta, .. } => out.extend([gamma, beta]),
            Kind::Residual { body, shortcut } => {
                params_of(body, out);
                params_of(shortcut, out);
            }
            _ => {}
        }
    }
}

/// The same, mutable.
fn params_mut_of<'a>(layers: &'a mut [DeviceLayer], out: &mut Vec<&'a mut Tensor>) {
    for layer in layers {
        match &mut layer.kind {
            Kind::Dense { weight, bias, .. } | Kind::Conv { weight, bias, .. } => {
                out.extend([weight, bias]);
            }
            Kind::BatchNorm { gamma, beta, .. } => out.extend([gamma, beta]),
            Kind::Residual { body, shortcut } => {
                params_mut_of(body, out);
                params_mut_of(shortcut, out);
            }
            _ => {}
        }
    }
}

/// Every buffer (batch norm's running mean and variance), in the network's order.
fn buffers_of<'a>(layers: &'a [DeviceLayer], out: &mut Vec<&'a Tensor>) {
    for layer in layers {
        match &layer.kind {
            Kind::BatchNorm {
                running_mean,
                running_var,
                ..
            } => out.extend([running_mean, running_var]),
            Kind::Residual { body, shortcut } => {
                buffers_of(body, out);
                buffers_of(shortcut, out);
            }
            _ => {}
        }
    }
}

/// Moves batch norm's running statistics towards the training pass's batch statistics.
fn absorb(gpu: &Gpu, layers: &mut [DeviceLayer], steps: &[Step]) -> Result<()> {
    for (layer, step) in layers.iter_mut().zip(steps) {
        match (&mut layer.kind, &step.saved) {
            (
                Kind::BatchNorm {
                    running_mean,
                    running_var,
                    ..
                },
                Saved::Stats(stats),
            ) => gpu.bn_running(&mut running_mean.buf, &mut running_var.buf, stats, MOMENTUM)?,
            (
                Kind::Residual { body, shortcut },
                Saved::Branches {
                    body: b,
                    shortcut: s,
                },
            ) => {
                absorb(gpu, body, b)?;
                absorb(gpu, shortcut, s)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A network on the device.
pub struct DeviceNet {
    layers: Vec<DeviceLayer>,
    input: Geometry,
    outputs: usize,
}

impl DeviceNet {
    /// A device copy of `net`'s layers, weights and buffers.
    ///
    /// # Errors
    /// [`Error::Device`] when the copies fail.
    pub fn new(gpu: &Gpu, net: &Network) -> Result<Self> {
        let mut layers = Vec::with_capacity(net.layers().len());
        let mut input = net.input();
        for layer in net.layers() {
            layers.push(build(gpu, layer.as_ref(), input)?);
            input = layer.output();
        }
        Ok(DeviceNet {
            layers,
            input: net.input(),
            outputs: input.len(),
        })
    }

    /// Values per input row.
    pub fn input_units(&self) -> usize {
        self.input.len()
    }

    /// Output units (logits per row).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The widest activation of one row, in values (what bounds a pass's memory).
    fn widest(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.output.len())
            .chain([self.input.len()])
            .max()
            .unwrap_or(1)
    }

    /// A training pass over `x (batch, features)`, keeping every step; dropout's seeds come
    /// from `rng`.
    ///
    /// # Errors
    /// [`Error::Device`] when the GPU fails.
    pub fn forward(&self, gpu: &Gpu, x: &Buf, batch: usize, rng: &mut Rng) -> Result<Vec<Step>> {
        forward(gpu, &self.layers, x, batch, Some(rng))
    }

    /// Inference logits `(batch, outputs)` on the device.
    ///
    /// # Errors
    /// [`Error::Device`] when the GPU fails.
    pub fn infer(&self, gpu: &Gpu, x: &Buf, batch: usize) -> Result<Buf> {
        infer(gpu, &self.layers, x, batch)
    }

    /// Every parameter's gradient, in [`Network::params`] order, from the training `steps`
    /// over `x` and `dlogits = ∂cost/∂logits`. The input images get no gradient.
    ///
    /// # Errors
    /// [`Error::Device`] when the GPU fails.
    pub fn backward(
        &self,
        gpu: &Gpu,
        x: &Buf,
        steps: &[Step],
        dlogits: Buf,
        batch: usize,
    ) -> Result<Vec<Buf>> {
        backward(gpu, &self.layers, x, steps, dlogits, batch, false).map(|(g, _)| g)
    }

    /// Moves batch norm's running statistics after a training pass.
    ///
    /// # Errors
    /// [`Error::Device`] when the GPU fails.
    pub fn absorb(&mut self, gpu: &Gpu, steps: &[Step]) -> Result<()> {
        absorb(gpu, &mut self.layers, steps)
    }

    /// Every parameter, in [`Network::params`] order.
    pub fn params(&self) -> Vec<&Tensor> {
        let mut out = Vec::new();
        params_of(&self.layers, &mut out);
        out
    }

    /// The same, mutable.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        let mut out = Vec::new();
        params_mut_of(&mut self.layers, &mut out);
        out
    }

    /// Writes the device's parameters and buffers into `net` (the network this was built
    /// from, or a copy of it).
    ///
    /// # Errors
    /// [`Error::Device`] when a copy fails or a shape disagrees.
    pub fn write_to(&self, gpu: &Gpu, net: &mut Network) -> Result<()> {
        let mut buffers = Vec::new();
        buffers_of(&self.layers, &mut buffers);
        let params = self.params();
        let host_params = net.params_mut();
        if params.len() != host_params.len() {
            return Err(Error::Device(
                "the device network has other parameters".into(),
            ));
        }
        for (mut dst, src) in host_params.into_iter().zip(params) {
            assign(&mut dst, &src.download(gpu)?)?;
        }
        for (mut dst, src) in net.buffers_mut().into_iter().zip(buffers) {
            assign(&mut dst, &src.download(gpu)?)?;
        }
        Ok(())
    }
}

/// `dst = src`, refusing another shape.
fn assign(dst: &mut ndarray::ArrayViewMutD<'_, f32>, src: &ArrayD<f32>) -> Result<()> {
    if dst.shape() != src.shape() {
        return Err(Error::Device(format!(
            "a device tensor of shape {:?} for a host tensor of shape {:?}",
            src.shape(),
            dst.shape()
        )));
    }
    dst.assign(src);
    Ok(())
}

/// Activation values one inference pass may hold in its widest layer (64 Mi f32, 256 MiB):
/// larger sets are split into passes of fewer rows.
const PASS_VALUES: usize = 1 << 26;

/// Rows `x` on the device as values: image bytes are uploaded as bytes and scaled there.
///
/// # Errors
/// [`Error::Device`] when the copy fails.
pub fn upload_rows(gpu: &Gpu, x: Rows<'_>) -> Result<Buf> {
    match x {
        Rows::Bytes(b) => {
            let b = b.as_standard_layout();
            let bytes = b.as_slice().unwrap_or_default();
            gpu.bytes_to_unit(&gpu.upload(bytes)?)
        }
        Rows::Values(v) => {
            let v = v.as_standard_layout();
            gpu.upload(v.as_slice().unwrap_or_default())
        }
    }
}

/// A network's inference pass on the GPU: [`crate::device::Forward`] for predict, evaluate,
/// report and serve.
pub struct Inference {
    gpu: Arc<Gpu>,
    net: DeviceNet,
}

impl Inference {
    /// `net` copied to `gpu`.
    ///
    /// # Errors
    /// [`Error::Device`] when the copy fails.
    pub fn new(gpu: Arc<Gpu>, net: &Network) -> Result<Self> {
        let net = DeviceNet::new(&gpu, net)?;
        Ok(Inference { gpu, net })
    }
}

/// Logits of `x` by `net` on `gpu`, in passes of at most [`PASS_VALUES`] activations.
///
/// # Errors
/// [`Error::Device`] when the GPU fails; [`Error::Config`] for rows of the wrong width.
pub fn logits(gpu: &Gpu, net: &DeviceNet, x: Rows<'_>) -> Result<Array2<f32>> {
    if x.ncols() != net.input_units() {
        return Err(Error::Config(format!(
            "the network reads {} values per image, these rows have {}",
            net.input_units(),
            x.ncols()
        )));
    }
    let rows = (PASS_VALUES / net.widest().max(1)).clamp(1, 4096);
    let mut out = Array2::<f32>::zeros((x.nrows(), net.outputs()));
    for (i, mut part) in out.axis_chunks_iter_mut(Axis(0), rows).enumerate() {
        let n = part.nrows();
        let chunk = x.slice(i * rows, i * rows + n);
        let y = net.infer(gpu, &upload_rows(gpu, chunk)?, n)?;
        let values = gpu.download(&y)?;
        let view = ndarray::ArrayView2::from_shape((n, net.outputs()), &values)
            .map_err(failed("logits of the wrong size"))?;
        part.assign(&view);
    }
    Ok(out)
}

impl Forward for Inference {
    fn logits(&self, x: Rows<'_>) -> Result<Array2<f32>> {
        logits(&self.gpu, &self.net, x)
    }
}
