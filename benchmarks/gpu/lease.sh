#!/usr/bin/env bash
# One GPU lease, one command (issue #45): the real SGLang server with CUDA graphs on, the graphed ESamp step at the
# 0.5B and 7B shapes, the Triton kernels -- each stage under a watchdog, at most 540 s in all, every stage's JSON
# and log in OUTDIR as soon as it ends, then summary.json and a table. The stages: benchmarks/gpu/lease_stages.py;
# the driver: benchmarks/gpu/lease.py; the device call: benchmarks/gpu/README.md.
#
#   device:  bash benchmarks/gpu/lease.sh $OUT                 (carry gpu_bundle, built by benchmarks/gpu/bundle.sh)
#   here:    bash benchmarks/gpu/lease.sh --dry-run [OUTDIR]   (CPU rehearsal of every stage's control flow)
# OUTDIR defaults to $OUT. More flags go to lease.py: --stages server,graph  --budget graph=200
# --fault STAGE=raise|hang  --total-s S.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
DRY=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && DRY=1; done
# $PYTHON when set; else the project venv in a dry run, the image's python3 on the device
PY="${PYTHON:-}"
[ -z "$PY" ] && [ "$DRY" = 1 ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
PY="${PY:-python3}"
# the repository's packages without installing them (the server stage adds the bundle's site for its servers)
export PYTHONPATH="$PWD:$PWD/kernels${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ "$DRY" = 1 ]; then export TRITON_INTERPRET=1; else unset TRITON_INTERPRET; fi
exec "$PY" benchmarks/gpu/lease.py --python "$PY" "$@"
