//! Where a network computes: the CPU (always), or an NVIDIA GPU through CUDA when deepcat is
//! built with `--features cuda` (`crate::cuda`, compiled with the feature).
//!
//! This module is compiled in every build, so `--device` exists on every command whatever the
//! build: asking for `cuda` from a build without the feature, or on a machine without a usable
//! GPU and driver, is a configuration error ([`Error::Config`], exit status 2 on the command
//! line) that says what to do, never a panic. It holds what is independent of CUDA: the
//! [`Device`] choice and the [`Forward`] seam through which inference runs elsewhere than in the
//! network's own layers. What runs on the GPU lives in `crate::cuda`.

use crate::nn::{Network, Rows};
use crate::{Error, Result};
use ndarray::Array2;

/// The device a command computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU: deepcat's own layers on ndarray (the default; its results are the reference).
    #[default]
    Cpu,
    /// The first NVIDIA GPU, through the CUDA driver, NVRTC and cuBLAS.
    Cuda,
}

/// What `--device cuda` says in a build without the `cuda` feature.
pub const NOT_BUILT: &str = "--device cuda: this deepcat was built without CUDA support; \
     rebuild it with `cargo build --release --features cuda` (or use --device cpu)";

impl Device {
    /// Whether this is the CPU (the model file records the device only when it is not).
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// The name on the command line: `cpu` or `cuda`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// Whether this build can compute on the device at all (the CPU always; CUDA only with the
    /// `cuda` feature). Says nothing of whether a GPU is present: see [`Device::describe`].
    ///
    /// # Errors
    /// [`Error::Config`] ([`NOT_BUILT`]) for CUDA in a build without the feature.
    pub fn check_built(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda if cfg!(feature = "cuda") => Ok(()),
            Device::Cuda => Err(Error::Config(NOT_BUILT.into())),
        }
    }

    /// The device in words, as `deepcat train` prints it: `cpu (8 threads)`, or the GPU's
    /// name and compute capability. Opens the GPU to ask it.
    ///
    /// # Errors
    /// [`Error::Config`] when the device cannot be used: not built in, no driver, no GPU.
    pub fn describe(self) -> Result<String> {
        self.check_built()?;
        match self {
            Device::Cpu => Ok(format!("cpu ({} threads)", rayon::current_num_threads())),
            Device::Cuda => cuda_description(),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_description() -> Result<String> {
    crate::cuda::Gpu::shared().map(|gpu| format!("cuda ({})", gpu.name()))
}

#[cfg(not(feature = "cuda"))]
fn cuda_description() -> Result<String> {
    Err(Error::Config(NOT_BUILT.into()))
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    /// `cpu` or `cuda` (any case).
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(format!("unknown device {other:?}; use cpu or cuda")),
        }
    }
}

/// A network's inference pass run somewhere other than in its own layers (on a GPU): logits
/// for rows of values or image bytes. The output head (sigmoid or softmax) is applied by the
/// caller, on the CPU, as [`Network::probabilities`] does.
pub trait Forward: Send + Sync {
    /// `x (batch, features)` → logits `(batch, outputs)`, inference mode.
    ///
    /// # Errors
    /// When the device fails (out of memory, a driver error).
    fn logits(&self, x: Rows<'_>) -> Result<Array2<f32>>;
}

/// The inference pass of `net` on `device`: `None` for the CPU (the network runs itself, so
/// CPU results stay exactly what they always were), else a copy of the network on the device.
///
/// # Errors
/// [`Error::Config`] when the device cannot be used (see [`Device::describe`]); a device
/// error while copying the weights.
pub fn forward_on(device: Device, net: &Network) -> Result<Option<Box<dyn Forward>>> {
    device.check_built()?;
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda => cuda_forward(net).map(Some),
    }
}

#[cfg(feature = "cuda")]
fn cuda_forward(net: &Network) -> Result<Box<dyn Forward>> {
    let gpu = crate::cuda::Gpu::shared()?;
    Ok(Box::new(crate::cuda::Inference::new(gpu, net)?))
}

#[cfg(not(feature = "cuda"))]
fn cuda_forward(_net: &Network) -> Result<Box<dyn Forward>> {
    Err(Error::Config(NOT_BUILT.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_by_name_and_refuse_the_rest() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("CUDA".parse::<Device>(), Ok(Device::Cuda));
        let msg = "tpu".parse::<Device>().unwrap_err();
        assert!(msg.contains("use cpu or cuda"), "{msg}");
        assert_eq!(Device::default(), Device::Cpu);
        assert_eq!(serde_json::to_string(&Device::Cuda).unwrap(), "\"cuda\"");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_configuration_error_that_says_how_to_rebuild() {
        let err = Device::Cuda.check_built().unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(err.to_string().contains("--features cuda"), "{err}");
        assert!(Device::Cpu.check_built().is_ok());
    }
}
