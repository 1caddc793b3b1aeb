"""``--tp-size 2`` on the real server (SmolLM2, fp32, CPU): the vocabulary-sharded LM head gives the candidate logits
and the tokens of ``--tp-size 1`` for the same seeded ESamp requests (the seed fixes the noise)."""
import json

import pytest
import requests

from tests.server_utils import running_server

pytestmark = pytest.mark.slow
PROMPT = "<|im_start|>user\nInvent a name for a new planet.<|im_end|>\n<|im_start|>assistant\n"
BODY = {"text": PROMPT, "sampling_params": {"temperature": 1.0, "top_k": 20, "max_new_tokens": 12, "n": 2,
                                            "ignore_eos": True, "sampling_seed": 11, "esamp": {"beta": 0.5}}}


def run(tmp_path, name, extra):
    trace = tmp_path / f"{name}.jsonl"
    args = ["--dtype", "float32", "--esamp-bank-slots", "2", "--log-level", "warning", "--disable-radix-cache",
            *extra]
    with running_server(args, tmp_path / f"{name}.log", env_extra={"SGLANG_ESAMP_STEP_TRACE": str(trace)}) as (
            base, _proc):
        r = requests.post(base + "/generate", json=BODY, timeout=600)
        assert r.status_code == 200, r.text
        stats = requests.get(base + "/esamp/stats", timeout=60).json()
    steps = [json.loads(x) for x in trace.read_text().splitlines()]
    return r.json(), stats, steps, (tmp_path / f"{name}.log").read_text()


def test_tp2_gives_the_tokens_and_candidate_logits_of_tp1(tmp_path):
    one, _, steps1, _ = run(tmp_path, "tp1", [])
    two, stats, steps2, log = run(tmp_path, "tp2", ["--tp-size", "2"])
    assert "tensor parallel   = 2 ranks" in log          # the per-rank bank memory and the shard are printed
    total = stats["total"]
    assert total["step_errors"] == 0 and total["tap_misses"] == 0 and total["candidate_rows_reweighted"] > 0
    assert all(o["meta_info"]["esamp"]["steps"] > 0 for o in two)
    assert [o["output_ids"] for o in two] == [o["output_ids"] for o in one]
    by_step = lambda steps: sorted((s["token"], s["cand_ids"], s["cand_logits"]) for s in steps)  # noqa: E731
    a, b = by_step(steps1), by_step(steps2)
    assert len(a) == 2 * 11 and len(b) == 2 * len(a)      # under TP both ranks trace every row: identically
    for x, y in zip(b[0::2], b[1::2]):
        assert x == y
    for (tok1, ids1, l1), (tok2, ids2, l2) in zip(a, b[0::2]):
        assert tok1 == tok2 and ids1 == ids2
        assert max(abs(x - y) for x, y in zip(l1, l2)) < 5e-3
