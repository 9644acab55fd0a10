//! The direct step: forward through every layer, backward through every layer, update. The
//! document's loop body, for any optimiser, batch size and augmentation.

use super::engine::{Engine, Outcome};
use super::{Labelled, add_l2, is_whole, outcome, score};
use crate::Rng;
use crate::data::augment::Augment;
use crate::model::Classes;
use crate::nn::{Mode, Network, Pass, Rows, recycle};
use crate::optim::{Optimizer, OptimizerState};
use ndarray::{ArrayD, ArrayView2, Axis, CowArray, Ix2};

/// The direct engine, borrowing the training (and validation) data.
pub struct DirectEngine<'a> {
    train: Labelled<'a>,
    val: Option<Labelled<'a>>,
    augment: Augment,
    image_size: usize,
}

impl<'a> DirectEngine<'a> {
    /// An engine for `train`, validating on `val`, augmenting `image_size`-square images.
    pub fn new(
        train: Labelled<'a>,
        val: Option<Labelled<'a>>,
        augment: Augment,
        image_size: usize,
    ) -> Self {
        DirectEngine {
            train,
            val,
            augment,
            image_size,
        }
    }
}

/// Rows `batch` of `a`, borrowed when the batch is every row in order.
fn rows<'x>(a: ArrayView2<'x, f32>, batch: &[usize]) -> CowArray<'x, f32, Ix2> {
    if is_whole(batch, a.nrows()) {
        CowArray::from(a)
    } else {
        CowArray::from(a.select(Axis(0), batch))
    }
}

/// Every parameter's gradient (with `l2·W` added to the weights) for one batch, before any
/// update, and the batch's score if asked: the heart of a direct step. The training pass is
/// returned too, for [`Network::absorb`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_backward(
    net: &Network,
    x: Rows<'_>,
    targets: ArrayView2<'_, f32>,
    labels: &[usize],
    classes: &Classes,
    l2: f32,
    want_score: bool,
    rng: &mut Rng,
) -> (Outcome, Vec<ArrayD<f32>>, Pass) {
    let pass = net.forward(x, &mut Mode::Train(rng));
    let scored = outcome(classes, pass.logits(), targets, labels, want_score);
    let dlogits = net.head().cost_gradient(pass.logits(), targets);
    // No gradient for the input images: nothing uses it.
    let (mut grads, _) = net.backward(x, &pass, dlogits, false);
    if l2 > 0.0 {
        add_l2(
            &mut grads,
            &net.params_from(0),
            &net.weight_mask_from(0),
            l2,
        );
    }
    (scored, grads, pass)
}

impl Engine for DirectEngine<'_> {
    fn step(
        &mut self,
        net: &mut Network,
        optimizer: &mut dyn Optimizer,
        batch: &[usize],
        learning_rate: f32,
        l2: f32,
        want_score: bool,
        rng: &mut Rng,
    ) -> Outcome {
        // The whole set in order is read as bytes by the first layer; a mini-batch (or an
        // augmented batch) is scaled to values first.
        let images = Rows::Bytes(self.train.x);
        let picked = (self.augment.is_on() || !is_whole(batch, images.nrows())).then(|| {
            let mut picked = images.select(batch);
            if self.augment.is_on() {
                self.augment.apply(&mut picked, self.image_size, rng);
            }
            picked
        });
        let x = picked.as_ref().map_or(images, Rows::from);
        let targets = rows(self.train.targets.view(), batch);
        let labels: Vec<usize> = batch.iter().map(|&i| self.train.labels[i]).collect();

        let (outcome, grads, pass) = forward_backward(
            net,
            x,
            targets.view(),
            &labels,
            self.train.classes,
            l2,
            want_score,
            rng,
        );
        net.absorb(&pass);
        optimizer.step(&mut net.params_mut(), &grads, learning_rate);
        drop(pass);
        // The batch and the large gradients go back to the pool for the next step (fresh pages
        // would be faulted in and zeroed by the kernel every step).
        for g in grads {
            if let Ok(g) = g.into_dimensionality::<Ix2>() {
                recycle::give(g);
            }
        }
        if let Some(p) = picked {
            recycle::give(p);
        }
        outcome
    }

    fn weight_norm_sq(&self, net: &Network) -> f64 {
        net.weight_norm_sq_from(0)
    }

    fn validate(&self, net: &Network) -> Option<(f64, f64)> {
        let val = self.val.as_ref()?;
        let logits = net.logits(val.x);
        let s = score(val.classes, logits.view(), val.targets.view(), val.labels);
        Some((s.cost, s.correct as f64 / val.labels.len().max(1) as f64))
    }

    fn network(&self, net: &Network) -> Network {
        net.clone()
    }

    fn optimizer_state(&self, _net: &Network, optimizer: &dyn Optimizer) -> OptimizerState {
        optimizer.state().clone()
    }

    fn finish(self: Box<Self>, _net: &mut Network) {}
}
