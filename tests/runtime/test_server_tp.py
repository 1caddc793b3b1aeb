"""``--tp-size 2`` on the real server (SmolLM2, fp32, CPU): the vocabulary-sharded LM head gives the candidate logits
and the tokens of ``--tp-size 1`` for the same seeded ESamp requests (the seed fixes the noise)."""
import json
from collections import Counter

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


def test_an_esamp_error_under_tp2_is_contained_on_both_ranks_alike(tmp_path):
    """Injected faults (predict, sample, update, NaN taps) under --tp-size 2: every request is answered, the errors
    are counted, and both ranks took the same path on every row (the fault draws are seeded alike on each rank and
    the taps are replicated, so a rank never falls back alone -- which would desynchronise its tokens and its
    all-reduce from the other's)."""
    trace = tmp_path / "faults.jsonl"
    args = ["--dtype", "float32", "--esamp-bank-slots", "2", "--log-level", "warning", "--disable-radix-cache",
            "--tp-size", "2", "--esamp-debug-faults", "predict:0.1,sample:0.1,update:0.1,nan_taps:0.1"]
    with running_server(args, tmp_path / "faults.log", env_extra={"SGLANG_ESAMP_STEP_TRACE": str(trace)}) as (
            base, _proc):
        for seed in (1, 2, 3):
            body = json.loads(json.dumps(BODY))
            body["sampling_params"]["sampling_seed"] = seed
            r = requests.post(base + "/generate", json=body, timeout=600)
            assert r.status_code == 200, r.text
        total = requests.get(base + "/esamp/stats", timeout=60).json()["total"]
        assert total["faults_injected"] > 0 and total["step_errors"] > 0
        assert total["candidate_rows_reweighted"] > 0
        r = requests.post(base + "/generate", json={**BODY, "sampling_params": {**BODY["sampling_params"],
                                                                                  "max_new_tokens": 4}}, timeout=600)
        assert r.status_code == 200, r.text
    rows = Counter(x for x in trace.read_text().splitlines())
    assert rows and set(rows.values()) == {2}, "a row was traced by one TP rank only"
