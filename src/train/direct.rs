//! The direct step: forward through every layer, backward through every layer, update. The
//! document's loop body, for any optimiser, batch size and augmentation.

use super::engine::{Engine, Outcome};
use super::prefetch::Prefetch;
use super::shared;
use super::{Labelled, add_l2, is_whole, outcome, score};
use crate::data::Images;
use crate::data::augment::Augment;
use crate::model::Classes;
use crate::nn::{Mode, Network, Pass, Rows, recycle};
use crate::optim::{Optimizer, OptimizerState};
use crate::parallel::Group;
use crate::{Error, Result, Rng};
use ndarray::{Array2, ArrayD, ArrayView2, Axis, CowArray, Ix2, concatenate};

/// The direct engine, borrowing the training (and validation) data.
pub struct DirectEngine<'a> {
    train: Labelled<'a>,
    val: Option<Labelled<'a>>,
    augment: Augment,
    image_size: usize,
    /// The reader of streamed training images (none when they are in memory).
    prefetch: Option<Prefetch>,
    /// The processes sharing each batch, and whether they share batch norm's statistics.
    group: Group,
    sync_bn: bool,
    /// Seconds spent in the sums across processes.
    communication: f64,
}

impl<'a> DirectEngine<'a> {
    /// An engine for `train`, validating on `val`, augmenting `image_size`-square images.
    pub fn new(
        train: Labelled<'a>,
        val: Option<Labelled<'a>>,
        augment: Augment,
        image_size: usize,
        (group, sync_bn): (Group, bool),
    ) -> Self {
        let prefetch = match train.x {
            Images::Packed(rows) => Some(Prefetch::new(rows.clone())),
            Images::Memory(_) => None,
        };
        DirectEngine {
            train,
            val,
            augment,
            image_size,
            prefetch,
            group,
            sync_bn,
            communication: 0.0,
        }
    }

    /// The batch's values (gathered, scaled and augmented) when it is not the whole set in
    /// memory, in a recycled buffer.
    fn picked(&mut self, batch: &[usize], rng: &mut Rng) -> Result<Option<Array2<f32>>> {
        let mut picked = match (self.train.x, &mut self.prefetch) {
            (Images::Memory(x), _) => {
                if !self.augment.is_on() && is_whole(batch, x.nrows()) {
                    return Ok(None);
                }
                Rows::Bytes(x).select(batch)
            }
            (Images::Packed(_), Some(prefetch)) => {
                let bytes = prefetch.take(batch).map_err(|e| {
                    Error::io(
                        "cannot read a batch of training images from the decoded cache",
                        e,
                    )
                })?;
                let view = ArrayView2::from_shape((batch.len(), self.train.x.ncols()), &bytes)
                    .map_err(|e| {
                        Error::io("a batch of the wrong size", std::io::Error::other(e))
                    })?;
                // Scaled exactly as a batch gathered in memory is.
                let all: Vec<usize> = (0..batch.len()).collect();
                let values = Rows::Bytes(view).select(&all);
                prefetch.give(bytes);
                values
            }
            (Images::Packed(_), None) => unreachable!("a streamed engine has a reader"),
        };
        if self.augment.is_on() {
            self.augment.apply(&mut picked, self.image_size, rng);
        }
        Ok(Some(picked))
    }
}

/// The network's logits for `images`: at once in memory, block by block when streamed (each
/// row's logits do not depend on the others in inference).
pub(crate) fn logits_of(net: &Network, images: Images<'_>) -> Result<Array2<f32>> {
    if let Images::Memory(x) = images {
        return Ok(net.logits(x));
    }
    let mut parts = Vec::new();
    images
        .for_each_block(|_, rows| {
            parts.push(net.logits(rows));
            Ok::<(), std::io::Error>(())
        })
        .map_err(|e| Error::io("cannot read images from the decoded cache", e))?;
    let views: Vec<ArrayView2<'_, f32>> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views)
        .map_err(|e| Error::io("logits of uneven blocks", std::io::Error::other(e)))
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
///
/// `share` is this process's fraction of a batch that several share (`None` alone): the
/// cost's gradient, a mean over its own rows, is scaled by it, so that the gradients the
/// processes sum are those of the mean over the whole batch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_backward(
    net: &Network,
    x: Rows<'_>,
    targets: ArrayView2<'_, f32>,
    labels: &[usize],
    classes: &Classes,
    l2: f32,
    want_score: bool,
    mut mode: Mode<'_>,
    share: Option<f32>,
) -> (Outcome, Vec<ArrayD<f32>>, Pass) {
    let pass = net.forward(x, &mut mode);
    let scored = outcome(classes, pass.logits(), targets, labels, want_score);
    let mut dlogits = net.head().cost_gradient(pass.logits(), targets);
    if let Some(fraction) = share {
        dlogits *= fraction;
    }
    // No gradient for the input images: nothing uses it.
    let (mut grads, _) = net.backward(x, &pass, dlogits, false);
    if l2 > 0.0 {
        add_l2(&mut grads, &net.params(), l2);
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
    ) -> Result<Outcome> {
        // The whole set in order in memory is read as bytes by the first layer; a mini-batch
        // (or an augmented batch, or a streamed one) is scaled to values first.
        // Several processes: this one's part of the batch (all of it alone).
        let group = self.group.clone();
        let whole = batch.len();
        let batch = &batch[group.share(whole)];
        let picked = self.picked(batch, rng)?;
        let x = match (&picked, self.train.x) {
            (Some(p), _) => Rows::from(p),
            (None, Images::Memory(x)) => Rows::Bytes(x),
            (None, Images::Packed(_)) => unreachable!("streamed batches are always picked"),
        };
        let targets = rows(self.train.targets.view(), batch);
        let labels: Vec<usize> = batch.iter().map(|&i| self.train.labels[i]).collect();
        let solo = group.is_solo();
        let mode = match self.sync_bn && !solo {
            true => Mode::TrainSynced(rng, &group),
            false => Mode::Train(rng),
        };
        let (mut outcome, mut grads, pass) = forward_backward(
            net,
            x,
            targets.view(),
            &labels,
            self.train.classes,
            if solo { l2 } else { 0.0 },
            want_score,
            mode,
            (!solo).then(|| batch.len() as f32 / whole as f32),
        );
        net.absorb(&pass);
        if !solo {
            let started = std::time::Instant::now();
            outcome = shared::sum_step(&group, net, &mut grads, outcome, batch.len(), whole);
            self.communication += started.elapsed().as_secs_f64();
            if l2 > 0.0 {
                add_l2(&mut grads, &net.params(), l2);
            }
        }
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
        Ok(outcome)
    }

    fn upcoming(&mut self, order: &[usize], batch: usize) {
        if let Some(p) = &mut self.prefetch {
            if self.group.is_solo() {
                p.plan(order, batch);
            } else {
                // This process reads only its part of each batch.
                let group = &self.group;
                let mine = order.chunks(batch.max(1));
                p.plan_batches(mine.map(|b| b[group.share(b.len())].to_vec()).collect());
            }
        }
    }

    fn communication_seconds(&self) -> f64 {
        self.communication
    }

    fn weight_norm_sq(&self, net: &Network) -> f64 {
        net.weight_norm_sq()
    }

    fn validate(&self, net: &Network) -> Result<Option<(f64, f64)>> {
        let Some(val) = self.val.as_ref() else {
            return Ok(None);
        };
        if !self.group.is_solo() {
            return shared::validate(&self.group, net, val).map(Some);
        }
        let logits = logits_of(net, val.x)?;
        let s = score(val.classes, logits.view(), val.targets.view(), val.labels);
        Ok(Some((
            s.cost,
            s.correct as f64 / val.labels.len().max(1) as f64,
        )))
    }

    fn network(&self, net: &Network) -> Result<Network> {
        Ok(net.clone())
    }

    fn optimizer_state(&self, _net: &Network, optimizer: &dyn Optimizer) -> Result<OptimizerState> {
        Ok(optimizer.state().clone())
    }

    fn finish(self: Box<Self>, _net: &mut Network) -> Result<()> {
        Ok(())
    }
}
