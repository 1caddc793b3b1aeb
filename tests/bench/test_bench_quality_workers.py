"""bench_quality --workers 2: two self-started SmolLM2 servers side by side, the methods split between them (CI smoke
test of the mechanics; no statistical assertion)."""
import json

import pytest

PLAIN, ESAMP = "t1.0", "esamp_b0.25_random"


@pytest.mark.slow
def test_two_workers_split_the_methods_and_keep_each_blocks_counters_its_own(tmp_path):
    from sglang_esamp.bench_quality.cli import main

    out = tmp_path / "out"
    rc = main(["--model", "smollm2-135m-instruct", "--workers", "2",
               "--server-arg=--esamp-bank-slots 2 --log-level warning", "--tasks", "gsm8k", "--limit", "1",
               "--n", "2", "--max-tokens", "8", "--concurrency", "1", "--methods", f"{PLAIN},{ESAMP}",
               "--output", str(out), "--no-progress", "--no-embeddings", "--no-plots", "--bootstrap", "50"])
    assert rc == 0
    assert (out / "server.log").exists() and (out / "server-1.log").exists()
    blocks = {b["method"]: b for b in map(json.loads, (out / "blocks.jsonl").read_text().splitlines())}
    assert set(blocks) == {PLAIN, ESAMP}
    assert {b["workers"] for b in blocks.values()} == {2}
    assert blocks[PLAIN]["server"] != blocks[ESAMP]["server"]         # one method per server
    # each server ran one method, so its counter delta is that method's alone
    assert blocks[ESAMP]["counters_delta"]["esamp_steps"] > 0 and blocks[ESAMP]["counters_delta"]["rows_trained"] > 0
    assert blocks[PLAIN]["counters_delta"]["esamp_steps"] == 0 and blocks[PLAIN]["counters_delta"]["rows_trained"] == 0
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["server"]["workers"]) == 2 and doc["errors"] == []
    for name in (PLAIN, ESAMP):
        m = doc["tasks"]["gsm8k"]["methods"][name]
        assert m["complete_problems"] == 1 and m["tokens_per_s"] > 0
        assert m["generation"]["tokens_per_s_workers"] == [2]           # no one-worker block to time it by
