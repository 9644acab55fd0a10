//! Training on the GPU: an [`Engine`] whose weights, gradients and optimiser state live on
//! the device.
//!
//! Each step uploads the batch's image bytes (or, with augmentation, its augmented values;
//! full-batch training uploads the whole set once and keeps it), runs the device network's
//! training pass, downloads only the logits (a few values per image: the loop's score and
//! finiteness check read them, with the CPU's own [`outcome`]), and computes the fused head
//! gradient, the backward pass and the optimiser's update on the device. The host network is left as it was at the start: [`Engine::network`] and
//! [`Engine::finish`] copy the weights back, as the engine trait allows.
//!
//! The optimiser is the loop's choice ([`OptimizerConfig`]), run by the kernels of
//! `optim.cu` with the same formulas as [`crate::optim`]; its state starts from the host
//! optimiser's (a resumed run) and comes back in [`Engine::optimizer_state`].

use super::Gpu;
use super::net::{self, DeviceNet, Tensor, upload_rows};
use super::ops::{Buf, Update};
use crate::data::Images;
use crate::data::augment::Augment;
use crate::nn::{Network, Rows};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerState};
use crate::train::engine::{Engine, Outcome};
use crate::train::{Labelled, is_whole, outcome, score};
use crate::{Error, Result, Rng};
use ndarray::{Array2, ArrayView2, Axis, CowArray, Ix2, concatenate};
use std::sync::Arc;

/// The optimiser's memory on the device.
struct DeviceOptimizer {
    config: OptimizerConfig,
    /// Steps taken (Adam's bias correction).
    step: u64,
    /// `slots[p][k]`: slot `k` of parameter `p`, laid out like the parameter; empty until the
    /// first step of a fresh run.
    slots: Vec<Vec<Tensor>>,
    /// Which parameters are weights (L2 and AdamW's decay apply).
    decay: Vec<bool>,
}

/// The CUDA engine, borrowing the training (and validation) data.
pub struct CudaEngine<'a> {
    gpu: Arc<Gpu>,
    net: DeviceNet,
    train: Labelled<'a>,
    val: Option<Labelled<'a>>,
    augment: Augment,
    image_size: usize,
    optimizer: DeviceOptimizer,
    /// Full-batch training's input, uploaded at the first step and kept: the whole training
    /// set, the same at every step.
    resident: Option<Buf>,
}

impl<'a> CudaEngine<'a> {
    /// An engine training a device copy of `net` with `optimizer`'s kind and state on
    /// `train`, validating on `val`, augmenting `image_size`-square images; cuBLAS uses TF32
    /// tensor cores when `tf32`.
    ///
    /// # Errors
    /// [`Error::Config`] when no GPU can be used; [`Error::Device`] when the copies fail.
    pub fn new(
        net: &Network,
        optimizer: &dyn Optimizer,
        train: Labelled<'a>,
        val: Option<Labelled<'a>>,
        (augment, image_size): (Augment, usize),
        tf32: bool,
    ) -> Result<Self> {
        let gpu = Gpu::shared()?;
        gpu.set_tf32(tf32)?;
        let device_net = DeviceNet::new(&gpu, net)?;
        let state = optimizer.state();
        let params = device_net.params();
        let mut slots = Vec::new();
        if state.slots.len() == params.len() {
            for (p, saved) in params.iter().zip(&state.slots) {
                let up: Result<Vec<Tensor>> = saved
                    .iter()
                    .map(|s| p.upload_like(&gpu, s.view()))
                    .collect();
                slots.push(up?);
            }
        }
        let optimizer = DeviceOptimizer {
            config: optimizer.config(),
            step: state.step,
            slots,
            decay: net.decay_mask(),
        };
        Ok(CudaEngine {
            gpu,
            net: device_net,
            train,
            val,
            augment,
            image_size,
            optimizer,
            resident: None,
        })
    }

    /// The batch's input on the device: its bytes, scaled there; or, with augmentation, its
    /// values augmented on the host (the CPU's augmentation, from the same generator).
    fn batch_input(&self, batch: &[usize], rng: &mut Rng) -> Result<Buf> {
        let read = |e| Error::io("cannot read a batch of training images", e);
        let bytes: CowArray<'_, u8, Ix2> = match self.train.x.in_memory() {
            Some(x) if is_whole(batch, x.nrows()) => CowArray::from(x),
            _ => CowArray::from(self.train.x.select(batch).map_err(read)?),
        };
        if !self.augment.is_on() {
            return upload_rows(&self.gpu, Rows::Bytes(bytes.view()));
        }
        let all: Vec<usize> = (0..batch.len()).collect();
        let mut values = Rows::Bytes(bytes.view()).select(&all);
        self.augment.apply(&mut values, self.image_size, rng);
        upload_rows(&self.gpu, Rows::Values(values.view()))
    }

    /// One optimiser step on every parameter from its gradient.
    fn update(&mut self, grads: &[Buf], lr: f32) -> Result<()> {
        let gpu = &*self.gpu;
        let opt = &mut self.optimizer;
        opt.step += 1;
        let mut params = self.net.params_mut();
        let slots_per_param = match opt.config {
            OptimizerConfig::Gd => 0,
            OptimizerConfig::Momentum { .. } => 1,
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => 2,
        };
        if opt.slots.len() != params.len() {
            opt.slots = params
                .iter()
                .map(|p| (0..slots_per_param).map(|_| p.zeros_like(gpu)).collect())
                .collect::<Result<_>>()?;
        }
        let t = opt.step as f64;
        for (i, ((p, g), slots)) in params.iter_mut().zip(grads).zip(&mut opt.slots).enumerate() {
            let decayed = opt.decay.get(i).copied().unwrap_or(false);
            let update = match (opt.config, slots.as_mut_slice()) {
                (OptimizerConfig::Gd, _) => Update::Gd,
                (OptimizerConfig::Momentum { beta }, [velocity]) => Update::Momentum {
                    beta,
                    velocity: &mut velocity.buf,
                },
                (
                    OptimizerConfig::Adam {
                        beta1,
                        beta2,
                        epsilon,
                    },
                    [m, v],
                ) => adam(beta1, beta2, epsilon, t, 1.0, m, v),
                (
                    OptimizerConfig::AdamW {
                        beta1,
                        beta2,
                        epsilon,
                        weight_decay,
                    },
                    [m, v],
                ) => {
                    let shrink = if decayed {
                        1.0 - lr * weight_decay
                    } else {
                        1.0
                    };
                    adam(beta1, beta2, epsilon, t, shrink, m, v)
                }
                _ => return Err(Error::Device("optimiser state of the wrong kind".into())),
            };
            gpu.update(&mut p.buf, g, lr, update)?;
        }
        Ok(())
    }

    /// Logits of every row of `images`, block by block when streamed.
    fn logits_of(&self, images: Images<'_>) -> Result<Array2<f32>> {
        let (mut parts, mut failure) = (Vec::new(), None);
        images
            .for_each_block(|_, rows| {
                match net::logits(&self.gpu, &self.net, Rows::Bytes(rows)) {
                    Ok(p) => parts.push(p),
                    Err(e) => failure = failure.take().or(Some(e)),
                }
                Ok::<(), std::io::Error>(())
            })
            .map_err(|e| Error::io("cannot read the validation images", e))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let views: Vec<ArrayView2<'_, f32>> = parts.iter().map(|p| p.view()).collect();
        concatenate(Axis(0), &views).map_err(|e| Error::Device(format!("logits: {e}")))
    }
}

/// Adam's update with the bias corrections for step `t`, as [`crate::optim::Adam`] computes
/// them (in f64, rounded to f32).
fn adam<'s>(
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    t: f64,
    shrink: f32,
    m: &'s mut Tensor,
    v: &'s mut Tensor,
) -> Update<'s> {
    Update::Adam {
        beta1,
        beta2,
        epsilon,
        c1: (1.0 - f64::from(beta1).powf(t)) as f32,
        c2: (1.0 - f64::from(beta2).powf(t)) as f32,
        shrink,
        m: &mut m.buf,
        v: &mut v.buf,
    }
}

impl Engine for CudaEngine<'_> {
    fn step(
        &mut self,
        _net: &mut Network,
        _optimizer: &mut dyn Optimizer,
        batch: &[usize],
        learning_rate: f32,
        l2: f32,
        want_score: bool,
        rng: &mut Rng,
    ) -> Result<Outcome> {
        let gpu = Arc::clone(&self.gpu);
        let n = batch.len();
        let whole = !self.augment.is_on()
            && (self.train.x.in_memory()).is_some_and(|x| is_whole(batch, x.nrows()));
        let x = match self.resident.take() {
            Some(x) if whole => x,
            _ => self.batch_input(batch, rng)?,
        };
        let targets = self.train.targets.select(Axis(0), batch);
        let target_buf = upload_rows(&gpu, Rows::Values(targets.view()))?;
        let labels: Vec<usize> = batch.iter().map(|&i| self.train.labels[i]).collect();

        let steps = self.net.forward(&gpu, &x, n, rng)?;
        let last = steps
            .last()
            .ok_or_else(|| Error::Device("a network without layers".into()))?;
        let outputs = self.net.outputs();
        let logits = Array2::from_shape_vec((n, outputs), gpu.download(&last.y)?)
            .map_err(|e| Error::Device(format!("logits: {e}")))?;
        let scored = outcome(
            self.train.classes,
            logits.view(),
            targets.view(),
            &labels,
            want_score,
        );
        let dlogits = gpu.head_gradient(&last.y, &target_buf, n, outputs)?;
        let mut grads = self.net.backward(&gpu, &x, &steps, dlogits, n)?;
        self.net.absorb(&gpu, &steps)?;
        drop(steps);
        if l2 > 0.0 {
            let params = self.net.params();
            for ((g, p), &decayed) in grads.iter_mut().zip(params).zip(&self.optimizer.decay) {
                if decayed {
                    gpu.add_l2(g, &p.buf, l2)?;
                }
            }
        }
        self.update(&grads, learning_rate)?;
        if whole {
            self.resident = Some(x);
        }
        Ok(scored)
    }

    fn weight_norm_sq(&self, _net: &Network) -> f64 {
        let mut total = 0.0;
        for (p, &decayed) in self.net.params().into_iter().zip(&self.optimizer.decay) {
            if decayed {
                // A failure here shows again, as an error, at the next step.
                total += self.gpu.sum_squares(&p.buf).unwrap_or(f64::NAN);
            }
        }
        total
    }

    fn validate(&self, _net: &Network) -> Result<Option<(f64, f64)>> {
        let Some(val) = self.val.as_ref() else {
            return Ok(None);
        };
        let logits = self.logits_of(val.x)?;
        let s = score(val.classes, logits.view(), val.targets.view(), val.labels);
        Ok(Some((
            s.cost,
            s.correct as f64 / val.labels.len().max(1) as f64,
        )))
    }

    fn network(&self, net: &Network) -> Result<Network> {
        let mut copy = net.clone();
        self.net.write_to(&self.gpu, &mut copy)?;
        Ok(copy)
    }

    fn optimizer_state(
        &self,
        _net: &Network,
        _optimizer: &dyn Optimizer,
    ) -> Result<OptimizerState> {
        let slots = self
            .optimizer
            .slots
            .iter()
            .map(|slots| slots.iter().map(|s| s.download(&self.gpu)).collect())
            .collect::<Result<_>>()?;
        Ok(OptimizerState {
            step: self.optimizer.step,
            slots,
        })
    }

    fn finish(self: Box<Self>, net: &mut Network) -> Result<()> {
        self.net.write_to(&self.gpu, net)
    }
}
