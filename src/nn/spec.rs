//! Architectures: what layers a network has, as data, as text, and checked against the input.
//!
//! A [`LayerSpec`] names one layer and its settings; an [`Architecture`] is the input geometry,
//! the layers before the output head (the *body*), and the number of outputs. The document's
//! network is `dense20 relu dense7 relu dense5 relu` before a one-unit sigmoid head.
//!
//! # The text form (`--arch`)
//!
//! Layers are separated by spaces or commas and read left to right; the output head (a dense
//! layer with one unit per class, or one sigmoid unit for two classes) is added at the end.
//!
//! | token | layer |
//! |---|---|
//! | `conv32` | 3×3 convolution, 32 output channels, stride 1, "same" zero padding, bias |
//! | `conv32k5`, `conv32k1` | the same with a 5×5 or 1×1 kernel (any odd size) |
//! | `conv32s2`, `conv32k5s2` | stride 2: half the height and width, rounded up |
//! | `bn` | batch normalisation over channels (after conv) or units (after dense) |
//! | `relu` | ReLU |
//! | `pool` | 2×2 max-pooling, stride 2 |
//! | `gap` | global average pooling: each channel's image → one value |
//! | `dense128` | fully connected layer with 128 units (reads any geometry, channels last) |
//! | `dropout0.3` | inverted dropout with probability 0.3 (training only) |
//! | `block32` | shorthand for `conv32 bn relu pool` |
//!
//! Presets name whole bodies: [`PRESETS`].

use super::Geometry;
use super::im2col::Window;
use super::pool::POOL;
use crate::{Error, Result};

/// One layer of an architecture and its settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected: `units` outputs from every input value.
    Dense {
        /// Output units.
        units: usize,
    },
    /// 2-D convolution with "same" padding (`kernel / 2` zeros on every side).
    Conv {
        /// Output channels.
        channels: usize,
        /// Side of the square kernel (odd).
        kernel: usize,
        /// Step between outputs (1, or 2 to halve the image).
        stride: usize,
    },
    /// Batch normalisation over channels.
    #[serde(rename = "batchnorm")]
    BatchNorm,
    /// ReLU.
    Relu,
    /// 2×2 max-pooling, stride 2.
    #[serde(rename = "maxpool")]
    MaxPool,
    /// Global average pooling.
    Gap,
    /// Inverted dropout (identity at inference).
    Dropout {
        /// Drop probability, in `[0, 1)`.
        p: f32,
    },
}

/// Named architectures for `--arch`: each expands to a body.
pub const PRESETS: &[(&str, &str)] = &[("cnn", "block16 block32 block64 block64 gap dropout0.3")];

/// The body `--layers` gives: a dense layer with ReLU (and dropout, when `dropout > 0`) per
/// hidden size.
pub fn dense_body(hidden: &[usize], dropout: f32) -> Vec<LayerSpec> {
    let mut body = Vec::new();
    for &units in hidden {
        body.push(LayerSpec::Dense { units });
        body.push(LayerSpec::Relu);
        if dropout > 0.0 {
            body.push(LayerSpec::Dropout { p: dropout });
        }
    }
    body
}

impl LayerSpec {
    /// The token of the text form (`conv32`, `conv64k5s2`, `dropout0.3`, ...).
    pub fn token(&self) -> String {
        match *self {
            LayerSpec::Dense { units } => format!("dense{units}"),
            LayerSpec::Conv {
                channels,
                kernel,
                stride,
            } => {
                let mut t = format!("conv{channels}");
                if kernel != 3 {
                    t += &format!("k{kernel}");
                }
                if stride != 1 {
                    t += &format!("s{stride}");
                }
                t
            }
            LayerSpec::BatchNorm => "bn".into(),
            LayerSpec::Relu => "relu".into(),
            LayerSpec::MaxPool => "pool".into(),
            LayerSpec::Gap => "gap".into(),
            LayerSpec::Dropout { p } => format!("dropout{p}"),
        }
    }

    /// The layer's name in summaries and model files (`conv`, `batchnorm`, `dense`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Conv { .. } => "conv",
            LayerSpec::BatchNorm => "batchnorm",
            LayerSpec::Relu => "relu",
            LayerSpec::MaxPool => "maxpool",
            LayerSpec::Gap => "gap",
            LayerSpec::Dropout { .. } => "dropout",
        }
    }

    /// Checks the settings on their own (not against an input).
    ///
    /// # Errors
    /// A sentence naming the token at fault.
    pub fn check(&self) -> Result<(), String> {
        let t = self.token();
        match *self {
            LayerSpec::Dense { units: 0 } => {
                Err(format!("{t}: a dense layer needs at least one unit"))
            }
            LayerSpec::Conv { channels: 0, .. } => {
                Err(format!("{t}: a conv layer needs at least one channel"))
            }
            LayerSpec::Conv { kernel, .. } if kernel % 2 == 0 || kernel > 15 => Err(format!(
                "{t}: the kernel side must be odd and at most 15 (\"same\" padding is kernel / 2), got {kernel}"
            )),
            LayerSpec::Conv { stride, .. } if stride == 0 || stride > 4 => {
                Err(format!("{t}: the stride must be 1 to 4, got {stride}"))
            }
            LayerSpec::Dropout { p } if !(p > 0.0 && p < 1.0) => Err(format!(
                "{t}: the dropout probability must be above 0 and below 1, got {p}"
            )),
            _ => Ok(()),
        }
    }

    /// The output geometry for `input`.
    ///
    /// # Errors
    /// A sentence saying why the layer cannot take that input (a pool on a 1-pixel image).
    pub fn output(&self, input: Geometry) -> Result<Geometry, String> {
        self.check()?;
        match *self {
            LayerSpec::Dense { units } => Ok(Geometry::flat(units)),
            LayerSpec::Conv {
                channels,
                kernel,
                stride,
            } => Window::same(kernel, stride)
                .output(input, channels)
                .ok_or_else(|| format!("a {kernel}×{kernel} kernel does not fit {input}")),
            LayerSpec::MaxPool => {
                if input.height < POOL || input.width < POOL {
                    Err(format!(
                        "2×2 max-pooling needs at least 2×2 pixels, but gets {input}"
                    ))
                } else {
                    Ok(Geometry::new(
                        input.height / POOL,
                        input.width / POOL,
                        input.channels,
                    ))
                }
            }
            LayerSpec::Gap => Ok(Geometry::flat(input.channels)),
            LayerSpec::BatchNorm | LayerSpec::Relu | LayerSpec::Dropout { .. } => Ok(input),
        }
    }

    /// The shapes of the layer's trainable parameters and of its buffers (state saved but not
    /// trained), with their names, for an `input` geometry: what a model file must hold.
    pub fn tensor_shapes(&self, input: Geometry) -> TensorShapes {
        match *self {
            LayerSpec::Dense { units } => TensorShapes {
                params: vec![("weight", vec![units, input.len()]), ("bias", vec![units])],
                buffers: Vec::new(),
            },
            LayerSpec::Conv {
                channels, kernel, ..
            } => TensorShapes {
                params: vec![
                    ("weight", vec![channels, input.channels, kernel, kernel]),
                    ("bias", vec![channels]),
                ],
                buffers: Vec::new(),
            },
            LayerSpec::BatchNorm => {
                let c = vec![input.channels];
                TensorShapes {
                    params: vec![("weight", c.clone()), ("bias", c.clone())],
                    buffers: vec![("running_mean", c.clone()), ("running_var", c)],
                }
            }
            _ => TensorShapes::default(),
        }
    }

    /// Whether the layer has weights that need a spatial input (conv) or keeps statistics
    /// (batch norm): what the document's dense format (version 1) cannot describe.
    pub fn is_beyond_dense(&self) -> bool {
        !matches!(
            self,
            LayerSpec::Dense { .. } | LayerSpec::Relu | LayerSpec::Dropout { .. }
        )
    }
}

/// Names and shapes of a layer's tensors (see [`LayerSpec::tensor_shapes`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorShapes {
    /// Trainable parameters, in the layer's [`params`](super::Layer::params) order.
    pub params: Vec<(&'static str, Vec<usize>)>,
    /// Buffers, in the layer's [`buffers`](super::Layer::buffers) order.
    pub buffers: Vec<(&'static str, Vec<usize>)>,
}

/// Parses one token of the text form (see the module documentation).
fn parse_token(token: &str) -> Result<Vec<LayerSpec>, String> {
    let number = |text: &str| -> Result<usize, String> {
        text.parse::<usize>()
            .map_err(|_| format!("{token:?}: {text:?} is not a whole number"))
    };
    let simple = match token {
        "bn" | "batchnorm" => Some(LayerSpec::BatchNorm),
        "relu" => Some(LayerSpec::Relu),
        "pool" | "maxpool" => Some(LayerSpec::MaxPool),
        "gap" => Some(LayerSpec::Gap),
        _ => None,
    };
    if let Some(layer) = simple {
        return Ok(vec![layer]);
    }
    let spec = if let Some(rest) = token.strip_prefix("block") {
        let channels = number(rest)?;
        vec![
            LayerSpec::Conv {
                channels,
                kernel: 3,
                stride: 1,
            },
            LayerSpec::BatchNorm,
            LayerSpec::Relu,
            LayerSpec::MaxPool,
        ]
    } else if let Some(rest) = token.strip_prefix("conv") {
        // conv<channels>[k<kernel>][s<stride>]
        let (rest, stride) = match rest.split_once('s') {
            Some((head, s)) => (head, number(s)?),
            None => (rest, 1),
        };
        let (channels, kernel) = match rest.split_once('k') {
            Some((c, k)) => (number(c)?, number(k)?),
            None => (number(rest)?, 3),
        };
        vec![LayerSpec::Conv {
            channels,
            kernel,
            stride,
        }]
    } else if let Some(rest) = token.strip_prefix("dense") {
        vec![LayerSpec::Dense {
            units: number(rest)?,
        }]
    } else if let Some(rest) = token.strip_prefix("dropout") {
        let p = rest
            .parse::<f32>()
            .map_err(|_| format!("{token:?}: {rest:?} is not a probability such as 0.3"))?;
        vec![LayerSpec::Dropout { p }]
    } else {
        return Err(format!(
            "unknown layer {token:?}; use conv<N>[k<K>][s<S>], bn, relu, pool, gap, dense<N>, \
             dropout<P> or block<N>"
        ));
    };
    for layer in &spec {
        layer.check()?;
    }
    Ok(spec)
}

/// Parses an architecture's body: a preset name ([`PRESETS`]) or layers in the text form.
///
/// # Errors
/// [`Error::Config`] naming the token at fault, or saying the text is empty.
pub fn parse_body(text: &str) -> Result<Vec<LayerSpec>> {
    let text = text.trim();
    let text = PRESETS
        .iter()
        .find(|(name, _)| *name == text)
        .map_or(text, |(_, body)| body);
    let mut body = Vec::new();
    for token in text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        body.extend(
            parse_token(&token.to_ascii_lowercase())
                .map_err(|e| Error::Config(format!("--arch: {e}")))?,
        );
    }
    if body.is_empty() {
        let presets: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        return Err(Error::Config(format!(
            "--arch is empty; give a preset ({}) or layers such as \"conv16 bn relu pool gap\"",
            presets.join(", ")
        )));
    }
    Ok(body)
}

/// Layers in the text form, one token each (blocks written out): what [`parse_body`] reads
/// back to the same layers.
pub fn describe(layers: &[LayerSpec]) -> String {
    layers
        .iter()
        .map(LayerSpec::token)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything needed to build a network: input geometry, body, outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// How each input row is read (`size × size × 3` for images).
    pub input: Geometry,
    /// Every layer before the output head.
    pub body: Vec<LayerSpec>,
    /// Output units: 1 for two classes (sigmoid), the number of classes otherwise (softmax).
    pub outputs: usize,
}

impl Architecture {
    /// The document's kind of network: dense layers with ReLU (and dropout) on flat inputs.
    pub fn dense(input: Geometry, hidden: &[usize], outputs: usize, dropout: f32) -> Self {
        Architecture {
            input,
            body: dense_body(hidden, dropout),
            outputs,
        }
    }

    /// The body and the head's dense layer: every layer the network will have.
    pub fn layers(&self) -> Vec<LayerSpec> {
        let mut layers = self.body.clone();
        layers.push(LayerSpec::Dense {
            units: self.outputs,
        });
        layers
    }

    /// The head that fits the output size: sigmoid for one unit, softmax otherwise.
    pub fn head(&self) -> crate::loss::Head {
        if self.outputs == 1 {
            crate::loss::Head::Sigmoid
        } else {
            crate::loss::Head::Softmax
        }
    }

    /// Each layer's input geometry, in order, checked to chain.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first layer (by position and token) that cannot take
    /// what the layer before it gives.
    pub fn inputs(&self) -> Result<Vec<Geometry>> {
        let mut inputs = Vec::new();
        let mut g = self.input;
        for (i, layer) in self.layers().iter().enumerate() {
            inputs.push(g);
            g = layer.output(g).map_err(|why| {
                Error::Config(format!(
                    "layer {} ({}) of the architecture cannot follow: {why}",
                    i + 1,
                    layer.token()
                ))
            })?;
        }
        Ok(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_reads_every_token_and_round_trips() {
        let body =
            parse_body("conv16 bn relu pool, conv32k5s2 conv8k1 gap dense64 relu dropout0.25")
                .unwrap();
        assert_eq!(
            body[0],
            LayerSpec::Conv {
                channels: 16,
                kernel: 3,
                stride: 1
            }
        );
        assert_eq!(
            body[4],
            LayerSpec::Conv {
                channels: 32,
                kernel: 5,
                stride: 2
            }
        );
        assert_eq!(
            body[5],
            LayerSpec::Conv {
                channels: 8,
                kernel: 1,
                stride: 1
            }
        );
        assert_eq!(body[9], LayerSpec::Dropout { p: 0.25 });
        assert_eq!(parse_body(&describe(&body)).unwrap(), body);
        assert_eq!(
            parse_body("block8").unwrap(),
            parse_body("conv8 bn relu pool").unwrap()
        );
    }

    #[test]
    fn the_cnn_preset_is_four_blocks_then_pooling_and_dropout() {
        let body = parse_body("cnn").unwrap();
        assert_eq!(
            describe(&body),
            "conv16 bn relu pool conv32 bn relu pool conv64 bn relu pool conv64 bn relu pool gap dropout0.3"
        );
    }

    #[test]
    fn bad_tokens_are_refused_by_name() {
        for (text, needle) in [
            ("conv", "\"\" is not a whole number"),
            ("conv16k4", "odd"),
            ("conv0", "at least one channel"),
            ("conv16s0", "stride"),
            ("dropout1.5", "probability"),
            ("dense0", "at least one unit"),
            ("softmax", "unknown layer \"softmax\""),
            ("  ", "empty"),
        ] {
            let msg = parse_body(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text:?}: {msg}");
        }
    }

    #[test]
    fn geometries_are_checked_to_chain_naming_the_layer() {
        let arch = Architecture {
            input: Geometry::image(8),
            body: parse_body("conv4 pool pool pool pool gap").unwrap(),
            outputs: 1,
        };
        let msg = arch.inputs().unwrap_err().to_string();
        assert!(
            msg.contains("layer 5 (pool)") && msg.contains("1×1×4"),
            "{msg}"
        );
        let ok = Architecture {
            input: Geometry::image(8),
            body: parse_body("conv4s2 pool gap dense3").unwrap(),
            outputs: 2,
        };
        let inputs = ok.inputs().unwrap();
        assert_eq!(inputs[1], Geometry::new(4, 4, 4));
        assert_eq!(inputs[2], Geometry::new(2, 2, 4));
        assert_eq!(inputs[4], Geometry::flat(3));
    }
}
