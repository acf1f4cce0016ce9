//! Memory held between training steps stays flat. In its own test binary so that no other test
//! allocates in the process while it measures.

use diffscope_engine::train::dataset::ImageDataset;
use diffscope_engine::train::trainer::Trainer;
use diffscope_tests::tiny_training::{tiny_config, write_images, SIZE};

/// Memory held between training steps stays flat: on the device tests run on (the first GPU of a
/// CUDA build when there is one, where it is the engine's allocated GPU memory; here usually the
/// CPU, where it is the process's resident memory). Growth from step to step was seen on CUDA
/// (out of memory after about 25 steps at batch 64).
#[test]
fn memory_is_flat_from_step_to_step() {
    let device = diffscope_engine::device::default_device().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_images(&data, 8, SIZE);
    let mut trainer = Trainer::new(
        tiny_config(Some(0.9)),
        ImageDataset::load(&data).unwrap(),
        &tmp.path().join("run"),
        &device,
    )
    .unwrap();
    let in_use = || -> u64 {
        diffscope_engine::device::synchronize(&device).unwrap();
        match diffscope_engine::device::memory_info(&device) {
            Some(m) => m.total - m.free,
            None => resident_bytes(),
        }
    };
    // Warm-up: buffers that are allocated once (optimizer moments, pooled memory) settle.
    for _ in 0..5 {
        trainer.step().unwrap();
    }
    let settled = in_use();
    for _ in 0..20 {
        trainer.step().unwrap();
    }
    let after = in_use();
    let growth = after.saturating_sub(settled);
    // Twenty steps of a leak the size of one step's activations would be far above this.
    let allowed = settled / 20 + (16 << 20);
    assert!(
        growth <= allowed,
        "memory in use grew from {settled} to {after} bytes over 20 steps on {device:?}"
    );
}

/// The process's resident memory, from Linux's /proc (0 elsewhere: the check then passes).
fn resident_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
