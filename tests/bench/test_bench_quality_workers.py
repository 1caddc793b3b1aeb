"""bench_quality --workers: how servers pull blocks (task x method) from one queue, and two self-started SmolLM2
servers side by side (CI smoke test of the mechanics; no statistical assertion)."""
import json
import threading

import pytest

PLAIN, ESAMP = "t1.0", "esamp_b0.25_random"


class _BlockLog:
    """Stands in for a server's Runner in the scheduling test: records the blocks it is given; the "slow" block
    waits until the other server has run the last one, which it can only do by pulling it from the shared queue."""

    def __init__(self, name, ran, last_done):
        self.name, self.ran, self.last_done = name, ran, last_done

    def run(self, tasks, problems, methods):
        for task in tasks:
            for method in methods:
                if method == "fail":
                    raise RuntimeError("block failed")
                if method == "slow":
                    assert self.last_done.wait(timeout=20), "the other server never pulled the remaining blocks"
                self.ran.append((self.name, task, method))
                if method == "last":
                    self.last_done.set()


def test_a_server_that_finishes_early_pulls_the_remaining_blocks_instead_of_idling():
    from sglang_esamp.bench.quality.cli import run_workers
    from sglang_esamp.bench.quality.runner import MainThreadCalls

    ran, last_done = [], threading.Event()
    runners = [_BlockLog("s0", ran, last_done), _BlockLog("s1", ran, last_done)]
    run_workers(runners, ["gsm8k"], {}, ["slow", "cached", "mid", "last"], MainThreadCalls())
    assert sorted(m for _, _, m in ran) == ["cached", "last", "mid", "slow"]         # each block once
    assert [(s, m) for s, _, m in ran] == [("s1", "cached"), ("s1", "mid"), ("s1", "last"), ("s0", "slow")]


def test_a_failing_server_stops_but_the_others_finish_the_queue_and_the_error_is_raised():
    from sglang_esamp.bench.quality.cli import run_workers
    from sglang_esamp.bench.quality.runner import MainThreadCalls

    ran, last_done = [], threading.Event()
    runners = [_BlockLog("s0", ran, last_done), _BlockLog("s1", ran, last_done)]
    with pytest.raises(RuntimeError, match="block failed"):
        run_workers(runners, ["gsm8k"], {}, ["fail", "a", "b", "last"], MainThreadCalls())
    assert [(s, m) for s, _, m in ran] == [("s1", "a"), ("s1", "b"), ("s1", "last")]


@pytest.mark.slow
def test_two_workers_run_a_method_each_and_keep_each_blocks_counters_its_own(tmp_path):
    from sglang_esamp.bench.quality.cli import main

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


class _PartLog:
    """A server's Runner that records which problems of which block it was given."""

    def __init__(self, name, ran):
        self.name, self.ran = name, ran

    def run(self, tasks, problems, methods):
        (task,), (method,) = tasks, methods
        self.ran.append((self.name, method, tuple(problems[task])))


def test_a_lone_block_is_shared_by_the_servers_instead_of_one_idling():
    """The last block used to run on one server while the other idled (HumanEval T 0.7: hours on one core)."""
    from sglang_esamp.bench.quality.cli import _work_items, run_workers
    from sglang_esamp.bench.quality.runner import MainThreadCalls

    ran = []
    run_workers([_PartLog("s0", ran), _PartLog("s1", ran)], ["he"], {"he": list(range(5))}, ["t0.7"],
                MainThreadCalls())
    assert sorted(ran) == [("s0", "t0.7", (0, 1, 2)), ("s1", "t0.7", (3, 4))]
    # every problem once, parts in order; fewer problems than servers: no empty parts; no problems: one item
    items = _work_items(["a", "b"], {"a": [1, 2, 3], "b": [7]}, ["m1", "m2"], 2)
    assert [(t, m, tuple(p)) for t, m, p in items] == [
        ("a", "m1", (1, 2)), ("a", "m1", (3,)), ("a", "m2", (1, 2)), ("a", "m2", (3,)),
        ("b", "m1", (7,)), ("b", "m2", (7,))]
    assert _work_items(["a"], {}, ["m"], 3) == [("a", "m", [])]
