"""bench_quality end to end against one real SmolLM2 server (CI smoke test; no statistical assertion).

One server with the shipped warm start; the harness runs humaneval, gsm8k and open prompts with --limit 2 --n 2 for
a plain arm, the sharpening control and one ESamp arm, then again to show that everything is served from the
cache. The checks: the JSON schema, finite perplexities, ESamp work in the ESamp arm and none in the plain arm
(per-sample meta_info and the server counters over each block), and the HumanEval checker on a known-correct and
a wrong solution.
"""
import json
import os
import math
import time

import pytest

from tests.server_utils import running_server

PLAIN, COLD, SHARPEN, ESAMP = "t1.0", "t0.8", "sharpen_b0.25", "esamp_b0.25_warm"
METHODS = (PLAIN, COLD, SHARPEN, ESAMP)
TASKS = ("humaneval", "gsm8k", "open")


def test_humaneval_checker_passes_a_correct_solution_and_fails_a_wrong_one():
    from sglang_esamp.bench.quality.tasks import HumanEval

    task = HumanEval()
    problem = task.load(limit=1)[0]
    full = problem.data["prompt"] + problem.data["canonical_solution"]
    assert task.score(problem, f"Here it is:\n```python\n{full}```\n")["correct"] is True
    assert task.score(problem, problem.data["canonical_solution"])["correct"] is True   # a body continues the prompt
    wrong = "```python\ndef has_close_elements(numbers, threshold):\n    return not numbers\n```"
    assert task.score(problem, wrong)["correct"] is False
    loop = "```python\ndef has_close_elements(numbers, threshold):\n    while True:\n        pass\n```"
    from sglang_esamp.bench.quality.code_exec import check_humaneval
    from sglang_esamp.bench.quality.tasks import extract_code

    r = check_humaneval(problem.data, extract_code(loop, "has_close_elements"), timeout_s=2)
    assert not r.passed and r.result == "timed out"


def test_gsm8k_checker_and_pass_at_k():
    from sglang_esamp.bench.quality.metrics import pass_at_k
    from sglang_esamp.bench.quality.tasks import GSM8K

    task = GSM8K()
    problem = task.load(limit=1)[0]
    gold = problem.data["gold"]
    assert task.score(problem, f"Adding up, the answer is \\boxed{{{gold}}}.")["correct"] is True
    assert task.score(problem, "The answer is \\boxed{123456789}.")["correct"] is False
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 2) == pytest.approx(0.5)


def test_method_names_round_trip():
    from sglang_esamp.bench.quality.methods import PRESETS, parse_method, resolve_methods

    assert len(resolve_methods("all")) == len(PRESETS["all"]) == 8 + 16
    m = parse_method("esamp_b0.25_warm_minp0.1")
    assert (m.family, m.beta, m.init, m.min_p, m.temperature) == ("esamp", 0.25, "warm", 0.1, 1.0)
    assert m.sampling_params(64, 8)["esamp"] == {"beta": 0.25, "init": "warm"}
    assert parse_method(SHARPEN).esamp_value() == {"beta": 0.25, "sharpen_only": True}
    assert "esamp" not in parse_method(PLAIN).sampling_params(64, 8)
    with pytest.raises(ValueError):
        parse_method("esamp_b0.25")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from sglang_esamp.bench.quality.cache import read_samples
    from sglang_esamp.bench.quality.cli import main

    d = tmp_path_factory.mktemp("bench-quality")
    out = d / "out"
    with running_server(["--esamp-bank-slots", "4", "--log-level", "warning", "--esamp-warm-start", "shipped"],
                        d / "server.log") as (base, _proc):
        argv = ["--base-url", base, "--tasks", ",".join(TASKS), "--limit", "2", "--n", "2",
                "--methods", ",".join(METHODS), "--max-tokens", "8", "--concurrency", "2",
                "--output", str(out), "--no-progress", "--bootstrap", "200"]
        t0 = time.time()
        rc = main(argv)
        first_s = time.time() - t0
        doc = json.loads((out / "results.json").read_text())
        samples = read_samples(out)                                      # schema v2: in samples/, not results.json
        blocks = (out / "blocks.jsonl").read_text()
        rc_again = main(argv + ["--no-embeddings", "--no-plots"])        # everything is cached now
        blocks_again = (out / "blocks.jsonl").read_text()
    report_argv = ["--report-only" if a == "--base-url" else a for a in argv if a != base]
    rc_report = main(report_argv + ["--no-embeddings", "--no-plots"])    # no server: the report from the cache
    report = json.loads((out / "results.json").read_text())
    print(f"bench_quality first run: {first_s:.0f} s")
    return {"rc": rc, "rc_again": rc_again, "doc": doc, "out": out, "blocks": blocks, "blocks_again": blocks_again,
            "rc_report": rc_report, "report": report, "samples": samples, "samples_report": read_samples(out)}


@pytest.mark.slow
def test_run_writes_the_schema_and_every_sample(bench):
    from sglang_esamp.bench.quality.report import SCHEMA

    assert bench["rc"] == 0
    doc, out = bench["doc"], bench["out"]
    assert doc["schema"] == SCHEMA and doc["model"] == "smollm2-135m-instruct"
    assert doc["server"]["warm_start"] == "shipped" and doc["errors"] == [] and doc["skipped_methods"] == {}
    assert doc["server"]["cpu_fp32_gemm"] is (os.environ.get("SGLANG_ESAMP_CPU_FP32_GEMM") == "1")   # how it was served
    assert doc["settings"]["n"] == 2 and doc["settings"]["limit"] == 2
    for name in ("results.json", "results.md", "pass_at_k.png", "frontier.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list((out / "samples").glob("*/*.jsonl"))          # packed: only .jsonl.gz remain
    assert len(list((out / "samples").glob("*/*.jsonl.gz"))) == len(TASKS) * len(METHODS)
    assert set(doc["tasks"]) == set(TASKS)
    blocks = [json.loads(line) for line in bench["blocks"].splitlines()]      # one per (task, method), as it ended
    assert sorted((b["task"], b["method"]) for b in blocks) == sorted((t, m) for t in TASKS for m in METHODS)
    for task, t in doc["tasks"].items():
        assert set(t["methods"]) == set(METHODS) and t["baseline"] == PLAIN
        for name, m in t["methods"].items():
            assert m["complete_problems"] == 2 and m["missing_problems"] == 0
            f = m["figures"]
            expected = {"vendi", "cosine", "distinct2", "distinct3", "distinct2_pair", "nll", "ppl",
                        "completion_tokens"}
            if task != "open":
                expected |= {"pass@1", "pass@2"}
            if task == "gsm8k":                               # the strict scorer beside math-verify
                expected |= {"strict_pass@1", "strict_pass@2", "strict_differs"}
            assert expected <= set(f), (task, name, sorted(f))
            assert 1.0 - 1e-6 <= f["vendi"]["mean"] <= 2.0 + 1e-6
            if task != "open":
                assert 0.0 <= f["pass@1"]["mean"] <= f["pass@2"]["mean"] <= 1.0
            assert m["tokens_per_s"] and m["tokens_per_s"] > 0
            if name != PLAIN:
                assert "vs_baseline" in m and "nll" in m["vs_baseline"]
    assert "samples" not in doc and doc["sample_files"] == {
        t: {m: f"samples/{t}/{m}.jsonl.gz" for m in METHODS} for t in TASKS}
    samples = bench["samples"]
    assert len(samples) == len(TASKS) * len(METHODS) * 2 * 2
    for s in samples:
        assert isinstance(s["text"], str) and s["completion_tokens"] >= 1 and "correct" in s["score"]
        assert (s["score"]["correct"] is None) == (s["task"] == "open")
    md = (out / "results.md").read_text()
    assert all(f"`{m}`" in md for m in METHODS)
    assert "Above the temperature line" in md


@pytest.mark.slow
def test_perplexities_are_finite(bench):
    doc = bench["doc"]
    for s in bench["samples"]:
        assert s["scored_tokens"] == s["completion_tokens"] or s["scored_tokens"] >= s["completion_tokens"] - 1, s
        assert s["nll"] is not None and math.isfinite(s["nll"]) and s["nll"] >= 0.0, s
    for t in doc["tasks"].values():
        for m in t["methods"].values():
            assert math.isfinite(m["figures"]["ppl"]["mean"]) and m["figures"]["ppl"]["mean"] >= 1.0


@pytest.mark.slow
def test_counters_show_esamp_work_only_in_esamp_arms(bench):
    doc = bench["doc"]
    by_method = {}
    for s in bench["samples"]:
        by_method.setdefault(s["method"], []).append(s)
    assert all(s["esamp"] is None for s in by_method[PLAIN] + by_method[COLD])
    for s in by_method[ESAMP]:
        e = s["esamp"]
        assert e and e["steps"] > 0 and not e.get("fallback") and e.get("init", "warm") == "warm"
        assert e.get("rows", 1) >= 1 and e.get("multi_candidate_rows", 0) <= e.get("rows", 1 << 30)
    for s in by_method[SHARPEN]:
        assert s["esamp"] and s["esamp"].get("sharpen_only", True) is True
    for task, t in doc["tasks"].items():
        plain = t["methods"][PLAIN]["server_counters_delta"]
        esamp = t["methods"][ESAMP]["server_counters_delta"]
        sharpen = t["methods"][SHARPEN]["server_counters_delta"]
        assert plain["updates"] == 0 and plain["candidate_rows_reweighted"] == 0, (task, plain)
        assert esamp["updates"] > 0 and esamp["candidate_rows_reweighted"] > 0, (task, esamp)
        assert esamp["finite_losses"] > 0 and esamp.get("nonfinite_losses", 0) == 0, (task, esamp)
        assert sharpen["updates"] == 0 and sharpen["candidate_rows_reweighted"] > 0, (task, sharpen)
        share = t["methods"][ESAMP]["figures"].get("multi_candidate_share") or {}
        assert share.get("mean") is None or 0.0 <= share["mean"] <= 1.0


@pytest.mark.slow
def test_a_second_run_is_served_from_the_cache(bench):
    assert bench["rc_again"] == 0
    assert bench["blocks_again"] == bench["blocks"]          # no request was sent again


@pytest.mark.slow
def test_frontier_gaps_place_the_other_methods_against_the_temperature_line(bench):
    for task, t in bench["doc"]["tasks"].items():
        fr = t["frontier"]
        assert fr["sweep"] == [COLD, PLAIN], task
        assert set(fr["gaps"]) == {SHARPEN, ESAMP}, task
        pairs = {"vendi vs nll", "distinct2 vs nll", "distinct2_pair vs nll"} | (set() if task == "open" else
                                                        {"vendi vs pass@1", "distinct2 vs pass@1", "pass@2 vs pass@1"})
        assert set(fr["gaps_concave"]) == set(fr["gaps"]), task
        for name, per in [*fr["gaps"].items(), *fr["gaps_concave"].items()]:
            assert set(per) == pairs, (task, name)
            for g in per.values():
                assert g is None or (0.0 <= g["inside"] <= 1.0 and g["problems"] <= 2), g
                if g and g["gap"] is not None:      # inside the sweep: the gap is read off the line there
                    assert math.isfinite(g["gap"]) and math.isfinite(g["line"])


@pytest.mark.slow
def test_a_report_only_rebuild_keeps_the_generation_command(bench):
    assert bench["rc_report"] == 0
    doc, report = bench["doc"], bench["report"]
    assert doc["generation_command"] == doc["command"] and "--base-url" in doc["command"]
    # the rebuild follows the cached rerun: its generation command is that run's, not the rebuild's
    assert "--report-only" in report["command"] and "--report-only" not in report["generation_command"]
    assert "--base-url" in report["generation_command"]
    # both generating runs are kept, oldest first; the rebuild added none
    gens = report["generation_commands"]
    assert len(gens) == 2 and gens[0] == doc["command"] and gens[1] == report["generation_command"]
    assert "--no-plots" in gens[1] and "--no-plots" not in gens[0]
    assert [s["text"] for s in bench["samples_report"]] == [s["text"] for s in bench["samples"]]
