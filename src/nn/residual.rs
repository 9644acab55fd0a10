//! The residual block (He et al., 2016): a layer made of layers. Its body is a sequence of
//! layers, its shortcut is the identity or another sequence (a 1×1 convolution with a stride
//! and batch norm, where the body changes the shape), and its output is
//! `y = relu(body(x) + shortcut(x))`, as torchvision's `BasicBlock.forward` reads.
//!
//! Backward sends `dsum = relu'(y) ⊙ dy` down both branches and adds their input gradients.
//! A training pass keeps both branches' passes ([`Branches`]), so the block's backward is
//! the two sequences' own backward passes.
//!
//! The text form: `res64` is a basic block (body `conv64 bn relu conv64 bn`, identity
//! shortcut); `res64s2` strides its first conv by 2 and projects the shortcut with
//! `conv64k1s2 bn`. Any body and shortcut: `res(conv64 bn relu conv64 bn | conv64k1 bn)`, or
//! `res(BODY)` for an identity shortcut.

use super::activation::relu_backward;
use super::layer::{AnyLayer, Backward, BoxedLayer, Buffer, Layer, Mode, Param};
use super::sequence::{self, Pass};
use super::spec::{
    BatchNormSpec, Draw, Kind, LayerSpec, ReluSpec, TensorShapes, chain, describe, numbered,
    parse_layers,
};
use super::{Geometry, Rows, recycle};
use ndarray::{Array2, ArrayView2, ArrayViewMutD, Zip};

/// A residual block's settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidualSpec {
    /// The body's layers, in order (at least one).
    pub body: Vec<LayerSpec>,
    /// The shortcut's layers; empty for the identity.
    #[serde(default)]
    pub shortcut: Vec<LayerSpec>,
}

impl ResidualSpec {
    /// The basic block: body `conv{c}s{stride} bn relu conv{c} bn`; shortcut the identity for
    /// stride 1, else `conv{c}k1s{stride} bn`.
    pub fn basic(channels: usize, stride: usize) -> Self {
        let bn = || LayerSpec::BatchNorm(BatchNormSpec {});
        let body = vec![
            LayerSpec::conv(channels, 3, stride),
            bn(),
            LayerSpec::Relu(ReluSpec {}),
            LayerSpec::conv(channels, 3, 1),
            bn(),
        ];
        let shortcut = if stride == 1 {
            Vec::new()
        } else {
            vec![LayerSpec::conv(channels, 1, stride), bn()]
        };
        ResidualSpec { body, shortcut }
    }

    /// `(channels, stride)` when this is a basic block.
    fn as_basic(&self) -> Option<(usize, usize)> {
        let LayerSpec::Conv(first) = self.body.first()? else {
            return None;
        };
        let basic = ResidualSpec::basic(first.channels, first.stride);
        (*self == basic).then_some((first.channels, first.stride))
    }

    /// Each branch's name prefix and layers: the body's layers are named as a sequence's
    /// (`conv1`, `batchnorm1`, ...), the shortcut's under `shortcut.`.
    fn branches(&self) -> [(&'static str, &[LayerSpec]); 2] {
        [("", &self.body), ("shortcut.", &self.shortcut)]
    }
}

impl Kind for ResidualSpec {
    const NAME: &'static str = "residual";

    fn token(&self) -> String {
        match self.as_basic() {
            Some((c, 1)) => format!("res{c}"),
            Some((c, s)) => format!("res{c}s{s}"),
            None if self.shortcut.is_empty() => format!("res({})", describe(&self.body)),
            None => format!(
                "res({} | {})",
                describe(&self.body),
                describe(&self.shortcut)
            ),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.body.is_empty() {
            return Err(format!(
                "{}: a residual block needs a non-empty body",
                self.token()
            ));
        }
        for layer in self.body.iter().chain(&self.shortcut) {
            layer.check()?;
        }
        Ok(())
    }

    fn output(&self, input: Geometry) -> Result<Geometry, String> {
        let t = self.token();
        let (_, body) =
            chain(input, &self.body, "of the block's body ").map_err(|e| format!("{t}: {e}"))?;
        let (_, shortcut) = chain(input, &self.shortcut, "of the block's shortcut ")
            .map_err(|e| format!("{t}: {e}"))?;
        if body != shortcut {
            let which = if self.shortcut.is_empty() {
                "the identity shortcut"
            } else {
                "the shortcut"
            };
            return Err(format!(
                "{t}: the body gives {body} but {which} gives {shortcut}; the two are added, so \
                 they must match (a projection such as \"| conv{}k1s2 bn\" changes the shortcut's shape)",
                body.channels
            ));
        }
        Ok(body)
    }

    fn tensors(&self, input: Geometry) -> TensorShapes {
        let mut all = TensorShapes::default();
        for (prefix, layers) in self.branches() {
            let Ok((inputs, _)) = chain(input, layers, "") else {
                continue; // checked before anything asks for tensors
            };
            let names = numbered(layers.iter().map(LayerSpec::kind));
            for ((layer, g), name) in layers.iter().zip(inputs).zip(names) {
                let t = layer.tensors(g);
                let full = |(n, s): (String, Vec<usize>)| (format!("{prefix}{name}.{n}"), s);
                all.params.extend(t.params.into_iter().map(full));
                all.buffers.extend(t.buffers.into_iter().map(full));
            }
        }
        all
    }

    fn build(&self, input: Geometry, draw: &mut Draw<'_>) -> BoxedLayer {
        let mut build = |layers: &[LayerSpec]| -> Vec<BoxedLayer> {
            let inputs = chain(input, layers, "").map(|(i, _)| i).unwrap_or_default();
            layers
                .iter()
                .zip(inputs)
                .map(|(l, g)| l.build(g, draw))
                .collect()
        };
        let body = build(&self.body);
        let shortcut = build(&self.shortcut);
        let output = body.last().map_or(input, |l| l.output());
        Box::new(Residual {
            body,
            shortcut,
            input,
            output,
        })
    }

    /// `res<c>[s<stride>]`, `res(BODY)` or `res(BODY | SHORTCUT)`.
    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        let rest = token.strip_prefix("res")?;
        let read = || {
            if let Some(inner) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
                let parts = split_branches(inner);
                if parts.len() > 2 {
                    return Err(format!(
                        "{token:?}: a residual block takes one \"|\" between its body and its \
                         shortcut"
                    ));
                }
                let body = parse_layers(parts[0])?;
                let shortcut = match parts.get(1) {
                    Some(s) => parse_layers(s)?,
                    None => Vec::new(),
                };
                let spec = ResidualSpec { body, shortcut };
                spec.check()?;
                return Ok(vec![LayerSpec::Residual(spec)]);
            }
            let (channels, stride) = match rest.split_once('s') {
                Some((c, s)) => (
                    super::spec::number(token, c)?,
                    super::spec::number(token, s)?,
                ),
                None => (super::spec::number(token, rest)?, 1),
            };
            Ok(vec![LayerSpec::Residual(ResidualSpec::basic(
                channels, stride,
            ))])
        };
        Some(read())
    }
}

/// `text` cut at each `|` outside parentheses.
fn split_branches(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A residual block: `y = relu(body(x) + shortcut(x))`.
#[derive(Debug, Clone)]
pub struct Residual {
    body: Vec<BoxedLayer>,
    /// Empty for the identity.
    shortcut: Vec<BoxedLayer>,
    input: Geometry,
    output: Geometry,
}

/// What a training pass keeps: each branch's own pass (the identity shortcut has none).
pub struct Branches {
    body: Pass,
    shortcut: Option<Pass>,
}

impl Residual {
    /// The input geometry.
    pub fn input(&self) -> Geometry {
        self.input
    }

    /// The body's layers.
    pub fn body(&self) -> &[BoxedLayer] {
        &self.body
    }

    /// The shortcut's layers; empty for the identity.
    pub fn shortcut(&self) -> &[BoxedLayer] {
        &self.shortcut
    }

    /// Both branches' passes over `x`.
    fn branches(&self, x: ArrayView2<'_, f32>, mode: &mut Mode<'_>) -> Branches {
        let body = sequence::forward(&self.body, Rows::Values(x), mode);
        let shortcut = (!self.shortcut.is_empty())
            .then(|| sequence::forward(&self.shortcut, Rows::Values(x), mode));
        Branches { body, shortcut }
    }
}

/// An inference pass's block output from its branches' outputs: `relu(body + shortcut)`, with
/// `x` itself when the shortcut is the identity (`None`). Both outputs go back to the pool.
pub(super) fn join(
    body: Array2<f32>,
    shortcut: Option<Array2<f32>>,
    x: ArrayView2<'_, f32>,
) -> Array2<f32> {
    let y = add_relu(body.view(), shortcut.as_ref().map_or(x, |s| s.view()));
    recycle::give(body);
    if let Some(shortcut) = shortcut {
        recycle::give(shortcut);
    }
    y
}

/// `relu(a + b)` in one sweep, in a recycled buffer.
fn add_relu(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut y = recycle::scratch(a.dim());
    Zip::from(&mut y)
        .and(&a)
        .and(&b)
        .par_for_each(|y, &a, &b| *y = (a + b).max(0.0));
    y
}

impl Layer for Residual {
    /// Both branches' passes in training; nothing at inference.
    type Saved = Option<Branches>;

    fn spec(&self) -> LayerSpec {
        LayerSpec::Residual(ResidualSpec {
            body: self.body.iter().map(|l| l.spec()).collect(),
            shortcut: self.shortcut.iter().map(|l| l.spec()).collect(),
        })
    }

    fn output(&self) -> Geometry {
        self.output
    }

    /// `x (batch, h·w·c)` → `relu(body(x) + shortcut(x))`. Training keeps both passes;
    /// inference keeps only each branch's current output.
    fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        mode: &mut Mode<'_>,
    ) -> (Array2<f32>, Option<Branches>) {
        if !mode.is_train() {
            let body = sequence::infer(&self.body, Rows::Values(x));
            let shortcut = (!self.shortcut.is_empty())
                .then(|| sequence::infer(&self.shortcut, Rows::Values(x)));
            return (join(body, shortcut, x), None);
        }
        let passes = self.branches(x, mode);
        let shortcut = passes.shortcut.as_ref().map_or(x, Pass::last);
        (add_relu(passes.body.last(), shortcut), Some(passes))
    }

    /// `dsum = relu'(y) ⊙ dy` goes down the body and the shortcut; `dx` is the sum of the
    /// two input gradients (the identity's is `dsum` itself).
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        y: ArrayView2<'_, f32>,
        saved: &Option<Branches>,
        dy: Array2<f32>,
        need_dx: bool,
    ) -> Backward {
        let recomputed;
        let passes = match saved {
            Some(p) => p,
            None => {
                recomputed = self.branches(x, &mut Mode::Infer);
                &recomputed
            }
        };
        let dsum = relu_backward(y, dy);
        // Each branch's backward consumes its own copy; the body's is a recycled buffer.
        let mut body_dy = recycle::scratch(dsum.dim());
        body_dy.assign(&dsum);
        let (mut grads, dx_body) =
            sequence::backward(&self.body, Rows::Values(x), &passes.body, body_dy, need_dx);
        let dx_shortcut = match &passes.shortcut {
            None => need_dx.then_some(dsum),
            Some(pass) => {
                let (g, dx) =
                    sequence::backward(&self.shortcut, Rows::Values(x), pass, dsum, need_dx);
                grads.extend(g);
                dx
            }
        };
        let dx = match (dx_body, dx_shortcut) {
            (Some(mut a), Some(b)) => {
                a += &b;
                recycle::give(b);
                Some(a)
            }
            _ => None,
        };
        Backward { dx, grads }
    }

    fn params(&self) -> Vec<Param<'_>> {
        let mut params = sequence::params(&self.body);
        params.extend(sequence::params(&self.shortcut).into_iter().map(|p| Param {
            name: format!("shortcut.{}", p.name),
            ..p
        }));
        params
    }

    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        let mut params = sequence::params_mut(&mut self.body);
        params.extend(sequence::params_mut(&mut self.shortcut));
        params
    }

    fn buffers(&self) -> Vec<Buffer<'_>> {
        let mut buffers = sequence::buffers(&self.body);
        buffers.extend(
            sequence::buffers(&self.shortcut)
                .into_iter()
                .map(|(n, b)| (format!("shortcut.{n}"), b)),
        );
        buffers
    }

    fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        let mut buffers = sequence::buffers_mut(&mut self.body);
        buffers.extend(sequence::buffers_mut(&mut self.shortcut));
        buffers
    }

    fn children(&self) -> Vec<(String, &dyn AnyLayer)> {
        let mut out = Vec::new();
        for (prefix, layers) in [("", &self.body), ("shortcut.", &self.shortcut)] {
            for (layer, name) in layers.iter().zip(sequence::names(layers)) {
                out.push((format!("{prefix}{name}"), layer.as_ref()));
            }
        }
        out
    }

    fn absorb(&mut self, saved: &Option<Branches>) {
        let Some(passes) = saved else { return };
        sequence::absorb(&mut self.body, &passes.body);
        if let Some(pass) = &passes.shortcut {
            sequence::absorb(&mut self.shortcut, pass);
        }
    }
}
