//! Batch normalisation (Ioffe & Szegedy), per channel: after a conv layer the statistics are
//! taken over every pixel of every image in the batch, after a dense layer (a `1 × 1 × units`
//! geometry) over the batch, unit by unit.
//!
//! Training: `x̂ = (x − μ_B) / √(σ²_B + ε)`, `y = γ·x̂ + β`, with the batch's mean and (biased)
//! variance; the pass saves `μ_B` and `1/√(σ²_B + ε)` for backward, as llm.c's layernorm saves
//! its mean and reciprocal deviation. The running mean and variance move towards the batch's
//! (`r ← (1 − m)·r + m·batch`, momentum `m` = 0.1 and the unbiased variance, as PyTorch) when
//! the training loop hands the pass back ([`Layer::absorb`]). Inference uses the running
//! statistics.
//!
//! Sums over the batch are taken image by image in parallel and added up in image order (in
//! f64), so results do not depend on the thread count.

use super::layer::{Backward, BoxedLayer, Buffer, Layer, Mode, Param};
use super::spec::{Draw, Kind, LayerSpec, TensorShapes};
use super::{Geometry, recycle, standard};
use crate::parallel::Group;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMutD, Axis, Zip};
use rayon::prelude::*;

/// Batch norm's settings (none): `bn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNormSpec {}

impl Kind for BatchNormSpec {
    const NAME: &'static str = "batchnorm";

    fn token(&self) -> String {
        "bn".into()
    }

    fn output(&self, input: Geometry) -> Result<Geometry, String> {
        Ok(input)
    }

    fn tensors(&self, input: Geometry) -> TensorShapes {
        let c = vec![input.channels];
        let mut t = TensorShapes::params(&[("weight", c.clone()), ("bias", c.clone())]);
        t.buffers = vec![
            ("running_mean".into(), c.clone()),
            ("running_var".into(), c),
        ];
        t
    }

    fn build(&self, input: Geometry, _draw: &mut Draw<'_>) -> BoxedLayer {
        Box::new(BatchNorm::new(input))
    }

    fn parse(token: &str) -> Option<Result<Vec<LayerSpec>, String>> {
        matches!(token, "bn" | "batchnorm")
            .then(|| Ok(vec![LayerSpec::BatchNorm(BatchNormSpec {})]))
    }
}

/// PyTorch's default ε.
pub const EPSILON: f32 = 1e-5;
/// PyTorch's default momentum of the running statistics.
pub const MOMENTUM: f32 = 0.1;

/// Batch normalisation over the channels of `input`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// γ, `(channels,)`; starts at 1.
    pub gamma: Array1<f32>,
    /// β, `(channels,)`; starts at 0.
    pub beta: Array1<f32>,
    /// Running mean, `(channels,)`; starts at 0.
    pub running_mean: Array1<f32>,
    /// Running (unbiased) variance, `(channels,)`; starts at 1.
    pub running_var: Array1<f32>,
    input: Geometry,
}

/// What a training pass keeps, per channel: the batch's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// The batch mean `μ_B`.
    pub mean: Vec<f32>,
    /// `1/√(σ²_B + ε)`, with the batch's biased variance.
    pub inv_std: Vec<f32>,
    /// The batch's unbiased variance, which the running variance moves towards.
    pub unbiased_var: Vec<f32>,
    /// Values per channel the statistics cover: the whole shared batch's when synchronised.
    pub count: f64,
    /// The processes that shared the batch (`--sync-bn`): backward sums its gradient sums
    /// across them too.
    pub synced: Option<Group>,
}

impl BatchNorm {
    /// A fresh layer over `input`'s channels: γ = 1, β = 0, running statistics 0 and 1.
    pub fn new(input: Geometry) -> Self {
        let c = input.channels;
        BatchNorm {
            gamma: Array1::ones(c),
            beta: Array1::zeros(c),
            running_mean: Array1::zeros(c),
            running_var: Array1::ones(c),
            input,
        }
    }

    /// The input (and output) geometry.
    pub fn input(&self) -> Geometry {
        self.input
    }

    /// Per-channel mean and (biased) variance over every pixel of every image. Each image is
    /// done in two passes while it is in cache (its mean, then the squared deviations from
    /// it), and the images are combined in order in f64 (Chan, Golub and LeVeque's pairwise
    /// update), so a large mean against a small spread loses nothing.
    fn batch_statistics(&self, x: ArrayView2<'_, f32>) -> (Vec<f64>, Vec<f64>) {
        let (c, pixels) = (self.input.channels, self.input.pixels());
        let per_image: Vec<(Vec<f32>, Vec<f32>)> = x
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|row| {
                let row = row.to_slice().unwrap_or_default(); // standard layout: contiguous
                let mut mean = vec![0.0f32; c];
                for px in row.chunks_exact(c) {
                    mean.iter_mut().zip(px).for_each(|(s, &v)| *s += v);
                }
                mean.iter_mut().for_each(|s| *s /= pixels as f32);
                let mut m2 = vec![0.0f32; c];
                for px in row.chunks_exact(c) {
                    for ((q, &v), &m) in m2.iter_mut().zip(px).zip(&mean) {
                        *q += (v - m) * (v - m);
                    }
                }
                (mean, m2)
            })
            .collect();
        let (mut n, mut mean, mut m2) = (0.0f64, vec![0.0f64; c], vec![0.0f64; c]);
        let nb = pixels as f64;
        for (image_mean, image_m2) in per_image {
            let total = n + nb;
            for ch in 0..c {
                let delta = f64::from(image_mean[ch]) - mean[ch];
                mean[ch] += delta * nb / total;
                m2[ch] += f64::from(image_m2[ch]) + delta * delta * n * nb / total;
            }
            n = total;
        }
        let var = m2.iter().map(|q| q / n.max(1.0)).collect();
        (mean, var)
    }

    /// `(Σ dy, Σ dy·(x − mean))` per channel over every pixel of every image: each image in
    /// f32, the images added in order in f64.
    fn gradient_sums(
        &self,
        x: ArrayView2<'_, f32>,
        dy: ArrayView2<'_, f32>,
        mean: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let c = self.input.channels;
        let per_image: Vec<(Vec<f32>, Vec<f32>)> = x
            .axis_iter(Axis(0))
            .into_par_iter()
            .zip(dy.axis_iter(Axis(0)).into_par_iter())
            .map(|(x, dy)| {
                let (x, dy) = (
                    x.to_slice().unwrap_or_default(),
                    dy.to_slice().unwrap_or_default(),
                );
                let (mut s1, mut s2) = (vec![0.0f32; c], vec![0.0f32; c]);
                for (px, pd) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
                    for ((((a, b), &x), &d), &m) in
                        s1.iter_mut().zip(s2.iter_mut()).zip(px).zip(pd).zip(mean)
                    {
                        *a += d;
                        *b += d * (x - m);
                    }
                }
                (s1, s2)
            })
            .collect();
        let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
        for (a, b) in per_image {
            s1.iter_mut().zip(a).for_each(|(t, v)| *t += f64::from(v));
            s2.iter_mut().zip(b).for_each(|(t, v)| *t += f64::from(v));
        }
        (s1, s2)
    }

    /// `y = x·scale + shift`, channel by channel, in parallel over images.
    fn affine(&self, x: ArrayView2<'_, f32>, scale: &[f32], shift: &[f32]) -> Array2<f32> {
        let c = self.input.channels;
        let mut y = recycle::scratch(x.dim());
        Zip::from(y.rows_mut())
            .and(x.rows())
            .par_for_each(|mut y, x| {
                let (Some(y), Some(x)) = (y.as_slice_mut(), x.to_slice()) else {
                    return; // rows of standard-layout arrays are contiguous
                };
                for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for (((y, &x), &a), &b) in y.iter_mut().zip(x).zip(scale).zip(shift) {
                        *y = x * a + b;
                    }
                }
            });
        y
    }

    /// Values per channel in a batch of `batch` examples.
    fn count(&self, batch: usize) -> f64 {
        (batch * self.input.pixels()) as f64
    }
}

/// The means of `dy` and `dy·x̂` per channel over the batch a training pass saw (`Σ dy` and
/// `Σ dy·x̂` given). Synchronised, the means are over the whole shared batch, while dγ and dβ
/// stay this process's own sums (the step sums every gradient across the processes
/// afterwards).
fn gradient_means(stats: &BatchStats, sum_dy: &[f64], sum_dy_xhat: &[f64]) -> (Vec<f32>, Vec<f32>) {
    let c = sum_dy.len();
    let mut both: Vec<f64> = sum_dy.iter().chain(sum_dy_xhat).copied().collect();
    if let Some(group) = &stats.synced {
        group.sum_f64(&mut both);
    }
    let n = stats.count;
    let mean = |s: &[f64]| s.iter().map(|d| (d / n) as f32).collect();
    (mean(&both[..c]), mean(&both[c..]))
}

/// The mean and (biased) variance over the whole batch `group`'s processes share, from this
/// process's `n` values per channel with mean `mean` and variance `var`: two sums, first of
/// the counts and totals, then of the squared deviations from the shared mean (exact in f64
/// however the batch is divided).
fn shared_statistics(
    group: &Group,
    n: f64,
    mean: &[f64],
    var: &[f64],
) -> (f64, Vec<f64>, Vec<f64>) {
    let c = mean.len();
    let mut totals: Vec<f64> = mean.iter().map(|m| m * n).chain([n]).collect();
    group.sum_f64(&mut totals);
    let all = totals[c];
    let shared_mean: Vec<f64> = totals[..c].iter().map(|t| t / all.max(1.0)).collect();
    let mut m2: Vec<f64> = (0..c)
        .map(|ch| var[ch] * n + n * (mean[ch] - shared_mean[ch]).powi(2))
        .collect();
    group.sum_f64(&mut m2);
    let shared_var = m2.iter().map(|q| q / all.max(1.0)).collect();
    (all, shared_mean, shared_var)
}

impl Layer for BatchNorm {
    /// The batch's statistics in training; nothing at inference.
    type Saved = Option<BatchStats>;

    fn spec(&self) -> LayerSpec {
        LayerSpec::BatchNorm(BatchNormSpec {})
    }

    fn output(&self) -> Geometry {
        self.input
    }

    /// `x (batch, h·w·c)` → `y` of the same shape. Training: batch statistics, saved
    /// as [`BatchStats`]. Inference: running statistics.
    fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        mode: &mut Mode<'_>,
    ) -> (Array2<f32>, Option<BatchStats>) {
        assert_eq!(
            x.ncols(),
            self.input.len(),
            "batch norm expects {}",
            self.input
        );
        let x = x.as_standard_layout();
        let c = self.input.channels;
        let (mean, var, saved) = match mode {
            Mode::Infer => (self.running_mean.to_vec(), self.running_var.to_vec(), None),
            Mode::Train(_) | Mode::TrainSynced(..) => {
                let synced = mode.synced().cloned();
                let mut n = self.count(x.nrows());
                let (mut mean, mut var) = self.batch_statistics(x.view());
                if let Some(group) = &synced {
                    (n, mean, var) = shared_statistics(group, n, &mean, &var);
                }
                let stats = BatchStats {
                    mean: mean.iter().map(|&m| m as f32).collect(),
                    inv_std: var
                        .iter()
                        .map(|v| (1.0 / (v + f64::from(EPSILON)).sqrt()) as f32)
                        .collect(),
                    unbiased_var: var
                        .iter()
                        .map(|&v| (if n > 1.0 { v * n / (n - 1.0) } else { v }) as f32)
                        .collect(),
                    count: n,
                    synced,
                };
                let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
                (to32(mean), to32(var), Some(stats))
            }
        };
        let scale: Vec<f32> = (0..c)
            .map(|ch| self.gamma[ch] / (var[ch] + EPSILON).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|ch| self.beta[ch] - mean[ch] * scale[ch])
            .collect();
        (self.affine(x.view(), &scale, &shift), saved)
    }

    /// `dγ = Σ dy·x̂`, `dβ = Σ dy`; training-mode `dx = γ/σ · (dy − dβ/N − x̂·dγ/N)` over the
    /// `N` values of each channel (the statistics depend on `x` too); after an inference pass,
    /// `dx = γ/σ · dy`.
    fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        _y: ArrayView2<'_, f32>,
        saved: &Option<BatchStats>,
        dy: Array2<f32>,
        _need_dx: bool,
    ) -> Backward {
        let c = self.input.channels;
        let x = x.as_standard_layout();
        let dy = standard(dy);
        let (mean, inv_std): (Vec<f32>, Vec<f32>) = match saved {
            Some(s) => (s.mean.clone(), s.inv_std.clone()),
            None => (
                self.running_mean.to_vec(),
                self.running_var
                    .iter()
                    .map(|v| 1.0 / (v + EPSILON).sqrt())
                    .collect(),
            ),
        };
        let (dbeta, dy_dev) = self.gradient_sums(x.view(), dy.view(), &mean);
        let dgamma: Vec<f64> = dy_dev
            .iter()
            .zip(&inv_std)
            .map(|(s, &i)| s * f64::from(i))
            .collect();
        let scale: Vec<f32> = (0..c).map(|ch| self.gamma[ch] * inv_std[ch]).collect();
        let (mean_dy, mean_dy_xhat) = match saved {
            Some(stats) => gradient_means(stats, &dbeta, &dgamma),
            None => (vec![0.0; c], vec![0.0; c]),
        };
        // dx = scale·(dy − mean_dy − x̂·mean_dy_x̂) with x̂ = (x − mean)·inv_std, written
        // as dx = scale·dy + x·k + m per channel.
        let k: Vec<f32> = (0..c)
            .map(|ch| -scale[ch] * inv_std[ch] * mean_dy_xhat[ch])
            .collect();
        let m: Vec<f32> = (0..c)
            .map(|ch| -scale[ch] * (mean_dy[ch] - mean[ch] * inv_std[ch] * mean_dy_xhat[ch]))
            .collect();
        let mut dx = recycle::scratch(x.dim());
        Zip::from(dx.rows_mut())
            .and(x.rows())
            .and(dy.rows())
            .par_for_each(|mut dx, x, dy| {
                let (Some(dx), Some(x), Some(dy)) =
                    (dx.as_slice_mut(), x.to_slice(), dy.to_slice())
                else {
                    return; // rows of standard-layout arrays are contiguous
                };
                for ((dx, x), dy) in dx
                    .chunks_exact_mut(c)
                    .zip(x.chunks_exact(c))
                    .zip(dy.chunks_exact(c))
                {
                    // Zipped, not indexed: no bounds checks, so the loop vectorises.
                    let per_channel = scale.iter().zip(&k).zip(&m);
                    for (((dx, &x), &dy), ((&s, &k), &m)) in
                        dx.iter_mut().zip(x).zip(dy).zip(per_channel)
                    {
                        *dx = s * dy + x * k + m;
                    }
                }
            });
        recycle::give(dy);
        let to32 = |v: Vec<f64>| Array1::from_iter(v.into_iter().map(|v| v as f32)).into_dyn();
        Backward {
            dx: Some(dx),
            grads: vec![to32(dgamma), to32(dbeta)],
        }
    }

    fn params(&self) -> Vec<Param<'_>> {
        vec![
            Param::other("weight", self.gamma.view().into_dyn()),
            Param::other("bias", self.beta.view().into_dyn()),
        ]
    }

    fn params_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        vec![
            self.gamma.view_mut().into_dyn(),
            self.beta.view_mut().into_dyn(),
        ]
    }

    fn buffers(&self) -> Vec<Buffer<'_>> {
        vec![
            ("running_mean".into(), self.running_mean.view().into_dyn()),
            ("running_var".into(), self.running_var.view().into_dyn()),
        ]
    }

    fn buffers_mut(&mut self) -> Vec<ArrayViewMutD<'_, f32>> {
        vec![
            self.running_mean.view_mut().into_dyn(),
            self.running_var.view_mut().into_dyn(),
        ]
    }

    /// Moves the running statistics towards the batch's, from a training pass's statistics.
    fn absorb(&mut self, saved: &Option<BatchStats>) {
        let Some(s) = saved else { return };
        let m = MOMENTUM;
        for (r, &b) in self.running_mean.iter_mut().zip(&s.mean) {
            *r = (1.0 - m) * *r + m * b;
        }
        for (r, &b) in self.running_var.iter_mut().zip(&s.unbiased_var) {
            *r = (1.0 - m) * *r + m * b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use approx::assert_abs_diff_eq;
    use ndarray::array;
    use rand::SeedableRng;

    #[test]
    fn training_normalises_each_channel_over_pixels_and_images() {
        // Two images of 2 pixels × 2 channels: channel 0 holds 1 2 3 4, channel 1 holds 10s.
        let bn = BatchNorm::new(Geometry::new(1, 2, 2));
        let x = array![[1.0f32, 10.0, 2.0, 10.0], [3.0, 10.0, 4.0, 10.0]];
        let mut rng = Rng::seed_from_u64(1);
        let (y, saved) = bn.forward(x.view(), &mut Mode::Train(&mut rng));
        let saved = saved.unwrap();
        assert_eq!(saved.mean, vec![2.5, 10.0]);
        // Biased variance 1.25 normalises; the unbiased 5/3 is what the running average gets.
        assert_abs_diff_eq!(saved.unbiased_var[0], 5.0 / 3.0, epsilon = 1e-6);
        let expected = (1.0 - 2.5) / (1.25f32 + EPSILON).sqrt();
        assert_abs_diff_eq!(y[[0, 0]], expected, epsilon = 1e-6);
        assert_eq!(y[[1, 1]], 0.0);
    }

    #[test]
    fn inference_uses_the_running_statistics_not_the_batchs() {
        let mut bn = BatchNorm::new(Geometry::flat(2));
        bn.running_mean = array![1.0, -2.0];
        bn.running_var = array![4.0, 0.25];
        bn.gamma = array![2.0, 1.0];
        bn.beta = array![0.5, 0.0];
        let x = array![[3.0f32, -1.0], [5.0, -3.0]];
        let (y, saved) = bn.forward(x.view(), &mut Mode::Infer);
        assert!(saved.is_none());
        let sd = |v: f32| (v + EPSILON).sqrt();
        assert_abs_diff_eq!(y[[0, 0]], 2.0 * (3.0 - 1.0) / sd(4.0) + 0.5, epsilon = 1e-6);
        assert_abs_diff_eq!(y[[1, 1]], (-3.0 + 2.0) / sd(0.25), epsilon = 1e-6);
        // The batch's own statistics (mean 4 and -2) would give other values.
        let mut rng = Rng::seed_from_u64(1);
        let (train_y, _) = bn.forward(x.view(), &mut Mode::Train(&mut rng));
        assert!((train_y[[0, 0]] - y[[0, 0]]).abs() > 0.1);
    }

    #[test]
    fn absorbing_a_pass_moves_the_running_statistics_by_the_momentum() {
        let mut bn = BatchNorm::new(Geometry::flat(1));
        let x = array![[1.0f32], [3.0]];
        let mut rng = Rng::seed_from_u64(1);
        let (_, saved) = bn.forward(x.view(), &mut Mode::Train(&mut rng));
        bn.absorb(&saved);
        // Batch mean 2, unbiased variance 2.
        assert_abs_diff_eq!(bn.running_mean[0], 0.1 * 2.0, epsilon = 1e-6);
        assert_abs_diff_eq!(bn.running_var[0], 0.9 + 0.1 * 2.0, epsilon = 1e-6);
    }
}
