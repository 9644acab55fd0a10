//! One GPU operation per function: a kernel launch or a cuBLAS product, on device buffers,
//! with the shapes in the signature as the CPU layers state theirs. Nothing here knows of
//! networks. Every operation is queued on the GPU's one stream, so they run in order.
//!
//! Matrices are row-major, one example per row, as everywhere in deepcat; [`Gpu::matmul`]
//! hands cuBLAS (column-major) the transposed problem `Cᵀ = op(B)ᵀ·op(A)ᵀ`, which reads the
//! same memory.

use super::{Gpu, failed};
use crate::{Error, Result};
use cudarc::cublas::{Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// A device buffer of f32 values.
pub type Buf = CudaSlice<f32>;

/// Threads per block for every kernel (the reductions assume exactly this many).
const THREADS: u32 = 256;

/// Blocks for a grid-stride loop over `n` values: one per 256 values, at most 2¹⁶ (the loop
/// covers the rest).
fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of 256 threads per item: the per-channel and per-column reductions.
fn per_item(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `usize` as the kernels' `long long`.
fn ll(n: usize) -> i64 {
    n as i64
}

/// `usize` as the kernels' `int`.
fn int(n: usize) -> i32 {
    n as i32
}

/// Launches kernel `$name` of `$gpu` with `$cfg` and the arguments in order.
macro_rules! launch {
    ($gpu:expr, $name:literal, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let f = $gpu.function($name)?;
        // One expression, so the temporaries passed by reference live until the launch.
        // SAFETY: the kernel's parameters are, in order, the arguments given here, with the
        // types its .cu file declares; every buffer holds as many values as the sizes say
        // (the callers allocate them from the same sizes).
        unsafe { $gpu.stream.launch_builder(f)$(.arg($arg))+.launch($cfg) }
            .map_err(failed($name))?;
    }};
}

impl Gpu {
    /// A kernel by name.
    fn function(&self, name: &str) -> Result<&cudarc::driver::CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| Error::Device(format!("kernel {name} was not loaded")))
    }

    /// `len` zeros.
    ///
    /// # Errors
    /// [`Error::Device`] when the device is out of memory.
    pub fn zeros(&self, len: usize) -> Result<Buf> {
        self.stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(failed("allocate"))
    }

    /// A copy of `values` on the device.
    ///
    /// # Errors
    /// [`Error::Device`] when the copy fails.
    pub fn upload<T: cudarc::driver::DeviceRepr>(&self, values: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(values).map_err(failed("upload"))
    }

    /// The buffer's values on the host (waits for the work queued before).
    ///
    /// # Errors
    /// [`Error::Device`] when the copy, or any earlier operation, failed.
    pub fn download<T: cudarc::driver::DeviceRepr>(&self, buf: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(buf).map_err(failed("download"))
    }

    /// A device copy of a device buffer.
    ///
    /// # Errors
    /// [`Error::Device`] when out of memory.
    pub fn copy(&self, buf: &Buf) -> Result<Buf> {
        self.stream.clone_dtod(buf).map_err(failed("copy"))
    }

    /// `c (m, n) = op(a) · op(b) + beta · c`, row-major, fp32 (TF32 only when
    /// [`set_tf32`](Gpu::set_tf32)): `op(a)` is `(m, k)`, stored `(k, m)` when `ta`;
    /// `op(b)` is `(k, n)`, stored `(n, k)` when `tb`.
    ///
    /// # Errors
    /// [`Error::Device`] when cuBLAS fails.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        a: &Buf,
        ta: bool,
        b: &Buf,
        tb: bool,
        c: &mut Buf,
        (m, n, k): (usize, usize, usize),
        beta: f32,
    ) -> Result<()> {
        let cm = ColumnMajor::of(ta, tb, (m, n, k));
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let cfg = GemmConfig {
            transa: op(cm.trans_first),
            transb: op(cm.trans_second),
            m: int(cm.m),
            n: int(cm.n),
            k: int(cm.k),
            alpha: 1.0f32,
            lda: int(cm.ld_first),
            ldb: int(cm.ld_second),
            beta,
            ldc: int(cm.ldc),
        };
        // SAFETY: the buffers hold (k, n) or (n, k), (m, k) or (k, m) and (m, n) values, as
        // the callers allocate them from the same sizes.
        unsafe { self.blas.gemm(cfg, b, a, c) }.map_err(failed("cuBLAS sgemm"))
    }
}

/// The column-major product cuBLAS computes for the row-major `c (m, n) = op(a)·op(b)`: a
/// row-major matrix read column-major is its transpose, so it is `cᵀ = op(b)ᵀ·op(a)ᵀ`, with
/// `b`'s buffer as the first operand and `a`'s as the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ColumnMajor {
    /// Whether the first operand (`b`'s buffer) is transposed.
    trans_first: bool,
    /// Whether the second operand (`a`'s buffer) is transposed.
    trans_second: bool,
    m: usize,
    n: usize,
    k: usize,
    /// Leading dimensions of the operands and of the result, column-major.
    ld_first: usize,
    ld_second: usize,
    ldc: usize,
}

impl ColumnMajor {
    fn of(ta: bool, tb: bool, (m, n, k): (usize, usize, usize)) -> Self {
        ColumnMajor {
            trans_first: tb,
            trans_second: ta,
            m: n,
            n: m,
            k,
            ld_first: if tb { k } else { n },
            ld_second: if ta { m } else { k },
            ldc: n,
        }
    }
}

impl Gpu {
    /// `y = x / 255` for image bytes.
    ///
    /// # Errors
    /// [`Error::Device`] when the launch fails (so for every operation below).
    pub fn bytes_to_unit(&self, x: &CudaSlice<u8>) -> Result<Buf> {
        let n = x.len();
        let mut y = self.zeros(n)?;
        launch!(self, "bytes_to_unit", grid(n), x, &mut y, &ll(n));
        Ok(y)
    }

    /// `y = max(x, 0)`.
    pub fn relu(&self, x: &Buf) -> Result<Buf> {
        let n = x.len();
        let mut y = self.zeros(n)?;
        launch!(self, "relu_forward", grid(n), x, &mut y, &ll(n));
        Ok(y)
    }

    /// `dx = dy` where `y > 0`, else 0.
    pub fn relu_backward(&self, y: &Buf, dy: &Buf) -> Result<Buf> {
        let n = y.len();
        let mut dx = self.zeros(n)?;
        launch!(self, "relu_backward", grid(n), y, dy, &mut dx, &ll(n));
        Ok(dx)
    }

    /// `max(a + b, 0)`.
    pub fn add_relu(&self, a: &Buf, b: &Buf) -> Result<Buf> {
        let n = a.len();
        let mut y = self.zeros(n)?;
        launch!(self, "add_relu", grid(n), a, b, &mut y, &ll(n));
        Ok(y)
    }

    /// `a += b`.
    pub fn add_into(&self, a: &mut Buf, b: &Buf) -> Result<()> {
        let n = a.len();
        launch!(self, "add_into", grid(n), a, b, &ll(n));
        Ok(())
    }

    /// `a ⊙ b`.
    pub fn multiply(&self, a: &Buf, b: &Buf) -> Result<Buf> {
        let n = a.len();
        let mut y = self.zeros(n)?;
        launch!(self, "multiply", grid(n), a, b, &mut y, &ll(n));
        Ok(y)
    }

    /// `y (rows, cols) += bias (cols,)`.
    pub fn add_bias(&self, y: &mut Buf, bias: &Buf, rows: usize, cols: usize) -> Result<()> {
        launch!(
            self,
            "add_bias",
            grid(rows * cols),
            y,
            bias,
            &ll(rows),
            &int(cols)
        );
        Ok(())
    }

    /// `Σ_rows x (rows, cols)` → `(cols,)`: a bias gradient.
    pub fn column_sums(&self, x: &Buf, rows: usize, cols: usize) -> Result<Buf> {
        let mut s = self.zeros(cols)?;
        launch!(
            self,
            "column_sums",
            per_item(cols),
            x,
            &mut s,
            &ll(rows),
            &int(cols)
        );
        Ok(s)
    }

    /// Inverted dropout with probability `p`: `(y, mask)`, the mask 0 or `1/(1−p)` per value,
    /// drawn from `seed` and each value's position.
    pub fn dropout(&self, x: &Buf, p: f32, seed: u64) -> Result<(Buf, Buf)> {
        let n = x.len();
        let (mut y, mut mask) = (self.zeros(n)?, self.zeros(n)?);
        launch!(
            self,
            "dropout_forward",
            grid(n),
            x,
            &mut y,
            &mut mask,
            &ll(n),
            &p,
            &seed
        );
        Ok((y, mask))
    }
}

/// A batch's statistics per channel, as a training pass keeps them for backward.
pub struct Stats {
    /// The batch mean.
    pub mean: Buf,
    /// `1/√(σ²_B + ε)`, with the biased variance.
    pub inv_std: Buf,
    /// The unbiased variance, which the running variance moves towards.
    pub unbiased_var: Buf,
}

/// A batch norm's tensors on the device, `(c,)` each.
pub struct BnParams<'a> {
    /// γ, the scale.
    pub gamma: &'a Buf,
    /// β, the shift.
    pub beta: &'a Buf,
    /// The running mean (inference).
    pub running_mean: &'a Buf,
    /// The running (unbiased) variance (inference).
    pub running_var: &'a Buf,
}

impl Gpu {
    /// The batch's per-channel statistics over `rows` pixels of `c` channels.
    pub fn bn_statistics(&self, x: &Buf, rows: usize, c: usize, eps: f32) -> Result<Stats> {
        let (mut mean, mut inv_std, mut unbiased_var) =
            (self.zeros(c)?, self.zeros(c)?, self.zeros(c)?);
        launch!(
            self,
            "bn_statistics",
            per_item(c),
            x,
            &ll(rows),
            &int(c),
            &eps,
            &mut mean,
            &mut inv_std,
            &mut unbiased_var
        );
        Ok(Stats {
            mean,
            inv_std,
            unbiased_var,
        })
    }

    /// Training: `γ·(x − μ_B)/σ_B + β`.
    pub fn bn_forward(&self, x: &Buf, c: usize, p: &BnParams<'_>, s: &Stats) -> Result<Buf> {
        let n = x.len();
        let mut y = self.zeros(n)?;
        launch!(
            self,
            "bn_forward",
            grid(n),
            x,
            &mut y,
            &ll(n),
            &int(c),
            p.gamma,
            p.beta,
            &s.mean,
            &s.inv_std
        );
        Ok(y)
    }

    /// Inference: the same with the running statistics.
    pub fn bn_infer(&self, x: &Buf, c: usize, p: &BnParams<'_>, eps: f32) -> Result<Buf> {
        let n = x.len();
        let mut y = self.zeros(n)?;
        launch!(
            self,
            "bn_infer",
            grid(n),
            x,
            &mut y,
            &ll(n),
            &int(c),
            p.gamma,
            p.beta,
            p.running_mean,
            p.running_var,
            &eps
        );
        Ok(y)
    }

    /// Moves the running statistics towards the batch's by `momentum`.
    pub fn bn_running(
        &self,
        running_mean: &mut Buf,
        running_var: &mut Buf,
        s: &Stats,
        momentum: f32,
    ) -> Result<()> {
        let c = running_mean.len();
        launch!(
            self,
            "bn_running",
            grid(c),
            running_mean,
            running_var,
            &s.mean,
            &s.unbiased_var,
            &int(c),
            &momentum
        );
        Ok(())
    }

    /// Training-mode backward: `(dx, dγ, dβ)` over `rows` pixels of `c` channels.
    pub fn bn_backward(
        &self,
        x: &Buf,
        dy: &Buf,
        (rows, c): (usize, usize),
        gamma: &Buf,
        s: &Stats,
    ) -> Result<(Buf, Buf, Buf)> {
        let (mut dgamma, mut dbeta) = (self.zeros(c)?, self.zeros(c)?);
        launch!(
            self,
            "bn_backward_sums",
            per_item(c),
            x,
            dy,
            &ll(rows),
            &int(c),
            &s.mean,
            &s.inv_std,
            &mut dgamma,
            &mut dbeta
        );
        let n = x.len();
        let mut dx = self.zeros(n)?;
        let count = rows as f32;
        launch!(
            self,
            "bn_backward_dx",
            grid(n),
            x,
            dy,
            &mut dx,
            &ll(n),
            &int(c),
            gamma,
            &s.mean,
            &s.inv_std,
            &dgamma,
            &dbeta,
            &count
        );
        Ok((dx, dgamma, dbeta))
    }
}

/// A batch of channels-last images: `(batch, height, width, channels)`.
#[derive(Debug, Clone, Copy)]
pub struct Images {
    /// Images.
    pub batch: usize,
    /// Rows of pixels per image.
    pub height: usize,
    /// Pixels per row.
    pub width: usize,
    /// Values per pixel.
    pub channels: usize,
}

impl Images {
    fn len(&self) -> usize {
        self.batch * self.height * self.width * self.channels
    }
}

/// A square window: side, stride, zero padding; and the output's height and width.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Side of the square kernel.
    pub kernel: usize,
    /// Step between outputs.
    pub stride: usize,
    /// Zero rows and columns on every side.
    pub pad: usize,
    /// Output rows.
    pub out_height: usize,
    /// Output columns.
    pub out_width: usize,
}

impl Gpu {
    /// 2×2 max-pooling, stride 2: the output and, when `keep`, which input of each window
    /// held the maximum.
    pub fn maxpool(&self, x: &Buf, g: Images, keep: bool) -> Result<(Buf, Option<CudaSlice<u8>>)> {
        let n = g.batch * (g.height / 2) * (g.width / 2) * g.channels;
        let mut y = self.zeros(n)?;
        let dims = [g.batch, g.height, g.width, g.channels].map(int);
        let mut which = if keep {
            Some(
                self.stream
                    .alloc_zeros::<u8>(n.max(1))
                    .map_err(failed("allocate"))?,
            )
        } else {
            None
        };
        match which.as_mut() {
            Some(w) => launch!(
                self,
                "maxpool_forward",
                grid(n),
                x,
                &mut y,
                w,
                &dims[0],
                &dims[1],
                &dims[2],
                &dims[3]
            ),
            None => {
                let null: u64 = 0;
                launch!(
                    self,
                    "maxpool_forward",
                    grid(n),
                    x,
                    &mut y,
                    &null,
                    &dims[0],
                    &dims[1],
                    &dims[2],
                    &dims[3]
                )
            }
        }
        Ok((y, which))
    }

    /// Max-pooling's backward from the saved arg-max positions.
    pub fn maxpool_backward(&self, which: &CudaSlice<u8>, dy: &Buf, g: Images) -> Result<Buf> {
        let n = dy.len();
        let mut dx = self.zeros(g.len())?;
        let dims = [g.batch, g.height, g.width, g.channels].map(int);
        launch!(
            self,
            "maxpool_backward",
            grid(n),
            which,
            dy,
            &mut dx,
            &dims[0],
            &dims[1],
            &dims[2],
            &dims[3]
        );
        Ok(dx)
    }

    /// Global average pooling: `(batch, h·w·c)` → `(batch, c)`.
    pub fn gap(&self, x: &Buf, g: Images) -> Result<Buf> {
        let mut y = self.zeros(g.batch * g.channels)?;
        let (b, p, c) = (int(g.batch), int(g.height * g.width), int(g.channels));
        launch!(
            self,
            "gap_forward",
            grid(g.batch * g.channels),
            x,
            &mut y,
            &b,
            &p,
            &c
        );
        Ok(y)
    }

    /// Its backward: `dy (batch, c)` spread evenly over the pixels.
    pub fn gap_backward(&self, dy: &Buf, g: Images) -> Result<Buf> {
        let mut dx = self.zeros(g.len())?;
        let (b, p, c) = (int(g.batch), int(g.height * g.width), int(g.channels));
        launch!(self, "gap_backward", grid(g.len()), dy, &mut dx, &b, &p, &c);
        Ok(dx)
    }

    /// The patch matrix `(batch · out_h · out_w, k·k·c)` of images `g`.
    pub fn im2col(&self, x: &Buf, g: Images, w: Window) -> Result<Buf> {
        let n = g.batch * w.out_height * w.out_width * w.kernel * w.kernel * g.channels;
        let mut cols = self.zeros(n)?;
        let dims = [g.batch, g.height, g.width, g.channels].map(int);
        let win = [w.kernel, w.stride, w.pad, w.out_height, w.out_width].map(int);
        launch!(
            self,
            "im2col",
            grid(n),
            x,
            &mut cols,
            &dims[0],
            &dims[1],
            &dims[2],
            &dims[3],
            &win[0],
            &win[1],
            &win[2],
            &win[3],
            &win[4]
        );
        Ok(cols)
    }

    /// The adjoint of [`im2col`](Gpu::im2col): a patch-matrix gradient back onto the images.
    pub fn col2im(&self, dcols: &Buf, g: Images, w: Window) -> Result<Buf> {
        let n = g.len();
        let mut dx = self.zeros(n)?;
        let dims = [g.batch, g.height, g.width, g.channels].map(int);
        let win = [w.kernel, w.stride, w.pad, w.out_height, w.out_width].map(int);
        launch!(
            self,
            "col2im",
            grid(n),
            dcols,
            &mut dx,
            &dims[0],
            &dims[1],
            &dims[2],
            &dims[3],
            &win[0],
            &win[1],
            &win[2],
            &win[3],
            &win[4]
        );
        Ok(dx)
    }

    /// `∂cost/∂z = (p − y) / batch` for logits and targets `(batch, outputs)`: sigmoid for one
    /// output, softmax otherwise.
    pub fn head_gradient(&self, z: &Buf, y: &Buf, batch: usize, outputs: usize) -> Result<Buf> {
        let mut dz = self.zeros(batch * outputs)?;
        let (b, o) = (int(batch), int(outputs));
        launch!(self, "head_gradient", grid(batch), z, y, &mut dz, &b, &o);
        Ok(dz)
    }
}

/// One step of an optimiser for one parameter, with its state.
pub enum Update<'a> {
    /// `w −= lr·g`.
    Gd,
    /// `v = β·v + g`, `w −= lr·v`.
    Momentum {
        /// β.
        beta: f32,
        /// The velocity `v`, like the parameter.
        velocity: &'a mut Buf,
    },
    /// Adam (AdamW when `shrink < 1`), bias correction `c1`, `c2` for this step.
    Adam {
        /// β1, the first moment's decay.
        beta1: f32,
        /// β2, the second moment's decay.
        beta2: f32,
        /// ε, added to the root of the second moment.
        epsilon: f32,
        /// `1 − β1ᵗ`.
        c1: f32,
        /// `1 − β2ᵗ`.
        c2: f32,
        /// `1 − lr·weight_decay` for AdamW's decayed weights, else 1.
        shrink: f32,
        /// The first moment.
        m: &'a mut Buf,
        /// The second moment.
        v: &'a mut Buf,
    },
}

impl Gpu {
    /// `g += l2 · w`.
    pub fn add_l2(&self, g: &mut Buf, w: &Buf, l2: f32) -> Result<()> {
        let n = g.len();
        launch!(self, "add_l2", grid(n), g, w, &ll(n), &l2);
        Ok(())
    }

    /// Updates `w` from its gradient `g` at learning rate `lr`.
    pub fn update(&self, w: &mut Buf, g: &Buf, lr: f32, update: Update<'_>) -> Result<()> {
        let n = w.len();
        match update {
            Update::Gd => launch!(self, "gd_update", grid(n), w, g, &ll(n), &lr),
            Update::Momentum { beta, velocity } => {
                launch!(
                    self,
                    "momentum_update",
                    grid(n),
                    w,
                    g,
                    velocity,
                    &ll(n),
                    &beta,
                    &lr
                )
            }
            Update::Adam {
                beta1,
                beta2,
                epsilon,
                c1,
                c2,
                shrink,
                m,
                v,
            } => launch!(
                self,
                "adam_update",
                grid(n),
                w,
                g,
                m,
                v,
                &ll(n),
                &beta1,
                &beta2,
                &epsilon,
                &lr,
                &c1,
                &c2,
                &shrink
            ),
        }
        Ok(())
    }

    /// `Σ x²` in f64.
    pub fn sum_squares(&self, x: &Buf) -> Result<f64> {
        let mut out = self
            .stream
            .alloc_zeros::<f64>(1)
            .map_err(failed("allocate"))?;
        launch!(self, "sum_squares", per_item(1), x, &ll(x.len()), &mut out);
        Ok(self.download(&out)?.first().copied().unwrap_or(0.0))
    }

    /// `(x/255)·(y/255)ᵀ` for byte rows `x (p, k)`, `y (m, k)`, from exact integer sums:
    /// bit for bit the CPU's [`bytes::cross_gram`](crate::linalg::bytes::cross_gram).
    pub fn byte_gram(
        &self,
        x: &CudaSlice<u8>,
        y: &CudaSlice<u8>,
        (p, m, k): (usize, usize, usize),
    ) -> Result<Buf> {
        const TILE: usize = 16;
        let mut out = self.zeros(p * m)?;
        let cfg = LaunchConfig {
            grid_dim: (m.div_ceil(TILE) as u32, p.div_ceil(TILE) as u32, 1),
            block_dim: (TILE as u32, TILE as u32, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            "byte_gram",
            cfg,
            x,
            y,
            &mut out,
            &int(p),
            &int(m),
            &int(k)
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnMajor;

    /// BLAS's column-major `c = op(x)·op(y)` (`sgemm` with α = 1, β = 0), written out.
    fn column_major_gemm(cm: ColumnMajor, x: &[f32], y: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; cm.ldc * cm.n];
        for j in 0..cm.n {
            for i in 0..cm.m {
                let mut s = 0.0;
                for l in 0..cm.k {
                    let xv = if cm.trans_first {
                        x[l + i * cm.ld_first]
                    } else {
                        x[i + l * cm.ld_first]
                    };
                    let yv = if cm.trans_second {
                        y[j + l * cm.ld_second]
                    } else {
                        y[l + j * cm.ld_second]
                    };
                    s += xv * yv;
                }
                c[i + j * cm.ldc] = s;
            }
        }
        c
    }

    #[test]
    fn cublas_is_handed_the_transposed_problem_of_every_row_major_product() {
        let (m, n, k) = (5, 3, 4);
        let value = |i: usize| ((i * 7) % 11) as f32 - 5.0;
        let a = ndarray::Array2::from_shape_fn((m, k), |(i, j)| value(i * k + j));
        let b = ndarray::Array2::from_shape_fn((k, n), |(i, j)| value(i * n + j + 3));
        let expected = a.dot(&b);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // Each operand stored as the flag says: op(a) = a is stored transposed when `ta`.
            let a_stored = if ta {
                a.t().as_standard_layout().into_owned()
            } else {
                a.clone()
            };
            let b_stored = if tb {
                b.t().as_standard_layout().into_owned()
            } else {
                b.clone()
            };
            let cm = ColumnMajor::of(ta, tb, (m, n, k));
            let c = column_major_gemm(
                cm,
                b_stored.as_slice().unwrap(),
                a_stored.as_slice().unwrap(),
            );
            assert_eq!(c, expected.as_slice().unwrap(), "ta {ta}, tb {tb}");
        }
    }
}
