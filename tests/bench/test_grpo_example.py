"""examples/grpo_rollouts.py end to end on SmolLM2 (tiny settings): both arms, rewards, advantages, logprobs."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpo_rollouts.py"


def test_grpo_example_runs_both_arms_and_ends_clean(tmp_path):
    """Run as a user runs it: its own process, so what Python prints at exit (resource tracker, engine
    shutdown) is part of the output; the table must be the last thing printed."""
    out = tmp_path / "grpo.json"
    run = subprocess.run([sys.executable, str(EXAMPLE), "--prompts", "1", "--n", "2", "--max-tokens", "16",
                          "--output", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout
    assert "plain" in printed and "esamp" in printed and "pass@2" in printed
    for noise in ("Traceback", "resource_tracker", "leaked", "Logging error"):
        assert noise not in run.stderr, run.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["args"]["n"] == 2
    results = saved["results"]
    for arm, want_steps in (("plain", False), ("esamp", True)):
        samples = results[arm]["rows"][0]["samples"]
        assert len(samples) == 2
        for s in samples:
            assert math.isfinite(s["logprob_sum"]) and s["logprob_sum"] <= 0 and s["tokens"] > 0
            assert (s["esamp"]["steps"] > 0) == want_steps     # only the ESamp arm trains a distiller
            assert s["esamp"]["seed_stream"] in (0, 1)
            if want_steps:
                assert s["esamp"]["init"] == "random"             # the default: the authors' maths setting (docs/rl.md)
        assert abs(sum(s["advantage"] for s in samples)) < 1e-9     # group-normalised
        assert 1 <= results[arm]["table"][0]["distinct"] <= 2
