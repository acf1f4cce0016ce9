//! With the `cuda` feature: compile the engine's own CUDA kernels (src/model/ops/cuda/kernels.cu)
//! to PTX with nvcc, for src/model/ops/cuda/mod.rs to load. Without it: nothing.
//!
//! nvcc is found as candle's kernel build finds it (`CUDA_ROOT`/`CUDA_PATH`/`CUDA_HOME`, then
//! PATH); the PTX targets `CUDA_COMPUTE_CAP` (default 80: Ampere and every newer GPU, which JIT
//! the PTX for themselves; the fused attention needs 80 or more).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/model/ops/cuda/kernels.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = ["CUDA_ROOT", "CUDA_PATH", "CUDA_HOME"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|c| c.trim().replace('.', ""))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "80".into());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("diffscope_kernels.ptx");
    let status = Command::new(&nvcc)
        .args([
            "--ptx",
            "-O3",
            "-std=c++17",
            &format!("-arch=compute_{cap}"),
            "-o",
        ])
        .arg(&out)
        .arg("src/model/ops/cuda/kernels.cu")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("nvcc failed ({s}) compiling src/model/ops/cuda/kernels.cu"),
        Err(e) => panic!(
            "cannot run {} ({e}): the cuda feature needs nvcc; see scripts/build-cuda.sh",
            nvcc.display()
        ),
    }
}
