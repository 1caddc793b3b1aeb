#!/usr/bin/env bash
# The real SGLang server with ESamp on the lent GPU machine, CUDA graphs on (issue #39), as one prepared command:
# installs the carried bundle (gpu_bundle/, built here by benchmarks/gpu/bundle.sh) into a temp dir, builds a
# random-weight Qwen2.5-0.5B-config model on the device, starts the ESamp servers (triton attention, pytorch
# sampling, the CUDA stand-in for sgl_kernel, SGLANG_ESAMP_ALLOW_CUDA_GRAPH=1), checks 0 tap misses and ESamp's work
# counters, compares a seeded ESamp request with and without CUDA graphs, and runs bench_throughput at 16 x n=8
# (128 tokens, min-p 0.05). Stage (a) of benchmarks/gpu/lease.sh, the one prepared command of a lease; alone, it
# writes to ${OUT:-benchmarks/results/gpu_server}: the summary JSON, the bench JSON + PNG, logs.tar.gz.
# Steps and decisions: benchmarks/gpu/server_check.py.
#
#   a lease: bash benchmarks/gpu/lease.sh $OUT   (benchmarks/gpu/README.md)
#   here:    bash benchmarks/gpu/server_check.sh --dry-run     (CPU, < 1 min: install laid out, tiny model, plan)
# Extra flags go to the Python script (--native-ops, --keep-jit, --deadline-s N).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
PY="${PYTHON:-}"
if [ "${1:-}" = "--dry-run" ]; then
  [ -z "$PY" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
  export OUT="${OUT_DRY:-/tmp/esamp-gpu-server-dry}"
fi
PY="${PY:-python3}"
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu/server_check.py "$@"
