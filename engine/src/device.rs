//! Where a model computes and in which precision: `--device cpu|cuda[:N]|metal[:N]` (default: the
//! best this build and machine have) and `--dtype f32|f16|bf16`. Also the device-side facts the
//! engine sizes its work by (free memory, the peak of what it allocated) and a barrier for timers.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// A device as the user names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU this build supports when one is there, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, index) = match s.split_once(':') {
            Some((kind, index)) => {
                let index = index.parse::<usize>().map_err(|_| {
                    Error::invalid(format!(
                        "device `{s}`: `{index}` is not a device number (use e.g. cuda:0)"
                    ))
                })?;
                (kind, Some(index))
            }
            None => (s.as_str(), None),
        };
        match (kind, index) {
            ("auto", None) => Ok(Self::Auto),
            ("cpu", None) => Ok(Self::Cpu),
            ("cuda" | "gpu", i) => Ok(Self::Cuda(i.unwrap_or(0))),
            ("metal" | "mps", i) => Ok(Self::Metal(i.unwrap_or(0))),
            _ => Err(Error::invalid(format!(
                "unknown device `{s}` (use auto, cpu, cuda, cuda:N, metal)"
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Metal(i) => write!(f, "metal:{i}"),
        }
    }
}

impl DeviceChoice {
    /// Open the device, with an error that says what this build and machine offer instead.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Auto => default_device(),
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(index) => open_cuda(index),
            Self::Metal(index) => open_metal(index),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(index: usize) -> Result<Device> {
    // candle's `cuda_is_available` only says the build has CUDA; ask the driver.
    let count = cuda::device_count();
    if count == 0 {
        return Err(Error::invalid(
            "--device cuda: no CUDA driver or GPU found on this machine",
        ));
    }
    if index >= count {
        return Err(Error::invalid(format!(
            "--device cuda:{index}: this machine has {count} CUDA device(s) (cuda:0..cuda:{})",
            count.saturating_sub(1)
        )));
    }
    let device = Device::new_cuda(index)?;
    cuda::prepare(&device)?;
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_index: usize) -> Result<Device> {
    Err(Error::invalid(
        "--device cuda: this diffscope was built without CUDA; build it with `--features cuda` \
         (README, \"The GPU\": scripts/build-cuda.sh builds it even on a machine without a GPU)",
    ))
}

#[cfg(feature = "metal")]
fn open_metal(index: usize) -> Result<Device> {
    if !candle_core::utils::metal_is_available() {
        return Err(Error::invalid(
            "--device metal: no Metal device on this machine",
        ));
    }
    Ok(Device::new_metal(index)?)
}

#[cfg(not(feature = "metal"))]
fn open_metal(_index: usize) -> Result<Device> {
    Err(Error::invalid(
        "--device metal: this diffscope was built without Metal; build it with `--features metal`",
    ))
}

/// The best device this build supports: the first GPU when built with `cuda`/`metal` and one is there, else the CPU.
pub fn default_device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    if cuda::device_count() > 0 {
        return open_cuda(0);
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

/// The precision a model's weights and activations are held in. Features always leave the model
/// as float32.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Precision {
    #[default]
    F32,
    F16,
    BF16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::BF16];

    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        self.dtype().size_in_bytes()
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            other => Err(Error::invalid(format!(
                "unknown dtype `{other}` (use f32, f16 or bf16)"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where and in which precision a model runs.
#[derive(Clone, Debug)]
pub struct Compute {
    pub device: Device,
    pub precision: Precision,
}

impl Compute {
    /// The CPU in float32: what the tests and the default build use.
    pub fn cpu() -> Self {
        Self {
            device: Device::Cpu,
            precision: Precision::F32,
        }
    }

    /// Open `device` and check that it can compute in `precision`.
    pub fn open(device: DeviceChoice, precision: Precision) -> Result<Self> {
        let device = device.open()?;
        check_precision(&device, precision)?;
        Ok(Self { device, precision })
    }

    pub fn dtype(&self) -> DType {
        self.precision.dtype()
    }

    /// `CUDA f16`, `CPU f32`.
    pub fn describe(&self) -> String {
        format!("{} {}", describe(&self.device), self.precision)
    }
}

/// A clear error when `device` cannot compute in `precision`.
pub fn check_precision(device: &Device, precision: Precision) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(_) = device {
        let (major, minor) = cuda::compute_capability(device)?;
        let needed = match precision {
            Precision::F32 => (0, 0),
            // Half-precision arithmetic needs 5.3; bf16 tensor cores need Ampere (8.0).
            Precision::F16 => (5, 3),
            Precision::BF16 => (8, 0),
        };
        if (major, minor) < needed {
            return Err(Error::invalid(format!(
                "--dtype {precision}: this GPU (compute capability {major}.{minor}) cannot compute in {precision}; it needs {}.{} or newer (use --dtype f32{})",
                needed.0,
                needed.1,
                if precision == Precision::BF16 { " or f16" } else { "" }
            )));
        }
    }
    let _ = (device, precision);
    Ok(())
}

/// Wait until the device has finished everything queued (GPU work is asynchronous): call before
/// reading a timer.
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

/// Device memory in bytes, for sizing work and for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryInfo {
    pub free: u64,
    pub total: u64,
}

/// Free and total memory of a GPU (None on the CPU, where the system's memory is used).
pub fn memory_info(device: &Device) -> Option<MemoryInfo> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => cuda::memory_info(device).ok(),
        _ => None,
    }
}

/// The most memory the engine held at once on a GPU since the last [`reset_peak_memory`] (what
/// PyTorch calls `max_memory_allocated`), and the most the allocator reserved from the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeakMemory {
    pub allocated: u64,
    pub reserved: u64,
}

pub fn peak_memory(device: &Device) -> Option<PeakMemory> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => cuda::peak_memory(device).ok(),
        _ => None,
    }
}

pub fn reset_peak_memory(device: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(_) = device {
        let _ = cuda::reset_peak_memory(device);
    }
    let _ = device;
}

/// Bytes of memory the engine may plan to use for one batch of work on `device`: on a GPU a share
/// of what is free now, on the CPU a share of the memory available to the system.
pub fn work_budget(device: &Device) -> u64 {
    const GIB: u64 = 1 << 30;
    match memory_info(device) {
        // Leave room for cuBLAS workspaces, fragmentation and whatever else shares the GPU.
        Some(info) => (info.free / 10 * 7).max(GIB / 4),
        None => (available_system_memory().unwrap_or(8 * GIB) / 4).clamp(GIB / 2, 8 * GIB),
    }
}

/// `MemAvailable` from Linux's /proc/meminfo.
fn available_system_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Turn an allocation failure of candle into a message that says how much was asked for, what
/// was free, and what to lower. Other errors pass through.
pub fn explain_out_of_memory(error: Error, device: &Device, what: &str, hint: &str) -> Error {
    let text = error.to_string();
    let oom = text.contains("OUT_OF_MEMORY")
        || text.contains("out of memory")
        || text.contains("memory allocation of");
    if !oom {
        return error;
    }
    let free = memory_info(device)
        .map(|m| {
            format!(
                " ({:.1} GiB of {:.1} GiB free now)",
                m.free as f64 / (1u64 << 30) as f64,
                m.total as f64 / (1u64 << 30) as f64
            )
        })
        .unwrap_or_default();
    Error::invalid(format!(
        "out of {} memory while {what}{free}: {hint}",
        describe(device)
    ))
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    //! The few CUDA driver calls candle does not wrap.

    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::Device;

    use crate::error::{Error, Result};

    use super::{MemoryInfo, PeakMemory};

    fn driver_error(e: impl std::fmt::Debug) -> Error {
        Error::invalid(format!("CUDA driver: {e:?}"))
    }

    pub fn device_count() -> usize {
        result::init()
            .and_then(|_| result::device::get_count())
            .map(|n| n.max(0) as usize)
            .unwrap_or(0)
    }

    fn cuda_device(device: &Device) -> Result<&candle_core::CudaDevice> {
        match device {
            Device::Cuda(d) => Ok(d),
            _ => Err(Error::invalid("not a CUDA device")),
        }
    }

    /// Make the context current on this thread and return its driver handle.
    fn current(device: &Device) -> Result<sys::CUdevice> {
        let d = cuda_device(device)?;
        let stream = d.cuda_stream();
        let ctx = stream.context();
        ctx.bind_to_thread().map_err(driver_error)?;
        Ok(ctx.cu_device())
    }

    /// After opening: keep freed memory in the allocator's pool instead of returning it to the
    /// driver at every synchronisation (as PyTorch's caching allocator does), so a pass does not
    /// map and unmap its activations each time; and stop recording an event per allocation
    /// and kernel argument, which only multi-stream use needs: the engine queues all its work
    /// for a device on one stream, from the one thread that owns the model.
    pub fn prepare(device: &Device) -> Result<()> {
        let dev = current(device)?;
        // SAFETY: one stream per device (candle's per-thread default stream, used from the
        // engine's thread only), so nothing needs cross-stream synchronisation.
        unsafe { cuda_device(device)?.disable_event_tracking() };
        unsafe {
            let pool = result::device::get_mem_pool(dev).map_err(driver_error)?;
            let mut keep_all: u64 = u64::MAX;
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep_all as *mut u64).cast(),
            )
            .map_err(driver_error)?;
        }
        Ok(())
    }

    pub fn compute_capability(device: &Device) -> Result<(i32, i32)> {
        let dev = current(device)?;
        unsafe {
            let major = result::device::get_attribute(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            )
            .map_err(driver_error)?;
            let minor = result::device::get_attribute(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            )
            .map_err(driver_error)?;
            Ok((major, minor))
        }
    }

    pub fn memory_info(device: &Device) -> Result<MemoryInfo> {
        current(device)?;
        let (free, total) = result::mem_get_info().map_err(driver_error)?;
        Ok(MemoryInfo {
            free: free as u64,
            total: total as u64,
        })
    }

    fn pool_attribute(device: &Device, attribute: sys::CUmemPool_attribute) -> Result<u64> {
        let dev = current(device)?;
        let mut value: u64 = 0;
        unsafe {
            let pool = result::device::get_mem_pool(dev).map_err(driver_error)?;
            result::mem_pool::get_attribute(pool, attribute, (&mut value as *mut u64).cast())
                .map_err(driver_error)?;
        }
        Ok(value)
    }

    pub fn peak_memory(device: &Device) -> Result<PeakMemory> {
        Ok(PeakMemory {
            allocated: pool_attribute(
                device,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            )?,
            reserved: pool_attribute(
                device,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            )?,
        })
    }

    pub fn reset_peak_memory(device: &Device) -> Result<()> {
        let dev = current(device)?;
        unsafe {
            let pool = result::device::get_mem_pool(dev).map_err(driver_error)?;
            for attribute in [
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            ] {
                let mut zero: u64 = 0;
                result::mem_pool::set_attribute(pool, attribute, (&mut zero as *mut u64).cast())
                    .map_err(driver_error)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "CUDA".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!(
            "metal".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Metal(0)
        );
        for bad in ["tpu", "cuda:x", "cpu:1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("device"), "{bad}: {e}");
        }
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!("f16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("bfloat16".parse::<Precision>().unwrap(), Precision::BF16);
        assert_eq!("float32".parse::<Precision>().unwrap(), Precision::F32);
        let e = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("f32, f16 or bf16"), "{e}");
    }

    /// Without the cuda feature, asking for CUDA says how to get it instead of falling back silently.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_is_a_clear_error() {
        let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }

    #[test]
    fn the_cpu_runs_every_precision() {
        for p in Precision::ALL {
            Compute::open(DeviceChoice::Cpu, p).unwrap();
        }
    }

    #[test]
    fn out_of_memory_is_explained_and_other_errors_pass() {
        let oom = Error::invalid("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")");
        let e = explain_out_of_memory(oom, &Device::Cpu, "extracting", "lower --ensemble");
        let text = e.to_string();
        assert!(
            text.contains("out of CPU memory while extracting: lower --ensemble"),
            "{text}"
        );
        let other = Error::invalid("something else");
        let e = explain_out_of_memory(other, &Device::Cpu, "x", "y");
        assert_eq!(e.to_string(), "something else");
    }
}
