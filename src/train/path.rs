//! Which way the first layer is computed: the direct path or the exact Gram reformulation,
//! and why.

use super::{ExactPath, TrainConfig};
use crate::nn::Network;
use crate::optim::Optimizer;
use crate::{Error, Result};

/// Multiply-adds of each path, for `auto`. Direct: forward and weight gradient of the first
/// layer each step. Gram: `G` (half, it is symmetric), `P0`, the final `W1`, validation
/// products, then `batch·m·h` per step.
#[allow(clippy::too_many_arguments)]
pub(super) fn choose_path(
    config: &TrainConfig,
    optimizer: &dyn Optimizer,
    net: &Network,
    m: usize,
    val_m: usize,
    batch: usize,
    steps: usize,
    streamed: bool,
) -> Result<&'static str> {
    // The GPU computes every layer every step (its engine has no Gram form yet).
    if !config.device.is_cpu() {
        return Ok("direct");
    }
    let n = net.input_units() as f64;
    let first = super::gram::first_dense(net);
    let h = first.map_or(1, |(d, _)| d.weight.nrows()) as f64;
    let (mf, bf, sf, vf) = (m as f64, batch as f64, steps as f64, val_m as f64);
    let why_not = if !optimizer.is_linear() {
        Some(format!(
            "the {} optimiser is not linear",
            optimizer.config().name()
        ))
    } else if config.augment.is_on() {
        Some("augmentation changes the images every epoch".to_string())
    } else if first.is_none() {
        Some("the first layer is not dense".to_string())
    } else if first.is_some_and(|(_, rest)| rest.is_empty()) {
        Some("the network has no hidden layer".to_string())
    } else if !optimizer.state().slots.is_empty() {
        Some("resumed optimiser state lives in weight space".to_string())
    } else if mf * mf * 4.0 > GRAM_MAX_BYTES {
        Some(format!(
            "the {m}×{m} Gram matrix would need more than {} GiB",
            GRAM_MAX_BYTES / (1u64 << 30) as f64
        ))
    } else {
        None
    };
    let gram_cost = mf * mf * n / 2.0 + 2.0 * mf * n * h + vf * mf * n + sf * bf * mf * h;
    let direct_cost = sf * 2.0 * bf * n * h;
    // Images on disk are read by the direct path a batch at a time; the whole set at every
    // step would be reading it all again each step, so full-batch training takes the Gram
    // path, which reads it a few times in all.
    if streamed && batch >= m {
        return match why_not {
            None if config.exact_path != ExactPath::Direct => Ok("gram"),
            None => Err(Error::Config(
                "full-batch training on images streamed from disk takes the Gram path; drop \
                 --exact-path direct, or give --batch-size to stream mini-batches"
                    .into(),
            )),
            Some(reason) => Err(Error::Config(format!(
                "the images do not fit in memory, so they are streamed from disk, and \
                 full-batch training of streamed images needs the Gram path, which cannot \
                 apply: {reason}; give --batch-size N to train on mini-batches"
            ))),
        };
    }
    match (config.exact_path, why_not) {
        (ExactPath::Direct, _) => Ok("direct"),
        (ExactPath::Gram, Some(reason)) => Err(Error::Config(format!(
            "--exact-path gram cannot apply: {reason}"
        ))),
        (ExactPath::Gram, None) => Ok("gram"),
        (ExactPath::Auto, Some(_)) => Ok("direct"),
        (ExactPath::Auto, None) => Ok(if gram_cost < direct_cost {
            "gram"
        } else {
            "direct"
        }),
    }
}

/// The largest Gram matrix `auto` and `gram` will build.
const GRAM_MAX_BYTES: f64 = 4.0 * (1u64 << 30) as f64;
