//! `--device` on the commands that classify (predict, evaluate, report, serve).

use anyhow::Result;
use clap::Args;
use deepcat::device::{Device, Forward, forward_on};
use deepcat::model::Model;

/// Where a command runs the model.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Where to run the model: cpu, or cuda (an NVIDIA GPU; needs a build with
    /// `--features cuda`).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: Device,
}

impl DeviceArgs {
    /// The model's inference pass on the device: `None` on the CPU (the model runs itself).
    ///
    /// # Errors
    /// A usage error (exit status 2) when the device cannot be used.
    pub fn forward(&self, model: &Model) -> Result<Option<Box<dyn Forward>>> {
        Ok(forward_on(self.device, &model.network)?)
    }
}
