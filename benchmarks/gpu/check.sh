#!/usr/bin/env bash
# The GPU check, as one script for a CUDA machine with PyTorch + Triton but no SGLang (under 8 minutes on an H200):
#   1. the kernel tests (they run the kernels in Triton's interpreter against the torch references), 2.
#   esamp_kernels.bench: the kernels compiled for real, timed against the references at serving shapes, with the
#   largest |triton - torch| of every shape recorded, 3. the async CUDA-stream update against serial at the
#   algorithm level (benchmarks/gpu/async_update_check.py: ESamp's overhead per step over a no-ESamp loop, same tokens
#   and weights, the top ops of a serial step), 4. ESamp's taps
#   under CUDA-graph capture and replay (benchmarks/gpu/tap_graph_check.py: rows equal eager, a graph without taps is a
#   miss), 5. ESamp's step against a graph-replayed forward of the Qwen2.5-0.5B and -7B shapes
#   (benchmarks/gpu/esamp_graph_bench.py: off / eager / graphed, serial and async; same tokens and weights graphed as
#   eager).
# Results land in ${OUT:-benchmarks/results/gpu}. Usage: bash benchmarks/gpu/check.sh [--dry-run]
# (--dry-run: CPU, interpreter, tiny sizes -- checks the script itself on a machine without a GPU).
# STEPS="2 5" runs only those steps (a short device lease: the numbers that are still missing first).
# each step runs even if an earlier one failed (one device lease: a failed step must not hide the others)
set -uo pipefail
FAILED=()
cd "$(dirname "$0")/../.." || exit 2
OUT="${OUT:-benchmarks/results/gpu}"
[ "${1:-}" = "--dry-run" ] && OUT="${OUT_DRY:-/tmp/esamp-gpu-check-dry}"
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
DRYFLAG=(); [ "$DRY" = 1 ] && DRYFLAG=(--dry-run)
# $PYTHON when set; else the project venv in a dry run, the image's python on the device
PY="${PYTHON:-}"; [ -z "$PY" ] && [ -x .venv/bin/python ] && [ "$DRY" = 1 ] && PY=.venv/bin/python; PY="${PY:-python3}"
mkdir -p "$OUT"
# the repository's packages without installing them (no SGLang is needed for these checks)
export PYTHONPATH="$PWD:$PWD/kernels${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY" = 1 ]; then export TRITON_INTERPRET=1; else unset TRITON_INTERPRET; fi
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/env.txt"
want() { [[ " ${STEPS:-1 2 3 4 5} " == *" $1 "* ]]; }
want 1 && {
echo "== 1. kernel tests"
timeout 300 "$PY" -m pytest -q -rf --tb=short -p no:cacheprovider tests/kernels > "$OUT/kernel_tests.txt" 2>&1 \
  || FAILED+=(kernel_tests)
tail -5 "$OUT/kernel_tests.txt"
}
want 2 && {
echo "== 2. kernel bench"
timeout 180 "$PY" -m esamp_kernels.bench --out "$OUT/kernel_bench" "${DRYFLAG[@]}" 2>&1 \
  | tail -30 | tee "$OUT/kernel_bench.txt" || FAILED+=(kernel_bench)
}
want 3 && {
echo "== 3. async vs serial update"
timeout 180 "$PY" benchmarks/gpu/async_update_check.py "${DRYFLAG[@]}" --profile 5 --out "$OUT/async_update_check" \
  2>&1 | tee "$OUT/async_update.txt" || FAILED+=(async_update)
}
want 4 && {
echo "== 4. taps under CUDA-graph replay"
timeout 120 "$PY" benchmarks/gpu/tap_graph_check.py "${DRYFLAG[@]}" --out "$OUT/tap_graph_check.json" \
  2>&1 | tee "$OUT/tap_graph_check.txt" || FAILED+=(tap_graph)
}
want 5 && {
echo "== 5. ESamp step vs a graph-replayed forward"
timeout 300 "$PY" benchmarks/gpu/esamp_graph_bench.py "${DRYFLAG[@]}" --out "$OUT/esamp_graph_bench" \
  2>&1 | tee "$OUT/esamp_graph_bench.txt" || FAILED+=(esamp_graph_bench)
}
if [ ${#FAILED[@]} -gt 0 ]; then echo "gpu_check FAILED steps: ${FAILED[*]} ($OUT)"; exit 1; fi
echo "gpu_check done: $OUT"
