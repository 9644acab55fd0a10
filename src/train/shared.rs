//! A step shared by several processes (`mpirun`): what their parts of the batch add up to.
//!
//! Each process has the gradient of its own rows, already scaled by its share of the batch
//! (see [`forward_backward`](super::direct::forward_backward)). One all-reduce sums, in one
//! buffer: every gradient, rank 0's batch-norm running statistics (the others add zeros, so
//! every process ends with rank 0's), and a count of processes whose outputs were not finite.
//! The batch's score, when the loop wants one, is a second, small sum.

use super::engine::{Outcome, Score};
use super::{Labelled, score};
use crate::nn::Network;
use crate::parallel::{Group, fingerprint};
use crate::{Error, Result};
use ndarray::ArrayD;

/// Sums the step across `group`: `grads` become the whole batch's gradients, `net`'s
/// buffers become rank 0's, and the outcome is the whole batch's (`rows` of `whole` were
/// this process's).
pub(super) fn sum_step(
    group: &Group,
    net: &mut Network,
    grads: &mut [ArrayD<f32>],
    outcome: Outcome,
    rows: usize,
    whole: usize,
) -> Outcome {
    let grad_len: usize = grads.iter().map(ArrayD::len).sum();
    let mut buffer: Vec<f32> = Vec::with_capacity(grad_len + 1);
    for g in grads.iter() {
        buffer.extend(g.iter());
    }
    for b in net.named_buffers() {
        let root = group.is_root();
        buffer.extend(b.1.iter().map(|&v| if root { v } else { 0.0 }));
    }
    buffer.push(if outcome.finite { 0.0 } else { 1.0 });
    group.sum_f32(&mut buffer);

    let mut at = 0;
    for g in grads.iter_mut() {
        for (v, &s) in g.iter_mut().zip(&buffer[at..]) {
            *v = s;
        }
        at += g.len();
    }
    for mut b in net.buffers_mut() {
        for (v, &s) in b.iter_mut().zip(&buffer[at..]) {
            *v = s;
        }
        at += b.len();
    }
    let finite = buffer[at] == 0.0;
    let score = outcome.score.map(|s| {
        let cost = if rows == 0 { 0.0 } else { s.cost * rows as f64 };
        let mut sums = [cost, s.correct as f64];
        group.sum_f64(&mut sums);
        Score {
            cost: sums[0] / whole.max(1) as f64,
            correct: sums[1].round() as usize,
        }
    });
    Outcome { score, finite }
}

/// Steps between two comparisons of the weights across processes.
pub(super) const CHECK_EVERY: usize = 200;

/// Every [`CHECK_EVERY`] steps of a shared run, [`check_same_weights`].
///
/// # Errors
/// As [`check_same_weights`].
pub(super) fn check_now_and_then(group: &Group, net: &Network, steps: usize) -> Result<()> {
    if group.is_solo() || !steps.is_multiple_of(CHECK_EVERY) {
        return Ok(());
    }
    check_same_weights(group, net, steps)
}

/// Checks that every process holds the same weights and statistics (they apply the same
/// summed update, so they must, bit for bit).
///
/// # Errors
/// [`Error::Data`] naming the step when they differ.
fn check_same_weights(group: &Group, net: &Network, step: usize) -> Result<()> {
    let mut bytes = Vec::new();
    for (_, p) in net.named_params().iter().chain(&net.named_buffers()) {
        for v in p.iter() {
            bytes.extend(v.to_le_bytes());
        }
    }
    if group.agree(fingerprint(&bytes)) {
        Ok(())
    } else {
        Err(Error::Data(format!(
            "after step {step}, the weights on process {} of {} differ from another's: \
             the processes no longer train the same model",
            group.rank(),
            group.size()
        )))
    }
}

/// Validation cost and accuracy of `net` (the same on every process) on `val`, each process
/// scoring its share of the rows: the same figures one process gets on all of them.
///
/// # Errors
/// When streamed validation images cannot be read.
pub(super) fn validate(group: &Group, net: &Network, val: &Labelled<'_>) -> Result<(f64, f64)> {
    let (mut cost, mut correct) = (0.0, 0.0);
    val.x
        .for_each_block_in(group.share(val.labels.len()), |start, rows| {
            if rows.nrows() == 0 {
                return Ok(()); // fewer rows than processes: this one has none
            }
            let logits = net.logits(rows);
            let end = start + rows.nrows();
            let targets = val.targets.slice(ndarray::s![start..end, ..]);
            let s = score(val.classes, logits.view(), targets, &val.labels[start..end]);
            cost += s.cost * rows.nrows() as f64;
            correct += s.correct as f64;
            Ok::<(), std::io::Error>(())
        })
        .map_err(|e| Error::io("cannot read validation images from the decoded cache", e))?;
    let mut sums = [cost, correct];
    group.sum_f64(&mut sums);
    let n = val.labels.len().max(1) as f64;
    Ok((sums[0] / n, sums[1] / n))
}

/// The path a step takes when several processes share it: the direct one. The Gram path keeps
/// the whole training set's Gram matrix, which is not shared; `auto` takes the direct path
/// (the same result, computed step by step), and asking for Gram is refused with the way out.
///
/// # Errors
/// [`Error::Config`] for `--exact-path gram`, or for full-batch training of images streamed
/// from disk (which only the Gram path does), under several processes.
pub(super) fn path(
    config: &super::TrainConfig,
    path: &'static str,
    streamed: bool,
) -> Result<&'static str> {
    let group = &config.group;
    if group.is_solo() || path != "gram" {
        return Ok(path);
    }
    if config.exact_path == super::ExactPath::Gram {
        return Err(Error::Config(format!(
            "--exact-path gram cannot be shared among {} processes: drop it (the direct path \
             gives the same result), or give --batch-size N for mini-batches",
            group.size()
        )));
    }
    if streamed {
        return Err(Error::Config(
            "these images are streamed from disk, and full-batch training of streamed images \
             takes the Gram path, which cannot be shared among processes: give --batch-size N \
             (smaller than the training set)"
                .into(),
        ));
    }
    Ok("direct")
}
