//! Which candle device computes: CPU by default, CUDA or Metal when built with those features.

use candle_core::Device;

use crate::error::Result;

/// The best device this build supports: the first GPU when built with `cuda`/`metal` and one is there, else the CPU.
pub fn default_device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    if candle_core::utils::cuda_is_available() {
        return Ok(Device::new_cuda(0)?);
    }
    #[cfg(feature = "metal")]
    if candle_core::utils::metal_is_available() {
        return Ok(Device::new_metal(0)?);
    }
    Ok(Device::Cpu)
}

pub fn describe(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "CPU",
        Device::Cuda(_) => "CUDA",
        Device::Metal(_) => "Metal",
    }
}
