"""The lease's stages read their scripts' JSON back into key numbers (benchmarks/gpu/lease_stages.py): the kernel
stage on the real H200 kernel bench of 2026-12-04, the graph stage's bars and the server stage's verdicts on
answers shaped as the scripts write them (the device runs themselves come only from a lent GPU)."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lease_stages", ROOT / "benchmarks" / "gpu" / "lease_stages.py")
stages = importlib.util.module_from_spec(spec)
sys.modules["lease_stages"] = stages   # its dataclasses look their module up by name
spec.loader.exec_module(stages)


def test_the_kernel_stage_reads_the_h200_bench(tmp_path):
    (tmp_path / "kernel_bench").mkdir()
    shutil.copy(ROOT / "benchmarks/results/gpu/kernel_bench/kernel_bench.json", tmp_path / "kernel_bench")
    key, result, problems = stages.kernels_collect(tmp_path)
    assert problems == [] and key["device"] == "NVIDIA H200" and result["meta"]["triton"] == "3.6.0"
    cand, fwd = key["candidate_novelty"], key["grouped_forward"]
    assert (cand["shapes"], fwd["shapes"]) == (27, 18)
    assert 5.1 < cand["speedup_min"] < 5.2 and 24.0 < cand["speedup_max"] < 24.1       # docs/performance.md
    assert cand["max_abs_diff"] < 1e-6 and fwd["max_abs_diff"] == 0.015625
    # a kernel off its reference fails the stage
    bad = json.loads((tmp_path / "kernel_bench" / "kernel_bench.json").read_text())
    bad["results"][0]["max_abs_diff"] = float("inf")
    (tmp_path / "kernel_bench" / "kernel_bench.json").write_text(json.dumps(bad))
    assert stages.kernels_collect(tmp_path)[2] == ["candidate_novelty: |triton - torch| inf over 0.0001"]


def _graph_json(path, off, serial, async_, same=True):
    arms = {"off": {"ms_per_step": off}, "graph_serial": {"ms_per_step": off * (1 + serial / 100),
                                                           "overhead_pct": serial},
            "graph_async": {"ms_per_step": off * (1 + async_ / 100), "overhead_pct": async_}}
    checks = {"serial": {"same_tokens": same, "same_weights": True}, "async": {"same_tokens": True,
                                                                              "same_weights": True}}
    cells = {"0.5bx128": {"arms": arms, "graph_vs_eager": checks},
             "7bx128": {"arms": {**arms, "graph_async": {"overhead_pct": 1.5}}, "graph_vs_eager": checks}}
    path.write_text(json.dumps({"device": "NVIDIA H100", "cells": cells}))


def test_the_graph_stage_reports_the_bars_on_the_better_graphed_arm(tmp_path):
    _graph_json(tmp_path / "esamp_graph_bench.json", off=5.0, serial=7.0, async_=5.5)
    key, _, problems = stages.graph_collect(tmp_path)
    assert problems == []
    small, big = key["0.5bx128"], key["7bx128"]
    assert small["bar_pct"] == 6.0 and small["bar_met"] is True          # async 5.5 % <= 6 %
    assert big["bar_pct"] == 2.0 and big["bar_met"] is True              # async 1.5 % <= 2 %
    _graph_json(tmp_path / "esamp_graph_bench.json", off=5.0, serial=9.0, async_=8.0, same=False)
    key, _, problems = stages.graph_collect(tmp_path)
    assert key["0.5bx128"]["bar_met"] is False                          # a finding, not a failure...
    assert len(problems) == 2 and "graphed differs from eager" in problems[0]   # ...but graphed != eager is


def test_the_server_stage_reads_the_verdicts(tmp_path):
    (tmp_path / "out").mkdir()
    summary = {"dry_run": False, "ok": True, "steps": {
        "import_check": {"ok": True}, "servers": {n: {"up": True} for n in ("graph", "eager", "bench", "stock")},
        "seeded": {"ok": True, "same_tokens": False, "max_abs_logit_delta": 0.03},
        "stats_graph": {"tap_misses": 0, "esamp_steps": 23, "updates": 23, "replayed": True},
        "stats_bench": {"tap_misses": 0, "replayed": True},
        "bench_16x8": {"result": {"ratio_on_off": {"median": 0.93}, "ratio_off_stock": {"median": 0.99},
                                  "tok_s": {"on": {"median": 9000.0}, "off": {"median": 9700.0}}}}}}
    (tmp_path / "out" / "gpu_server_check.json").write_text(json.dumps(summary))
    (tmp_path / "out" / "bench_16x8.json").write_text(json.dumps({"rounds": [1, 2, 3]}))
    key, result, problems = stages.server_collect(tmp_path)
    assert problems == [] and result["bench_16x8_full"] == {"rounds": [1, 2, 3]}
    assert key["servers_up"] == ["bench", "eager", "graph", "stock"] and key["seeded_ok"] is True
    assert key["graph_tap_misses"] == 0 and key["graph_replayed"] is True and key["bench_replayed"] is True
    assert (key["ratio_on_off"], key["ratio_off_stock"], key["tok_s_on"]) == (0.93, 0.99, 9000.0)
    summary["ok"] = False
    (tmp_path / "out" / "gpu_server_check.json").write_text(json.dumps(summary))
    assert stages.server_collect(tmp_path)[2] == ["gpu_server_check.json: ok is false"]
    assert stages.server_collect(tmp_path / "nothing")[2] == ["no gpu_server_check.json"]
