//! Device selection: `auto` takes CUDA when present, `cuda` insists on it; a portable run
//! stays on the CPU.

use anyhow::{bail, Result};
use tch::Device;

use crate::config::{Experiment, Reproducibility};

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

/// The device a run of `exp` trains on: portable runs on the CPU (its code paths are the CPU's;
/// asking for CUDA is refused), others as [`resolve_device`] says.
pub fn run_device(exp: &Experiment, choice: DeviceChoice) -> Result<Device> {
    if exp.reproducibility == Reproducibility::Portable {
        if choice == DeviceChoice::Cuda {
            bail!("--device cuda: a run with reproducibility = \"portable\" pins CPU code paths and runs on the CPU (use --device cpu or auto, or \"machine\" on a GPU)");
        }
        return Ok(Device::Cpu);
    }
    resolve_device(choice)
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
