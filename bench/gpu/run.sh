#!/usr/bin/env bash
# The GPU check in one go, on a machine with an NVIDIA GPU, python3 with torch (CUDA), transformers,
# safetensors and numpy (diffusers and importlib_metadata may come as wheels in .whl/):
#
#   bench/gpu/run.sh DIFFSCOPE_BINARY[.xz] OUT_DIR [bench/gpu/check.py options]
#
# The binary is built elsewhere with scripts/build-cuda.sh (it needs no GPU); see bench/README.md.
set -u
bin=$1
out=$2
shift 2
if [[ $bin == *.xz ]]; then
    xz -dc "$bin" >/tmp/diffscope-cuda && chmod +x /tmp/diffscope-cuda && bin=/tmp/diffscope-cuda
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
mkdir -p "$out"
python3 bench/gpu/check.py --binary "$bin" --out "$out" "$@"
