#!/usr/bin/env bash
# A CUDA 13.0 compiler toolchain from PyPI, for building diffscope with `--features cuda` on a
# machine with no GPU and no CUDA toolkit (CI, a laptop). Prints the path of an env file to source:
#
#   . "$(scripts/cuda-toolchain.sh)"
#
# - nvcc, headers and libraries from NVIDIA's PyPI wheels, all pinned to 13.0: a newer nvvm makes
#   PTX that 13.0's ptxas and a 580 driver refuse ("Unsupported .version 9.5").
# - candle's `cuda` feature links libcuda, libcublas, libcurand and libcudart dynamically. The
#   wheels ship versioned names only (symlinks are added) and libcuda belongs to the driver, which
#   a machine without a GPU lacks: a link stub with the driver API's entry points is made, as
#   CUDA's own lib64/stubs does. At run time on a GPU machine the real libcuda.so.1 is used; never
#   put lib/stubs on LD_LIBRARY_PATH there. The stub needs cudarc's sources (`cargo fetch`);
#   `cargo check` needs only the compiler, so the stub is skipped when they are missing.
# - CUDA_COMPUTE_CAP defaults to 90 (Hopper): candle's kernel build otherwise asks nvidia-smi.
# The toolchain goes to $CUDA_TOOLCHAIN_DIR (default ~/.cache/diffscope-cuda-toolchain), once.
set -eu
root=${CUDA_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/diffscope-cuda-toolchain}
env_file=$root/env.sh
if [ ! -f "$root/venv/.installed" ]; then
  python3 -m venv "$root/venv" >&2
  "$root/venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.0.35 \
    nvidia-cublas==13.0.2.14 >&2
  touch "$root/venv/.installed"
fi
cu=$("$root/venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
if [ ! -f "$cu/lib/stubs/libcuda.so" ]; then
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs 2>/dev/null | tail -1 || true)
  if [ -n "$src" ]; then
    grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$src" | awk '{print "int " $4 "(void) { return 999; }"}' | sort -u >"$root/libcuda_stub.c"
    mkdir -p "$cu/lib/stubs"
    cc -shared -fPIC -o "$cu/lib/stubs/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$root/libcuda_stub.c"
    ln -sf libcuda.so.1 "$cu/lib/stubs/libcuda.so"
  else
    echo "cuda-toolchain: cudarc's sources are not in the cargo registry (run 'cargo fetch'): no link stub, 'cargo check' only" >&2
  fi
  for l in cublas.so.13 cublasLt.so.13 curand.so.10 cudart.so.13 nvrtc.so.13; do
    [ -e "$cu/lib/lib$l" ] && ln -sf "lib$l" "$cu/lib/lib${l%%.so*}.so"
  done
fi
cat >"$env_file" <<ENV
export CUDA_ROOT=$cu CUDA_PATH=$cu CUDA_HOME=$cu CUDA_TOOLKIT_ROOT_DIR=$cu
export PATH=$cu/bin:\$PATH
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
ENV
echo "$env_file"
