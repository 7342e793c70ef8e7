#!/usr/bin/env bash
# Installs a CUDA 13.0 toolkit (nvcc, headers, cudart, cuBLAS, cuRAND, NVRTC) from the
# Python package registry into $CUDA13 (default ~/.cuda13), builds a link-time stub of
# the driver library (libcuda.so, SONAME libcuda.so.1, every symbol in libcuda.symbols
# beside this script; the real driver replaces it at run time on a GPU machine), and
# prints the environment that makes `cargo build --features cuda` work on a machine
# without a GPU. CUDA 13.0 matches the driver of the lent H200 machines, so
# the PTX that Candle's kernels are built to loads there.
#   eval "$(scripts/cuda-toolkit.sh)"; cargo build --release --features cuda
set -eu
CUDA13="${CUDA13:-$HOME/.cuda13}"
if [ ! -x "$CUDA13/venv/bin/python" ]; then
  python3 -m venv "$CUDA13/venv" >&2
  "$CUDA13/venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.96" \
    "nvidia-cublas==13.0.2.14" nvidia-curand "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-nvvm==13.0.*" "nvidia-cuda-nvrtc==13.0.*" >&2
fi
"$CUDA13/venv/bin/python" -c "import nvidia.cu13" 2>/dev/null || true
"$CUDA13/venv/bin/pip" show -q nvidia-cuda-nvrtc >/dev/null 2>&1 || "$CUDA13/venv/bin/pip" install -q "nvidia-cuda-nvrtc==13.0.*" >&2
N=$("$CUDA13/venv/bin/python" -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu13'))")
mkdir -p "$CUDA13/lib"
for l in cublas cublasLt cudart; do ln -sf "$N/lib/lib$l.so.13" "$CUDA13/lib/lib$l.so"; done
ln -sf "$N/lib/libcurand.so.10" "$CUDA13/lib/libcurand.so"
ln -sf "$(ls "$N"/lib/libnvrtc.so.13* | head -1)" "$CUDA13/lib/libnvrtc.so"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -f "$CUDA13/lib/libcuda.so" ] || [ "$HERE/libcuda.symbols" -nt "$CUDA13/lib/libcuda.so" ]; then
  sed 's/.*/void &(void) {}/' "$HERE/libcuda.symbols" > "$CUDA13/lib/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA13/lib/libcuda.so" "$CUDA13/lib/cuda_stub.c" >&2
fi
cat <<ENV
export PATH="$N/bin:\$PATH"
export CUDA_ROOT="$N" CUDA_PATH="$N"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
export LIBRARY_PATH="$CUDA13/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export RUSTFLAGS="\${RUSTFLAGS:-} -L $CUDA13/lib"
ENV
