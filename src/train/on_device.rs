//! The training engine on a device other than the CPU (`--device cuda`): where the training
//! loop hands its step to the CUDA backend. The CPU's engines are [`super::direct`] and
//! [`super::gram`]; [`crate::device`] says which devices there are.

use crate::Result;
use crate::nn::Network;

/// The training data an engine borrows: training and validation sets, augmentation, and the
/// side of the (square) images augmentation reads.
pub type EngineData<'a> = (
    super::Labelled<'a>,
    Option<super::Labelled<'a>>,
    crate::data::augment::Augment,
    usize,
);

/// The training engine of `config.device` (not the CPU, whose engines the training loop
/// picks itself): weights, gradients and optimiser state on the device.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) when the device cannot be used; a device error while copying the network.
pub(super) fn engine<'a>(
    config: &super::TrainConfig,
    net: &Network,
    optimizer: &dyn crate::optim::Optimizer,
    data: EngineData<'a>,
) -> Result<Box<dyn super::engine::Engine + 'a>> {
    config.device.check_built()?;
    cuda_engine(config, net, optimizer, data)
}

#[cfg(feature = "cuda")]
fn cuda_engine<'a>(
    config: &super::TrainConfig,
    net: &Network,
    optimizer: &dyn crate::optim::Optimizer,
    (train, val, augment, size): EngineData<'a>,
) -> Result<Box<dyn super::engine::Engine + 'a>> {
    let engine =
        crate::cuda::CudaEngine::new(net, optimizer, train, val, (augment, size), config.tf32)?;
    Ok(Box::new(engine))
}

#[cfg(not(feature = "cuda"))]
fn cuda_engine<'a>(
    _config: &super::TrainConfig,
    _net: &Network,
    _optimizer: &dyn crate::optim::Optimizer,
    _data: EngineData<'a>,
) -> Result<Box<dyn super::engine::Engine + 'a>> {
    Err(crate::Error::Config(crate::device::NOT_BUILT.into()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cpu_configuration_is_saved_without_a_device_so_cpu_model_bytes_do_not_change() {
        use super::super::TrainConfig;
        use crate::device::Device;
        let cpu = serde_json::to_value(TrainConfig::default()).unwrap();
        assert!(
            cpu.get("device").is_none() && cpu.get("tf32").is_none(),
            "{cpu}"
        );
        let gpu = TrainConfig {
            device: Device::Cuda,
            tf32: true,
            ..TrainConfig::default()
        };
        let gpu = serde_json::to_value(gpu).unwrap();
        assert_eq!(gpu["device"], "cuda");
        assert_eq!(gpu["tf32"], true);
    }
}
