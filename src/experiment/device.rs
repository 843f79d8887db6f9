//! Device selection: `auto` takes CUDA when present, `cuda` insists on it.

use anyhow::{bail, Result};
use tch::Device;

/// What `--device` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device; an error when none exists.
    Cuda,
}

/// The tch device for a choice.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                bail!("--device cuda was asked for, but no CUDA device is available (use --device cpu or auto)")
            }
        }
    }
}
