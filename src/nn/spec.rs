//! Architectures: what layers a network has, as data, as text, and checked against the input.
//!
//! A [`LayerSpec`] names one layer and its settings. Each kind's settings are a type in that
//! kind's own file (`dense.rs` holds [`DenseSpec`], `residual.rs` holds [`ResidualSpec`]),
//! which implements [`Kind`]: its token in the text form, its checks, its output geometry,
//! its tensors' names and shapes, and how to build the layer. This file only lists the kinds
//! ([`kinds!`]) and reads the text form. An [`Architecture`] is the input geometry, the layers
//! before the output head (the *body*), and the number of outputs. The document's network is
//! `dense20 relu dense7 relu dense5 relu` before a one-unit sigmoid head.
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
//! | `res64`, `res64s2` | a basic residual block (see [`ResidualSpec`]) |
//! | `res(BODY)`, `res(BODY \| SHORTCUT)` | a residual block with any body and shortcut |
//!
//! Presets name whole bodies: [`PRESETS`].

use super::layer::BoxedLayer;
use super::{Geometry, Init, Mt19937};
use crate::{Error, Result};
use ndarray::{Array2, Array4};

pub use super::activation::ReluSpec;
pub use super::batchnorm::BatchNormSpec;
pub use super::conv::ConvSpec;
pub use super::dense::DenseSpec;
pub use super::dropout::DropoutSpec;
pub use super::gap::GapSpec;
pub use super::pool::MaxPoolSpec;
pub use super::residual::ResidualSpec;

/// What every layer kind's settings type says about its kind.
pub trait Kind: Sized {
    /// The kind's name in summaries, parameter names and model files (`conv`, `batchnorm`).
    const NAME: &'static str;

    /// The token of the text form (`conv32`, `conv64k5s2`, `dropout0.3`, ...).
    fn token(&self) -> String;

    /// Checks the settings on their own (not against an input).
    ///
    /// # Errors
    /// A sentence naming the token at fault.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// The output geometry for `input`, the settings already checked.
    ///
    /// # Errors
    /// A sentence saying why the layer cannot take that input (a pool on a 1-pixel image).
    fn output(&self, input: Geometry) -> Result<Geometry, String>;

    /// The names and shapes of the layer's parameters and buffers for `input`: what a model
    /// file must hold for it, known before anything is allocated.
    fn tensors(&self, _input: Geometry) -> TensorShapes {
        TensorShapes::default()
    }

    /// The layer over `input`, its weights drawn by `draw`. The geometry has been checked.
    fn build(&self, input: Geometry, draw: &mut Draw<'_>) -> BoxedLayer;

    /// Reads `token` if it is this kind's (`None` if it is not), possibly as several layers
    /// (`block32`).
    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>>;
}

/// Lists every layer kind once: the [`LayerSpec`] enum and the dispatch of [`Kind`]'s methods
/// over it. Adding a kind is a file with its settings type and one line here.
macro_rules! kinds {
    ($($variant:ident($spec:ty) = $name:literal),+ $(,)?) => {
        /// One layer of an architecture and its settings. In model files (version 2 and 3) a
        /// JSON object with the kind's name under `kind` and its settings beside it.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "kind")]
        pub enum LayerSpec {
            $(
                #[allow(missing_docs)]
                #[serde(rename = $name)]
                $variant($spec),
            )+
        }

        impl LayerSpec {
            /// The layer's kind name (`conv`, `batchnorm`, `dense`, `residual`, ...).
            pub fn kind(&self) -> &'static str {
                match self { $(LayerSpec::$variant(_) => <$spec as Kind>::NAME,)+ }
            }
            /// The token of the text form.
            pub fn token(&self) -> String {
                match self { $(LayerSpec::$variant(s) => s.token(),)+ }
            }
            /// Checks the settings on their own.
            ///
            /// # Errors
            /// A sentence naming the token at fault.
            pub fn check(&self) -> Result<(), String> {
                match self { $(LayerSpec::$variant(s) => s.check(),)+ }
            }
            /// The output geometry for `input`.
            ///
            /// # Errors
            /// A sentence saying why the layer cannot take that input.
            pub fn output(&self, input: Geometry) -> Result<Geometry, String> {
                self.check()?;
                match self { $(LayerSpec::$variant(s) => s.output(input),)+ }
            }
            /// The names and shapes of the layer's tensors for `input`.
            pub fn tensors(&self, input: Geometry) -> TensorShapes {
                match self { $(LayerSpec::$variant(s) => s.tensors(input),)+ }
            }
            /// The layer over `input` (whose geometry has been checked).
            pub fn build(&self, input: Geometry, draw: &mut Draw<'_>) -> BoxedLayer {
                match self { $(LayerSpec::$variant(s) => s.build(input, draw),)+ }
            }
        }

        /// Reads one token with the first kind that knows it.
        fn parse_known(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
            None$(.or_else(|| <$spec as Kind>::parse(token)))+
        }
    };
}

kinds! {
    Dense(DenseSpec) = "dense",
    Conv(ConvSpec) = "conv",
    BatchNorm(BatchNormSpec) = "batchnorm",
    Relu(ReluSpec) = "relu",
    MaxPool(MaxPoolSpec) = "maxpool",
    Gap(GapSpec) = "gap",
    Dropout(DropoutSpec) = "dropout",
    Residual(ResidualSpec) = "residual",
}

impl LayerSpec {
    /// A dense layer of `units`.
    pub fn dense(units: usize) -> Self {
        LayerSpec::Dense(DenseSpec { units })
    }

    /// A conv layer: `channels` out, a `kernel`-sided kernel, `stride`.
    pub fn conv(channels: usize, kernel: usize, stride: usize) -> Self {
        LayerSpec::Conv(ConvSpec {
            channels,
            kernel,
            stride,
        })
    }

    /// Dropout with probability `p`.
    pub fn dropout(p: f32) -> Self {
        LayerSpec::Dropout(DropoutSpec { p })
    }

    /// Whether the layer has weights that need a spatial input (conv), keeps statistics
    /// (batch norm) or nests layers: what the document's dense format (version 1) cannot
    /// describe.
    pub fn is_beyond_dense(&self) -> bool {
        !matches!(
            self,
            LayerSpec::Dense(_) | LayerSpec::Relu(_) | LayerSpec::Dropout(_)
        )
    }

    /// Whether the layer holds other layers (what version 2 cannot describe).
    pub fn is_nested(&self) -> bool {
        matches!(self, LayerSpec::Residual(_))
    }

    /// Whether this layer, or one nested in it, is a convolution.
    pub fn has_conv(&self) -> bool {
        match self {
            LayerSpec::Conv(_) => true,
            LayerSpec::Residual(r) => r.body.iter().chain(&r.shortcut).any(LayerSpec::has_conv),
            _ => false,
        }
    }
}

/// Names and shapes of a layer's tensors (see [`Kind::tensors`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorShapes {
    /// Trainable parameters, in the layer's [`params`](super::Layer::params) order.
    pub params: Vec<(String, Vec<usize>)>,
    /// Buffers, in the layer's [`buffers`](super::Layer::buffers) order.
    pub buffers: Vec<(String, Vec<usize>)>,
}

impl TensorShapes {
    /// Parameters only.
    pub fn params(params: &[(&str, Vec<usize>)]) -> Self {
        TensorShapes {
            params: params
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
            buffers: Vec::new(),
        }
    }
}

/// How a new layer's weights are drawn: the initialisation and NumPy's generator (layer by
/// layer, in order), or zeros when the weights are about to be replaced by saved ones.
pub struct Draw<'r> {
    init: Init,
    rng: &'r mut Mt19937,
    zeroed: bool,
}

impl<'r> Draw<'r> {
    /// Weights drawn by `init` from `rng`.
    pub fn new(init: Init, rng: &'r mut Mt19937) -> Self {
        Draw {
            init,
            rng,
            zeroed: false,
        }
    }

    /// Zero weights (nothing is drawn); `rng` is not used.
    pub fn zeroed(rng: &'r mut Mt19937) -> Self {
        Draw {
            init: Init::He,
            rng,
            zeroed: true,
        }
    }

    /// A dense weight `(fan_out, fan_in)`.
    pub fn dense(&mut self, fan_out: usize, fan_in: usize) -> Array2<f32> {
        if self.zeroed {
            Array2::zeros((fan_out, fan_in))
        } else {
            self.init.weights(fan_out, fan_in, self.rng)
        }
    }

    /// A conv weight `(c_out, c_in, k, k)`.
    pub fn conv(&mut self, c_out: usize, c_in: usize, k: usize) -> Array4<f32> {
        let flat = if self.zeroed {
            Array2::zeros((c_out, c_in * k * k))
        } else {
            self.init.conv_weights(c_out, c_in, k, self.rng)
        };
        #[allow(
            clippy::expect_used,
            reason = "a fresh (c_out, c_in·k·k) array has exactly c_out·c_in·k·k values"
        )]
        flat.into_shape_with_order((c_out, c_in, k, k))
            .expect("same size")
    }
}

/// Named architectures for `--arch`: each expands to a body.
pub const PRESETS: &[(&str, &str)] = &[
    ("cnn", "block16 block32 block64 block64 gap dropout0.3"),
    (
        "resnet",
        "conv32 bn relu pool res32 res64s2 res128s2 gap dropout0.3",
    ),
];

/// The preset names, for messages.
pub fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The body `--layers` gives: a dense layer with ReLU (and dropout, when `dropout > 0`) per
/// hidden size.
pub fn dense_body(hidden: &[usize], dropout: f32) -> Vec<LayerSpec> {
    let mut body = Vec::new();
    for &units in hidden {
        body.push(LayerSpec::dense(units));
        body.push(LayerSpec::Relu(ReluSpec {}));
        if dropout > 0.0 {
            body.push(LayerSpec::dropout(dropout));
        }
    }
    body
}

/// Names for layers of these kinds, in order: each kind and its number among the layers of
/// that kind (`conv1`, `batchnorm1`, `conv2`, ..., `dense1`).
pub fn numbered(kinds: impl Iterator<Item = &'static str>) -> Vec<String> {
    let mut seen: std::collections::HashMap<&'static str, usize> = std::collections::HashMap::new();
    kinds
        .map(|kind| {
            let n = seen.entry(kind).or_insert(0);
            *n += 1;
            format!("{kind}{n}")
        })
        .collect()
}

/// `text` as a whole number, or a sentence naming `token`.
pub(super) fn number(token: &str, text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .map_err(|_| format!("{token:?}: {text:?} is not a whole number"))
}

/// Splits the text form into tokens: at spaces and commas, except inside parentheses.
///
/// # Errors
/// A sentence when the parentheses do not pair up.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let (mut out, mut current, mut depth) = (Vec::new(), String::new(), 0usize);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("a \")\" without its \"(\" in {text:?}"))?;
            }
            _ => {}
        }
        if depth == 0 && (c.is_whitespace() || c == ',') {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if depth > 0 {
        return Err(format!("a \"(\" without its \")\" in {text:?}"));
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// Reads layers in the text form (no presets): what a block's parentheses hold, too.
///
/// # Errors
/// A sentence naming the token at fault.
pub(super) fn parse_layers(text: &str) -> Result<Vec<LayerSpec>, String> {
    let mut layers = Vec::new();
    for token in tokens(text)? {
        let token = token.to_ascii_lowercase();
        let parsed = parse_known(&token).unwrap_or_else(|| {
            Err(format!(
                "unknown layer {token:?}; use conv<N>[k<K>][s<S>], bn, relu, pool, gap, \
                 dense<N>, dropout<P>, block<N>, res<N>[s<S>] or res(BODY | SHORTCUT), or a \
                 preset ({})",
                preset_names()
            ))
        })?;
        for layer in &parsed {
            layer.check()?;
        }
        layers.extend(parsed);
    }
    Ok(layers)
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
    let body = parse_layers(text).map_err(|e| Error::Config(format!("--arch: {e}")))?;
    if body.is_empty() {
        return Err(Error::Config(format!(
            "--arch is empty; give a preset ({}) or layers such as \"conv16 bn relu pool gap\"",
            preset_names()
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

/// Each layer's input geometry, in order, checked to chain; and the output of the last.
///
/// # Errors
/// A sentence naming the first layer (by position and token, then `place`, such as "of the
/// architecture ") that cannot take what the layer before it gives.
pub(super) fn chain(
    input: Geometry,
    layers: &[LayerSpec],
    place: &str,
) -> Result<(Vec<Geometry>, Geometry), String> {
    let mut inputs = Vec::with_capacity(layers.len());
    let mut g = input;
    for (i, layer) in layers.iter().enumerate() {
        inputs.push(g);
        g = layer.output(g).map_err(|why| {
            format!(
                "layer {} ({}) {place}cannot follow: {why}",
                i + 1,
                layer.token()
            )
        })?;
    }
    Ok((inputs, g))
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
        layers.push(LayerSpec::dense(self.outputs));
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
        chain(self.input, &self.layers(), "of the architecture ")
            .map(|(inputs, _)| inputs)
            .map_err(Error::Config)
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
        assert_eq!(body[0], LayerSpec::conv(16, 3, 1));
        assert_eq!(body[4], LayerSpec::conv(32, 5, 2));
        assert_eq!(body[5], LayerSpec::conv(8, 1, 1));
        assert_eq!(body[9], LayerSpec::dropout(0.25));
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
            ("softmax", "cnn, resnet"),
            ("  ", "empty"),
            ("res(conv8 bn", "without its \")\""),
            ("res(conv8 | bn | relu)", "one \"|\""),
            ("res()", "empty body"),
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

    #[test]
    fn specs_are_saved_as_json_objects_named_by_kind() {
        let body = parse_body("conv8s2 bn relu pool gap dropout0.5 dense4 res8").unwrap();
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.starts_with(
            r#"[{"kind":"conv","channels":8,"kernel":3,"stride":2},{"kind":"batchnorm"},{"kind":"relu"},{"kind":"maxpool"},{"kind":"gap"},{"kind":"dropout","p":0.5},{"kind":"dense","units":4},{"kind":"residual","body":"#
        ), "{json}");
        let back: Vec<LayerSpec> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body);
        let unknown = r#"[{"kind":"conv","channels":8,"kernel":3,"stride":2,"dilation":2}]"#;
        assert!(serde_json::from_str::<Vec<LayerSpec>>(unknown).is_err());
    }
}
