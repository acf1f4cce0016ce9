#!/usr/bin/env bash
# Build diffscope's GPU binary (`--features cuda`) on any Linux x86-64 machine, with or without a
# GPU: CUDA's compiler comes from PyPI (scripts/cuda-toolchain.sh). About 10 minutes on top of a
# CPU release build on 2 cores. The binary runs on a machine with an NVIDIA driver (CUDA 13,
# driver 580 or newer) and the CUDA 13 libraries (cuBLAS, cuRAND, the runtime) on its library path,
# for instance those of a PyTorch install: see README.md, "The GPU".
#
#   scripts/build-cuda.sh [TARGET_DIR]        # default target/cuda; the binary: TARGET_DIR/release/diffscope
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh # for Ampere (80), Ada (89) or Hopper (90, the default)
set -eu
cd "$(dirname "$0")/.."
target=${1:-target/cuda}
cargo fetch --locked >/dev/null
. "$(scripts/cuda-toolchain.sh)"
cargo build --release --locked -p diffscope --features cuda --target-dir "$target"
echo "$target/release/diffscope"
