#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), everything scripts/gpu-check.sh runs on a lent
# GPU machine, which has no Rust toolchain and no network (docs/gpu.md):
#
#   .gpu/bin.tar.xz   the `diffad` binary and the reference-test binaries, built
#                     `--release --features cuda`, stripped, in one xz archive (one
#                     solid archive with a large dictionary: every binary embeds the same
#                     Candle kernels, which a per-file archive would carry 14 times)
#   .gpu/manifest     the absolute repository root they were built in (the tests find
#                     their fixtures through the CARGO_MANIFEST_DIR baked in at compile
#                     time), the features, the commit, the list of test binaries
#   .whl/             the Python wheels the GPU machine lacks (diffusers)
#
# Usage (from anywhere; it works in the repository root):
#   scripts/gpu-build.sh             # CUDA set: installs the CUDA toolkit (scripts/cuda-toolkit.sh),
#                                    # builds into target/cuda; ~20+ minutes on 2 cores
#   scripts/gpu-build.sh --cpu       # the same set without CUDA, for the dry run
#                                    # `scripts/gpu-check.sh --device cpu --config tiny`
#   scripts/gpu-build.sh --no-wheels # skip the wheel download
#
# Both folders are ignored by git; name them in the device tool's `carry`
# (`[".gpu", ".whl"]`). What travels (working tree + .gpu + .whl) must stay under
# 64 MiB: the script checks .gpu/ against 60 MiB and the total against 64 MiB.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

mode=cuda
wheels=1
for arg in "$@"; do
  case "$arg" in
    --cpu) mode=cpu ;;
    --no-wheels) wheels=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "gpu-build.sh: unknown argument $arg (--cpu, --no-wheels)" >&2
      exit 2
      ;;
  esac
done

# The reference tests: package and integration-test target.
TESTS=(
  "diffad-nn reference"
  "diffad-nn generic_path"
  "diffad-vae diffusers_equivalence"
  "diffad-vae half_precision"
  "diffad-diffusion unet"
  "diffad-diffusion schedulers"
  "diffad-diffusion reconstruct"
  "diffad-diffusion half_precision"
  "diffad-seg torch_fixtures"
  "diffad-seg unet"
  "diffad-seg half_precision"
)
# The wheels the GPU machine's Python 3.12 lacks: diffusers alone (its other needs,
# huggingface-hub >= 1.32, safetensors >= 0.8, numpy, regex, requests, filelock, Pillow,
# are installed there; importlib_metadata is only imported on Python < 3.8).
WHEELS=(diffusers==0.42.1)
MAX_GPU_MIB=60
MAX_TRAVEL_MIB=64

features=()
if [ "$mode" = cuda ]; then
  # RUSTFLAGS and features differ from the everyday build: a target folder of its own
  # keeps the two from rebuilding each other.
  eval "$(scripts/cuda-toolkit.sh)"
  features=(--features cuda)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/cuda}"
fi

stage="$ROOT/target/gpu-stage-$mode"
rm -rf "$stage"
mkdir -p "$stage/tests"

echo "building diffad ($mode)" >&2
exe=$(cargo build --release "${features[@]}" --bin diffad --message-format=json |
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "diffad" and .executable != null) | .executable')
strip -s -o "$stage/diffad" "$exe"

# One cargo call for every package, so the dependencies are built once with one set of
# features. A `--test NAME` selects that target in every selected package that has one;
# the names of TESTS select exactly TESTS there.
cargo_args=()
for entry in "${TESTS[@]}"; do
  read -r package test <<<"$entry"
  cargo_args+=(-p "$package" --test "$test")
done
echo "building the reference-test binaries ($mode)" >&2
listed=()
while read -r package name exe; do
  strip -s -o "$stage/tests/$package.$name" "$exe"
  listed+=("$package.$name")
done < <(cargo test --release "${features[@]}" --no-run --message-format=json "${cargo_args[@]}" |
  jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
         | "\(.manifest_path | split("/") | .[-2]) \(.target.name) \(.executable)"')
mapfile -t listed < <(printf '%s\n' "${listed[@]}" | sort)
if [ "${#listed[@]}" -ne "${#TESTS[@]}" ]; then
  echo "gpu-build.sh: expected ${#TESTS[@]} test binaries, cargo reported ${#listed[@]}: ${listed[*]}" >&2
  exit 1
fi

mkdir -p .gpu
rm -f .gpu/bin.tar.xz .gpu/manifest
echo "compressing $(du -sm "$stage" | cut -f1) MiB of stripped binaries" >&2
# A 128 MiB dictionary reaches from one binary's copy of the kernels to the next one's.
tar -C "$stage" -cf - . | xz -T2 -6 --lzma2=preset=6,dict=128MiB >.gpu/bin.tar.xz
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit+dirty"
fi
{
  echo "# written by scripts/gpu-build.sh; read by scripts/gpu-check.sh"
  echo "root=$ROOT"
  echo "features=$mode"
  echo "commit=$commit"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "rustc=$(rustc --version)"
  for t in "${listed[@]}"; do echo "test=$t"; done
} >.gpu/manifest

if [ "$wheels" = 1 ]; then
  mkdir -p .whl
  for wheel in "${WHEELS[@]}"; do
    if ! ls .whl/"${wheel%%==*}"-"${wheel##*==}"-*.whl >/dev/null 2>&1; then
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$wheel"
    fi
  done
fi

gpu_mib=$(du -sm .gpu | cut -f1)
whl_mib=$( (du -sm .whl 2>/dev/null || echo 0) | cut -f1)
tree_mib=$(git ls-files -z --cached --others --exclude-standard | du -cm --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "built $mode set: .gpu ${gpu_mib} MiB, .whl ${whl_mib} MiB, working tree ${tree_mib} MiB" >&2
ls -l .gpu .whl 2>/dev/null >&2 || true
if [ "$gpu_mib" -ge "$MAX_GPU_MIB" ]; then
  echo "gpu-build.sh: .gpu/ is ${gpu_mib} MiB, over ${MAX_GPU_MIB} MiB" >&2
  exit 1
fi
if [ $((gpu_mib + whl_mib + tree_mib)) -ge "$MAX_TRAVEL_MIB" ]; then
  echo "gpu-build.sh: .gpu + .whl + the working tree is over ${MAX_TRAVEL_MIB} MiB" >&2
  exit 1
fi
