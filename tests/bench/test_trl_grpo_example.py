"""examples/trl_grpo.py end to end, as a user runs it (its own process, its own ESamp server, TRL's GRPOTrainer,
W&B offline): one tiny GRPO step on SmolLM2, the summary table last, nothing printed after it."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_grpo.py"


def test_trl_grpo_example_trains_and_ends_with_its_table(tmp_path):
    out = tmp_path / "run.json"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    run = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "1", "--prompts", "1", "--n", "2",
                          "--max-tokens", "8", "--wandb", "--output", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    for noise in ("Traceback", "resource_tracker", "leaked", "Logging error"):
        assert noise not in run.stderr, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[-1].startswith("weights pushed after steps: none;") and "weight_updates" in lines[-1]
    assert lines[-2].split()[0] == "1"                            # the table's row for step 1, right before
    assert "it/s" in run.stderr or "s/it" in run.stderr           # TRL's progress bar
    saved = json.loads(out.read_text())
    (step,) = saved["steps"]
    assert 0.0 <= step["reward"] <= 1.0 and 0.0 <= step["mixed"] <= 1.0
    assert all(math.isfinite(step[k]) for k in ("is_mean", "is_min", "is_max", "step_s"))
    assert saved["counters"]["updates"] > 0 and saved["pushes"] == []    # one step: nothing to push yet
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run"
