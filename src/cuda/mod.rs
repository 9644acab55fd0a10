//! The CUDA backend (`--features cuda`): deepcat's networks on an NVIDIA GPU.
//!
//! What it is: the same layers as [`crate::nn`], computed by hand-written CUDA C kernels
//! ([`kernels`], compiled at run time by NVRTC for the GPU found) and by cuBLAS's fp32 matrix
//! products (TF32 tensor cores only when asked). No cuDNN. The CUDA libraries are loaded when
//! first needed, not linked, so a build with the feature runs anywhere; [`Gpu::open`] checks
//! that the driver, NVRTC and cuBLAS can be loaded and a GPU is present before touching them
//! (cudarc panics on a missing library), and says what is missing as
//! [`Error::Config`](crate::Error::Config).
//!
//! The rooms: [`ops`] launches one kernel or product each and knows nothing of networks;
//! [`net`] is a [`Network`](crate::nn::Network) copied to the device, walked layer by layer
//! through each layer's [`spec`](crate::nn::AnyLayer::spec), parameters, buffers and
//! children, with a forward and a backward pass side by side; [`engine`] trains it (weights,
//! gradients and optimiser state stay on the device; one batch of image bytes goes up per
//! step; the weights come back to the host only when asked); [`Inference`] is its inference
//! pass behind [`crate::device::Forward`], for predict, evaluate, report and serve.
//!
//! What it is not: a bit-for-bit copy of the CPU. Sums run in other orders (cuBLAS's tiles,
//! tree reductions), so results agree with the CPU's to rounding (the tests hold layers to
//! 1e-4 relative). Every kernel is deterministic (no atomics), so a run repeats itself on the
//! same GPU and library versions; dropout masks come from a counter-based generator seeded
//! from the training stream, not from the CPU's draws.

pub mod engine;
pub mod kernels;
pub mod net;
pub mod ops;

pub use engine::CudaEngine;
pub use net::Inference;

use crate::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One GPU ready to compute: its context and stream, a cuBLAS handle on that stream, and every
/// kernel of [`kernels::SOURCES`] compiled for it.
pub struct Gpu {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    name: String,
    capability: (i32, i32),
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.name())
    }
}

/// The GPU this process opened, shared by every user (a context, its kernels and a cuBLAS
/// handle are set up once).
static SHARED: Mutex<Option<Arc<Gpu>>> = Mutex::new(None);

/// A device error: what was being done and what CUDA said.
pub(crate) fn failed<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Device(format!("{what}: {e:?}"))
}

/// Why `--device cuda` cannot be used here, as a configuration error.
fn unusable(why: impl std::fmt::Display) -> Error {
    Error::Config(format!("--device cuda: {why} (use --device cpu)"))
}

/// Whether NVRTC (libnvrtc.so) can be loaded: what compiling the kernels needs.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library by its usual names; calls nothing in it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

impl Gpu {
    /// The process's GPU, opened on first use ([`Gpu::open`]) and shared after.
    ///
    /// # Errors
    /// As [`Gpu::open`].
    pub fn shared() -> Result<Arc<Gpu>> {
        let mut slot = SHARED
            .lock()
            .map_err(|_| unusable("the GPU lock was poisoned"))?;
        if let Some(gpu) = slot.as_ref() {
            return Ok(Arc::clone(gpu));
        }
        let gpu = Arc::new(Gpu::open()?);
        *slot = Some(Arc::clone(&gpu));
        Ok(gpu)
    }

    /// Opens GPU 0: checks that the driver, NVRTC and cuBLAS libraries load and that there is
    /// a GPU, then creates a context, a stream and a cuBLAS handle and compiles the kernels
    /// for the GPU's architecture.
    ///
    /// # Errors
    /// [`Error::Config`] when a library is missing or there is no GPU; [`Error::Device`] when
    /// CUDA fails while setting up (a kernel that does not compile is one: a bug).
    pub fn open() -> Result<Gpu> {
        // SAFETY: these only try to open the libraries by their usual names.
        let (driver, blas) = unsafe {
            (
                cudarc::driver::sys::is_culib_present(),
                cudarc::cublas::sys::is_culib_present(),
            )
        };
        if !driver {
            return Err(unusable(
                "no CUDA driver (libcuda.so) on this machine: no NVIDIA GPU, or its driver is not installed",
            ));
        }
        if !nvrtc_available() {
            return Err(unusable(
                "NVRTC (libnvrtc.so, CUDA's run-time compiler) cannot be loaded; install the CUDA \
                 toolkit or `pip install nvidia-cuda-nvrtc` and add its lib folder to LD_LIBRARY_PATH",
            ));
        }
        if !blas {
            return Err(unusable(
                "cuBLAS (libcublas.so) cannot be loaded; install the CUDA toolkit or \
                 `pip install nvidia-cublas` and add its lib folder to LD_LIBRARY_PATH",
            ));
        }
        let count = CudaContext::device_count().map_err(|e| unusable(format!("{e:?}")))?;
        if count < 1 {
            return Err(unusable("the CUDA driver finds no GPU"));
        }
        let ctx = CudaContext::new(0).map_err(|e| unusable(format!("cannot open GPU 0: {e:?}")))?;
        let name = ctx.name().map_err(failed("GPU name"))?;
        let capability = ctx
            .compute_capability()
            .map_err(failed("compute capability"))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(failed("cuBLAS handle"))?;
        let arch = format!("compute_{}{}", capability.0, capability.1);
        let functions = kernels::load(&ctx, &arch)?;
        Ok(Gpu {
            stream,
            blas,
            functions,
            name,
            capability,
        })
    }

    /// The GPU's name and architecture: `NVIDIA H100 80GB HBM3, sm_90`.
    pub fn name(&self) -> String {
        format!(
            "{}, sm_{}{}",
            self.name, self.capability.0, self.capability.1
        )
    }

    /// Lets cuBLAS use TF32 tensor cores for its fp32 products (about 10 bits of mantissa in
    /// the multiplies: faster, less exact), or not (the default: full fp32).
    ///
    /// # Errors
    /// [`Error::Device`] if cuBLAS refuses.
    pub fn set_tf32(&self, on: bool) -> Result<()> {
        use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode, cublasStatus_t};
        let mode = if on {
            cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: the handle is live for as long as `self`.
        let status = unsafe { cublasSetMathMode(*self.blas.handle(), mode) };
        match status {
            cublasStatus_t::CUBLAS_STATUS_SUCCESS => Ok(()),
            other => Err(Error::Device(format!("cuBLAS math mode: {other:?}"))),
        }
    }

    /// The stream every kernel and product of this GPU runs on, in order.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for everything queued so far.
    ///
    /// # Errors
    /// [`Error::Device`] with the first error CUDA reports.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(failed("synchronize"))
    }
}
