//! Inference with fewer sweeps over the activations: a network's layers rewritten once for
//! inference, each `conv [bn] [relu] [pool]` run as one step.
//!
//! - **Batch norm folds into the conv before it** ([`Conv2d::fold_batchnorm`]): at inference
//!   it is a fixed per-channel scale and shift, so the conv's weights and bias absorb it.
//! - **Bias, ReLU and max-pooling run in the conv's epilogue** ([`Conv2d::infer`]), on each
//!   group of images while its output is still in cache. A pooled conv's full-size output is
//!   never written for the whole batch.
//! - **Residual blocks** are rewritten branch by branch and keep their one-sweep `relu(a + b)`.
//! - Every other layer (dense, global pooling, dropout) runs as it is.
//!
//! The layer-by-layer pass ([`sequence::infer`](super::sequence::infer)) is the oracle: without batch norm the two
//! give the same bytes; with it, folding changes rounding only (tested to
//! [`FOLD_ERROR_BOUND`](super::conv::FOLD_ERROR_BOUND) relative to the logits' magnitude).
//! Training never uses this: batch norm normalises by the batch's own statistics there.

use super::activation::Relu;
use super::batchnorm::BatchNorm;
use super::conv::{Conv2d, Epilogue};
use super::layer::{BoxedLayer, Mode};
use super::pool::MaxPool2d;
use super::residual::{Residual, join};
use super::{Rows, recycle};
use crate::linalg::bytes;
use ndarray::{Array2, ArrayView2};

/// A network's layers, rewritten for inference.
#[derive(Debug, Clone)]
pub struct Fused {
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    /// A conv with any batch norm folded in, its kernel matrix, then its epilogue.
    Conv(Box<(Conv2d, Array2<f32>, Epilogue)>),
    /// A residual block's branches, each rewritten; an empty shortcut is the identity.
    Residual {
        body: Vec<Step>,
        shortcut: Vec<Step>,
    },
    /// Any other layer, as it is.
    Layer(BoxedLayer),
}

impl Fused {
    /// `layers` rewritten for inference, or `None` when they hold no conv (nothing to fuse:
    /// the layer-by-layer pass is already the fast one).
    pub fn new(layers: &[BoxedLayer]) -> Option<Fused> {
        let has_conv = layers
            .iter()
            .any(|l| l.as_any().is::<Conv2d>() || l.as_any().is::<Residual>());
        has_conv.then(|| Fused {
            steps: plan(layers),
        })
    }

    /// Inference through the steps, keeping only the current output.
    pub fn infer(&self, x: Rows<'_>) -> Array2<f32> {
        run(&self.steps, x)
    }
}

/// The steps for `layers`: each conv takes the batch norm, ReLU and max-pool that directly
/// follow it, in that order.
fn plan(layers: &[BoxedLayer]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = layers;
    while let Some((layer, after)) = rest.split_first() {
        rest = after;
        let any = layer.as_any();
        if let Some(conv) = any.downcast_ref::<Conv2d>() {
            let mut conv = conv.clone();
            if let Some(bn) = next::<BatchNorm>(&mut rest) {
                conv = conv.fold_batchnorm(bn);
            }
            let relu = next::<Relu>(&mut rest).is_some();
            let pool = next::<MaxPool2d>(&mut rest).copied();
            let kernel = conv.kernel_matrix();
            steps.push(Step::Conv(Box::new((
                conv,
                kernel,
                Epilogue { relu, pool },
            ))));
        } else if let Some(block) = any.downcast_ref::<Residual>() {
            steps.push(Step::Residual {
                body: plan(block.body()),
                shortcut: plan(block.shortcut()),
            });
        } else {
            steps.push(Step::Layer(layer.clone()));
        }
    }
    steps
}

/// The first of `rest` if it is an `L`, taking it off `rest`.
fn next<'a, L: 'static>(rest: &mut &'a [BoxedLayer]) -> Option<&'a L> {
    let (first, after) = rest.split_first()?;
    let found = first.as_any().downcast_ref::<L>()?;
    *rest = after;
    Some(found)
}

/// Inference through `steps` on `x`, handing each intermediate output back to the pool.
fn run(steps: &[Step], x: Rows<'_>) -> Array2<f32> {
    let mut a: Option<Array2<f32>> = None;
    for step in steps {
        let y = match &a {
            Some(input) => step.infer(input.view()),
            None => match (step, x) {
                (Step::Layer(layer), _) => layer.forward_rows(x, &mut Mode::Infer).0,
                (_, Rows::Values(v)) => step.infer(v),
                (_, Rows::Bytes(b)) => {
                    // Scaled into a recycled buffer: a fresh one per batch is faulted in anew.
                    let mut v = recycle::scratch(b.dim());
                    bytes::to_unit_into(b, v.view_mut());
                    let y = step.infer(v.view());
                    recycle::give(v);
                    y
                }
            },
        };
        if let Some(old) = a.replace(y) {
            recycle::give(old);
        }
    }
    a.unwrap_or_else(|| x.values().into_owned())
}

impl Step {
    fn infer(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        match self {
            Step::Conv(step) => {
                let (conv, kernel, then) = &**step;
                conv.infer(x, *then, kernel.view())
            }
            Step::Layer(layer) => layer.forward(x, &mut Mode::Infer).0,
            Step::Residual { body, shortcut } => {
                let body = run(body, Rows::Values(x));
                let shortcut = (!shortcut.is_empty()).then(|| run(shortcut, Rows::Values(x)));
                join(body, shortcut, x)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::FOLD_ERROR_BOUND;
    use crate::nn::spec::parse_body;
    use crate::nn::{Architecture, Geometry, Init, Mt19937, Network, sequence};

    /// A network of `body` on `side`-pixel images, its batch norms given running statistics,
    /// scales and shifts far from their initial values (as after training).
    fn trained(body: &str, side: usize) -> Network {
        let arch = Architecture {
            input: Geometry::image(side),
            body: parse_body(body).unwrap(),
            outputs: 3,
        };
        let mut net = Network::new(&arch, Init::He, &mut Mt19937::new(7)).unwrap();
        let mut k = 0.0f32;
        // Every tensor a little off its start; γ and running variances stay positive.
        let mut nudge = |v: f32| {
            k += 1.0;
            v.abs().max(0.05) * (1.0 + 0.3 * (k * 0.7).sin())
        };
        for mut p in net.params_mut() {
            p.mapv_inplace(&mut nudge);
        }
        for mut b in net.buffers_mut() {
            b.mapv_inplace(&mut nudge);
        }
        net
    }

    fn images(rows: usize, net: &Network) -> Array2<f32> {
        Array2::from_shape_fn((rows, net.input_units()), |(i, j)| {
            ((i * 31 + j * 17) % 97) as f32 / 97.0
        })
    }

    /// The largest difference relative to the largest magnitude.
    fn relative_error(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        diff / scale
    }

    #[test]
    fn without_batch_norm_it_gives_the_same_bytes_as_the_layers_one_by_one() {
        let net = trained(
            "conv8 relu pool conv16 relu pool conv4k1 relu gap dense5",
            16,
        );
        let x = images(37, &net);
        let fused = Fused::new(net.layers()).unwrap();
        assert_eq!(
            fused.steps.len(),
            6,
            "three convs with their epilogues, gap, dense5, the output layer"
        );
        let oracle = sequence::infer(net.layers(), Rows::Values(x.view()));
        assert_eq!(fused.infer(Rows::Values(x.view())), oracle);
    }

    #[test]
    fn folded_batch_norm_stays_within_the_fold_bound_for_both_presets() {
        for (body, side) in [("cnn", 32), ("resnet", 32)] {
            let net = trained(body, side);
            let x = images(9, &net);
            let fused = Fused::new(net.layers()).unwrap();
            let oracle = sequence::infer(net.layers(), Rows::Values(x.view()));
            let error = relative_error(&fused.infer(Rows::Values(x.view())), &oracle);
            assert!(error <= FOLD_ERROR_BOUND, "{body}: {error:e}");
            // The path Network::logits takes is this one.
            assert_eq!(net.logits(x.view()), fused.infer(Rows::Values(x.view())));
        }
    }

    #[test]
    fn image_bytes_give_what_their_values_give() {
        let net = trained("cnn", 32);
        let bytes =
            Array2::from_shape_fn((4, net.input_units()), |(i, j)| ((i * 7 + j) % 256) as u8);
        let values = bytes.mapv(|b| f32::from(b) / 255.0);
        let fused = Fused::new(net.layers()).unwrap();
        assert_eq!(
            fused.infer(Rows::Bytes(bytes.view())),
            fused.infer(Rows::Values(values.view()))
        );
    }

    #[test]
    fn a_change_to_the_weights_or_statistics_is_seen_by_the_next_inference() {
        let mut net = trained("conv4 bn relu pool gap", 8);
        let x = images(3, &net);
        let before = net.logits(x.view());
        for mut b in net.buffers_mut() {
            b.mapv_inplace(|v| v * 2.0);
        }
        let after_buffers = net.logits(x.view());
        assert_ne!(before, after_buffers);
        for mut p in net.params_mut() {
            p.mapv_inplace(|v| v * 0.5);
        }
        let after_params = net.logits(x.view());
        assert_ne!(after_buffers, after_params);
        let oracle = sequence::infer(net.layers(), Rows::Values(x.view()));
        assert!(relative_error(&after_params, &oracle) <= FOLD_ERROR_BOUND);
    }

    #[test]
    fn dense_networks_have_nothing_to_fuse() {
        let net = trained("dense20 relu dense7", 4);
        assert!(Fused::new(net.layers()).is_none());
    }
}
