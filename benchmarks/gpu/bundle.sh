#!/usr/bin/env bash
# Build the GPU bundle (issue #39): gpu_bundle/ (git-ignored; name it in a device call's `carry`) holds, in one solid
# bundle.tar.xz, the cp312 manylinux wheels the lent GPU machine lacks for SGLang 0.5.23's text server -- sglang
# itself trimmed of what a Llama/Qwen2 server never loads -- plus the Qwen2.5 tokenizer and config (no weights).
# Prints the bundle size and the total that would travel (tracked + untracked-not-ignored + shared/ + bundle,
# counted as the device tool copies them: benchmarks/gpu/travel.py); fails above 56 MiB (8 under the device's 64).
# The decisions (what the image is assumed to have, what is dropped, why solid xz) are in benchmarks/gpu/bundle.py.
#   bash benchmarks/gpu/bundle.sh            download (pip, package registry), trim, pack, measure
#   bash benchmarks/gpu/bundle.sh --check    no network: validate the plan and the size arithmetic (CI); --dry-run
#                                            is the same
# On the device: python3 benchmarks/gpu/bundle.py install --target /tmp/esamp && export PYTHONPATH=/tmp/esamp/site
# (benchmarks/gpu/lease.sh's server stage does this).
set -euo pipefail
cd "$(dirname "$0")/../.."
# $PYTHON when set, else the project venv, else python3
PY="${PYTHON:-}"; [ -z "$PY" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python; PY="${PY:-python3}"
case "${1:-}" in
  --check|--dry-run) shift; exec "$PY" benchmarks/gpu/bundle.py check "$@" ;;
  "") exec "$PY" benchmarks/gpu/bundle.py build ;;
  *) exec "$PY" benchmarks/gpu/bundle.py build "$@" ;;
esac
