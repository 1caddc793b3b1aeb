#!/usr/bin/env bash
# Build the GPU bundle (issue #39): gpu_bundle/ (git-ignored; name it in a device call's `carry`) holds, in one solid
# bundle.tar.xz, the cp312 manylinux wheels the lent GPU machine lacks for SGLang 0.5.23's text server -- sglang
# itself trimmed of what a Llama/Qwen2 server never loads -- plus the Qwen2.5 tokenizer and config (no weights).
# Prints the bundle size and the total that would travel (tracked + untracked-not-ignored + bundle); fails above
# 64 MiB. The decisions (what the image is assumed to have, what is dropped, why solid xz) are in the docstring of
# benchmarks/gpu_bundle.py.
#   bash benchmarks/gpu_bundle.sh            download (pip, package registry), trim, pack, measure
#   bash benchmarks/gpu_bundle.sh --check    no network: validate the plan and the size arithmetic (CI); --dry-run
#                                            is the same
# On the device: python3 benchmarks/gpu_bundle.py install --target /tmp/esamp && export PYTHONPATH=/tmp/esamp/site
# (benchmarks/gpu_server_check.sh does this).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"; [ -x .venv/bin/python ] && PY=.venv/bin/python
case "${1:-}" in
  --check|--dry-run) shift; exec "$PY" benchmarks/gpu_bundle.py check "$@" ;;
  "") exec "$PY" benchmarks/gpu_bundle.py build ;;
  *) exec "$PY" benchmarks/gpu_bundle.py build "$@" ;;
esac
