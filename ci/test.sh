#!/usr/bin/env bash
# Set up the project environment (ci/setup_env.sh, idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup_env.sh
export OMP_NUM_THREADS=1 SGLANG_USE_CPU_ENGINE=1 DS_ACCELERATOR=cpu WANDB_MODE=disabled HF_HUB_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 TORCH_EXTENSIONS_DIR="$PWD/.cache/torch_extensions"
# the embedded default model is converted once per machine, outside the timed tests
.venv/bin/python -c "from sglang_esamp.models import resolve_model; print(resolve_model('smollm2-135m-instruct'))"
exec .venv/bin/python -m pytest -q -ra --durations=15 tests "$@"
