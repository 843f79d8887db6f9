//! Host-to-device copies of what the step loop prepares on the host once per chunk of steps
//! (batch indices, augmentation draws, learning rates), made so they do not stall a GPU.

use tch::{Device, Tensor};

/// `host` (a CPU tensor) on `device`. On a GPU the data first goes to page-locked memory and
/// then travels asynchronously: a copy from ordinary (pageable) memory waits until the GPU has
/// finished everything queued before it, draining its queue once per chunk. libtorch's pinned
/// allocator holds the page-locked buffer until the copy has completed. Should pinning fail,
/// the ordinary copy is made.
pub fn to_device(host: Tensor, device: Device) -> Tensor {
    match device {
        Device::Cpu => host,
        _ => match host.f_internal_pin_memory(device) {
            Ok(pinned) => pinned.to_device_(device, pinned.kind(), true, false),
            Err(_) => host.to_device(device),
        },
    }
}
