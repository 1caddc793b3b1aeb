"""examples/grpo_rollouts.py end to end on SmolLM2 (tiny settings): both arms, rewards, advantages, logprobs."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpo_rollouts.py"


def test_grpo_example_runs_both_arms(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("grpo_rollouts", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "grpo.json"
    results = mod.main(["--prompts", "1", "--n", "2", "--max-tokens", "16", "--output", str(out)])
    printed = capsys.readouterr().out
    assert "plain" in printed and "esamp" in printed and "pass@2" in printed
    assert json.loads(out.read_text())["args"]["n"] == 2
    for arm, want_steps in (("plain", False), ("esamp", True)):
        samples = results[arm]["rows"][0]["samples"]
        assert len(samples) == 2
        for s in samples:
            assert math.isfinite(s["logprob_sum"]) and s["logprob_sum"] <= 0 and s["tokens"] > 0
            assert (s["esamp"]["steps"] > 0) == want_steps     # only the ESamp arm trains a distiller
            assert s["esamp"]["seed_stream"] in (0, 1)
        assert abs(sum(s["advantage"] for s in samples)) < 1e-9     # group-normalised
        assert 1 <= results[arm]["table"][0]["distinct"] <= 2
