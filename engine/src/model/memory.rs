//! Whether a model's weights fit in memory before they are read: the engine reads every weight
//! into memory at load (in the precision asked), so a model larger than what is free is refused
//! with the numbers, instead of being killed by the system half way.

use std::path::Path;

use candle_core::Device;

use super::weights::{find_weight_files, Weights};
use crate::error::{Error, Result};

/// Values stored in a component folder's weights (0 when it has none).
pub fn stored_values(dir: &Path, stem: &str) -> Result<usize> {
    match find_weight_files(dir, stem) {
        Ok(files) => Ok(Weights::open(&files, &Device::Cpu)?.stored_parameters()),
        Err(_) => Ok(0),
    }
}

/// Memory available for new allocations: free GPU memory, or the system's `MemAvailable`.
pub fn available_bytes(device: &Device) -> Option<u64> {
    if let Some(info) = crate::device::memory_info(device) {
        return Some(info.free);
    }
    if !device.is_cpu() {
        return None;
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuse to load `what` when its weights, `values` of `bytes_per_value` each, need more than
/// `available` bytes (the weights alone; running needs more).
pub fn check_fits(
    what: &Path,
    values: usize,
    bytes_per_value: usize,
    available: Option<u64>,
) -> Result<()> {
    let needed = values as u64 * bytes_per_value as u64;
    let Some(available) = available else {
        return Ok(());
    };
    if needed > available {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(Error::file(
            what,
            format!(
                "its weights need {:.1} GiB in {}-byte values but only {:.1} GiB of memory are available: use --dtype bf16 (half the memory), a smaller model, or a machine with more memory",
                gib(needed),
                bytes_per_value,
                gib(available)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_with_the_numbers() {
        assert!(check_fits(Path::new("m"), 1000, 4, Some(4000)).is_ok());
        assert!(check_fits(Path::new("m"), 1000, 4, None).is_ok());
        let err = check_fits(Path::new("sdxl"), 2_567_463_684, 4, Some(8 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("9.6 GiB") && err.contains("8.0 GiB") && err.contains("--dtype bf16"),
            "{err}"
        );
    }
}
