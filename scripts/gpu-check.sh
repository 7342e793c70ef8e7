#!/usr/bin/env bash
# The GPU check of docs/gpu.md, run on a lent GPU machine from the repository root, with
# the binaries scripts/gpu-build.sh built here (that machine has no Rust toolchain and no
# network; it has PyTorch):
#
#   1. the reference tests of the stage crates on the device (DIFFAD_TEST_DEVICE);
#   2. `diffad speed` in f32 and bf16: UNet forward at batch 1 and 8, DDIM
#      reconstruction and the whole predict path at batch 8, on seeded random weights;
#   3. scripts/torch_speed.py, the same work in PyTorch/diffusers on the same device;
#   4. one markdown table of images/s with the ratios ours / PyTorch.
#
# With the device tool, after `scripts/gpu-build.sh` here (one call, about 8 minutes):
#   run  command: "scripts/gpu-check.sh"   carry: [".gpu", ".whl"]   timeout_s: 600
# Everything it prints is also written to ${OUT:-/tmp/gpu-check}: check.log (progress
# and the speed runs' output), tests.log, summary.md (the table and the test results),
# diffad-f32.json, diffad-bf16.json, torch-f32.json, torch-bf16.json (7 files, all
# top-level, as the device tool brings back).
#
# Dry run here, without a GPU: scripts/gpu-build.sh --cpu, then
#   PYTHON=/tmp/dx-venv/bin/python scripts/gpu-check.sh --device cpu --config tiny
#
# Options:
#   --device cuda|cuda:N|cpu  (default cuda)   --config paper|tiny|FILE (default paper)
#   --bin DIR    the folder gpu-build.sh wrote (default .gpu)
#   --reps N     timed calls per measurement (default 5 on CUDA, 2 on the CPU)
#   --half bf16|f16  the half precision compared beside f32 (default bf16)
#   --no-tests   skip step 1
#   --budget S   seconds the whole check may take (default 450): each step's timeout is
#                what is left of it (at most 300 s), and a step with under 15 s left is
#                skipped and counted as failed, so the table is always printed in time
# Environment: PYTHON (default python3), the interpreter that has PyTorch; OUT.
# Exit status: 0 when every test passed and every speed run finished, 1 otherwise,
# 2 for a usage or setup error.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

device=cuda
config=paper
bin=.gpu
reps=
half=bf16
tests=1
budget=450
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --half) half="$2"; shift 2 ;;
    --no-tests) tests=0; shift ;;
    --budget) budget="$2"; shift 2 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "gpu-check.sh: unknown argument $1 (see --help)" >&2
      exit 2
      ;;
  esac
done
case "$device" in
  cpu) reps="${reps:-2}" ;;
  cuda | cuda:*) reps="${reps:-5}" ;;
  *) echo "gpu-check.sh: --device cuda, cuda:N or cpu" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python3}"
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
rm -f "$out"/diffad-*.json "$out"/torch-*.json "$out/summary.md"
: >"$out/check.log"
: >"$out/tests.log"
start=$SECONDS
log() {
  printf '[gpu-check %4ss] %s\n' "$((SECONDS - start))" "$*" | tee -a "$out/check.log" >&2
}
die() {
  log "error: $*"
  exit 2
}
# The timeout of the next step: what is left of the budget, at most 300 s; fails (and the
# caller skips the step) when under 15 s are left.
step_limit() {
  local left=$((budget - (SECONDS - start)))
  [ "$left" -ge 15 ] || return 1
  echo $((left < 300 ? left : 300))
}

# --- the binaries -------------------------------------------------------------------
manifest="$bin/manifest"
if [ ! -f "$manifest" ] || [ ! -f "$bin/bin.tar.xz" ]; then
  die "no $manifest or $bin/bin.tar.xz: run scripts/gpu-build.sh first (--cpu for a dry run)"
fi
value() { sed -n "s/^$1=//p" "$manifest" | head -1; }
root="$(value root)"
features="$(value features)"
mapfile -t test_names < <(sed -n 's/^test=//p' "$manifest")
log "binaries: $(value features) build of $(value commit), built $(value built) in $root"
if [ "$device" != cpu ] && [ "$features" != cuda ]; then
  die "$bin holds a $features build; --device $device needs scripts/gpu-build.sh without --cpu"
fi
work="/tmp/gpu-check-bin"
rm -rf "$work"
mkdir -p "$work"
xz -dc -T0 "$bin/bin.tar.xz" | tar -C "$work" -xf -
diffad="$work/diffad"

# The tests read their fixtures under the repository root baked in at build time.
if [ "$(realpath -m "$root")" != "$(realpath .)" ]; then
  if [ -L "$root" ] || [ ! -e "$root" ]; then
    if ! { mkdir -p "$(dirname "$root")" && ln -sfn "$PWD" "$root"; }; then
      log "warning: could not link $root to $PWD: the tests will not find their fixtures"
    fi
  else
    log "warning: $root exists and is not this checkout: the tests read their fixtures there"
  fi
fi

# --- CUDA libraries and Python --------------------------------------------------------
if [ "$device" != cpu ]; then
  # The CUDA runtime, cuBLAS and cuRAND of PyTorch's wheels (nvidia/cu13/lib, or one
  # nvidia/<lib>/lib per library in older layouts); the driver from its mount.
  libs="$("$PYTHON" - <<'PY'
import glob, os
import nvidia
dirs = []
for base in nvidia.__path__:
    for lib in sorted(glob.glob(os.path.join(base, "*", "lib"))):
        if glob.glob(os.path.join(lib, "lib*.so*")):
            dirs.append(lib)
print(":".join(dirs))
PY
)" || die "$PYTHON has no nvidia CUDA wheels (PyTorch's) to take the CUDA libraries from"
  [ -d /usr/local/nvidia/lib64 ] && libs="$libs:/usr/local/nvidia/lib64"
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing="$(ldd "$diffad" | grep 'not found' || true)"
  [ -z "$missing" ] || log "warning: unresolved libraries of diffad: $(echo "$missing" | tr -s ' \n' ' ')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
    sed 's/^/gpu: /' | tee -a "$out/check.log" >&2 || true
fi
if ! "$PYTHON" -c 'import diffusers' 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    log "installing the carried wheels into /tmp/site: $(cd .whl && echo *.whl)"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl >>"$out/check.log" 2>&1 || die "pip install of .whl/ failed"
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PYTHON" -c 'import diffusers' 2>>"$out/check.log" ||
    die "$PYTHON cannot import diffusers (carry .whl, see scripts/gpu-build.sh)"
fi
export PYTHONUNBUFFERED=1

failures=()
summary="$out/summary.md"
: >"$summary"

# --- 1. reference tests -------------------------------------------------------------
if [ "$tests" = 1 ]; then
  echo "## Reference tests on $device" >>"$summary"
  echo >>"$summary"
  for t in "${test_names[@]}"; do
    log "test $t"
    echo "===== $t (DIFFAD_TEST_DEVICE=$device)" >>"$out/tests.log"
    status=0
    if ! limit="$(step_limit)"; then
      failures+=("test $t (skipped: out of time)")
      echo "- \`$t\`: skipped (out of time)" >>"$summary"
      continue
    fi
    DIFFAD_TEST_DEVICE="$device" timeout "$limit" "$work/tests/$t" >"$work/test.log" 2>&1 ||
      status=$?
    cat "$work/test.log" >>"$out/tests.log"
    result="$(grep -h '^test result:' "$work/test.log" | tail -1 | sed 's/^test result: //')"
    if [ "$status" -ne 0 ]; then
      failures+=("test $t")
      grep -E '^test .* FAILED$' "$work/test.log" | sed 's/^/  /' | tee -a "$out/check.log" >&2 || true
      result="FAILED (exit $status${result:+; $result})"
    fi
    echo "- \`$t\`: $result" >>"$summary"
    log "  $result"
  done
  echo >>"$summary"
fi

# --- 2, 3. speed ----------------------------------------------------------------------
configs="/tmp/gpu-check-configs-$config"
"$diffad" speed --config "$config" --write-configs "$configs" >>"$out/check.log" 2>&1 ||
  die "diffad speed --write-configs failed (see $out/check.log)"
run_dir="/tmp/gpu-check-run"
rm -rf "$run_dir"
for precision in f32 "$half"; do
  log "diffad speed, $precision ($config, $reps reps)"
  if ! limit="$(step_limit)"; then
    failures+=("diffad speed $precision (skipped: out of time)")
  elif ! timeout "$limit" "$diffad" --quiet --device "$device" --dtype "$precision" speed \
    --config "$config" --reps "$reps" --run "$run_dir" --json "$out/diffad-$precision.json" \
    >>"$out/check.log" 2>&1; then
    failures+=("diffad speed $precision")
    log "  failed: $(tail -1 "$out/check.log" | cut -c1-300)"
  fi
  log "torch_speed.py, $precision"
  if ! limit="$(step_limit)"; then
    failures+=("torch_speed.py $precision (skipped: out of time)")
  elif ! DIFFAD="$diffad" timeout "$limit" "$PYTHON" scripts/torch_speed.py --device "$device" \
    --dtype "$precision" --config "$configs" --reps "$reps" --json "$out/torch-$precision.json" \
    >>"$out/check.log" 2>&1; then
    failures+=("torch_speed.py $precision")
    log "  failed: $(tail -1 "$out/check.log" | cut -c1-300)"
  fi
done
rm -rf "$run_dir"

# --- 4. the table -----------------------------------------------------------------------
"$PYTHON" - "$out" f32 "$half" "$device" "$config" "$(value commit)" >>"$summary" <<'PY'
import json, os, sys

out, full, half, device, config, commit = sys.argv[1:]


def load(who, precision):
    try:
        with open(os.path.join(out, f"{who}-{precision}.json")) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None, {}
    rows = {(m["name"], m["batch"]): m["images_per_second"] for m in report["measurements"]}
    return report, rows


reports = {(w, p): load(w, p) for w in ("diffad", "torch") for p in (full, half)}
steps = next((r["ddim_steps"] for r, _ in reports.values() if r), "?")
torch_report = next((r for (w, _), (r, _) in reports.items() if w == "torch" and r), {}) or {}
ours_report = next((r for (w, _), (r, _) in reports.items() if w == "diffad" and r), {}) or {}
labels = [
    (("unet_forward", 1), "UNet forward, batch 1"),
    (("unet_forward", 8), "UNet forward, batch 8"),
    (("ddim_reconstruction", 8), f"DDIM-{steps} reconstruction, batch 8"),
    (("predict", 8), f"predict (DDIM-{steps}), batch 8"),
]


def cell(v):
    return "failed" if v is None else f"{v:.2f}"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}x"


print(f"## Speed on {device}: ours (diffad {commit}) / PyTorch, images/s")
print()
size = ours_report.get("image_size") or torch_report.get("image_size") or "?"
reps = (ours_report or torch_report).get("options", {}).get("reps", "?")
notes = [f"`{config}` config, {size}x{size} images; median of {reps} timed calls after 1 warm-up"]
if torch_report:
    notes.append(f"torch {torch_report['torch_version']}, diffusers {torch_report['diffusers_version']}")
    if torch_report.get("gpu"):
        notes.append(torch_report["gpu"])
    if device == "cpu":
        notes.append(f"{torch_report['threads']} CPU threads")
    notes.append("float32 with TF32" if torch_report.get("tf32") else "float32 without TF32 on both sides")
print("; ".join(notes) + ".")
print()
print(f"| measurement | ours {full} | torch {full} | ratio | ours {half} | torch {half} | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for key, label in labels:
    cells = []
    for p in (full, half):
        ours = reports[("diffad", p)][1].get(key)
        theirs = reports[("torch", p)][1].get(key)
        cells += [cell(ours), cell(theirs), ratio(ours, theirs)]
    print(f"| {label} | " + " | ".join(cells) + " |")
print()
PY

if [ "${#failures[@]}" -eq 0 ]; then
  echo "All checks passed." >>"$summary"
else
  echo "Failed: $(printf '%s, ' "${failures[@]}" | sed 's/, $//')." >>"$summary"
fi
log "done in $((SECONDS - start)) s; results in $out"
echo
cat "$summary"
[ "${#failures[@]}" -eq 0 ]
