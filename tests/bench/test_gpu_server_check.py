"""benchmarks/gpu/server_check.sh, the prepared command of a lent GPU machine for the real server under CUDA graphs
(issue #39): its --dry-run runs on CPU end to end (install laid out when a bundle is built, a tiny random model, the
server and bench command lines, the bench commands parsed by bench_throughput's own CLI), and its comparison logic
is checked on synthetic answers. The GPU results themselves come only from a GPU."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_server_check", ROOT / "benchmarks" / "gpu" / "server_check.py")
gsc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gsc)


@pytest.mark.slow
def test_the_dry_run_runs_every_cpu_step(tmp_path):
    env = dict(os.environ, OUT_DRY=str(tmp_path / "out"), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    proc = subprocess.run(["bash", "benchmarks/gpu/server_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dry run done" in proc.stdout
    summary = json.loads((tmp_path / "out" / "gpu_server_check.json").read_text())
    steps = summary["steps"]
    assert summary["dry_run"] is True and steps["env"]["python"]
    assert "site" in steps["install"] or "skipped" in steps["install"]
    assert steps["model"]["layers"] == 2 and steps["model"]["params"] > 0
    servers = steps["plan"]["servers"]
    assert set(servers) == {"graph", "eager", "bench", "stock"}
    for name, s in servers.items():
        argv = " ".join(s["argv"])
        assert "--attention-backend triton" in argv and "--sampling-backend pytorch" in argv
        assert ("--disable-cuda-graph" in argv) == (name == "eager")
        assert s["parsed"] is True          # SGLang's own parser takes the flags (0.5.23 refuses a bare
                                            # --cuda-graph-max-bs as ambiguous)
        assert s["env"]["SGLANG_ESAMP_CUDA_STANDIN"] == "1" and s["env"]["SGLANG_ESAMP_ALLOW_CUDA_GRAPH"] == "1"
    assert servers["stock"]["env"]["SGLANG_ESAMP"] == "0"
    assert "--decode-log-interval 4" in " ".join(servers["graph"]["argv"])   # its replayed steps show in its log
    assert set(steps["plan"]["benches"]) == {"16x8"}
    assert "SGLANG_ESAMP_STEP_TRACE" in servers["graph"]["env"] and "SGLANG_ESAMP_STEP_TRACE" not in \
        servers["bench"]["env"]
    # bench_throughput takes the bench commands as they are, against the running bench and stock servers
    for tag, prompts in (("16x8", 16),):
        dry = steps["plan"][f"bench_{tag}_dry"]
        assert dry["rc"] == 0 and dry["prompts"] == prompts
        assert dry["esamp_url"].endswith(":" + port_of(servers["bench"])) and \
            dry["stock_url"].endswith(":" + port_of(servers["stock"]))


def port_of(server):
    return server["argv"][server["argv"].index("--port") + 1]


def _resp(ids_by_sibling):
    return [{"output_ids": ids, "meta_info": {"id": f"r{i}"}} for i, ids in enumerate(ids_by_sibling)]


def _trace(prefix, rows_by_sibling):
    out = {}
    for i, rows in enumerate(rows_by_sibling):
        out[f"{prefix}{i}"] = [{"rid": f"{prefix}{i}", "cand_ids": c, "cand_logits": lg, "token": t}
                               for c, lg, t in rows]
    return out


def test_seeded_comparison():
    rows = [[([1, 2], [3.0, 2.0], 1), ([5, 6], [1.0, 0.5], 6)], [([1, 2], [3.0, 2.0], 2), ([7], [4.0], 7)]]
    g = _resp([[1, 6], [2, 7]])
    e = _resp([[1, 6], [2, 7]])
    # response ids differ from the trace rids here, so the trace order maps siblings
    same = gsc.compare_seeded(g, e, _trace("g", rows), _trace("e", rows))
    assert same["ok"] and same["same_tokens"] and same["max_abs_logit_delta"] == 0.0
    assert same["trace_mapping"] == ["trace order"] and same["traced_steps_compared"] == 4
    # a token flips on a near tie: the logits before it agree within the tolerance -> still ok
    near = [[([1, 2], [3.0, 2.0], 1), ([5, 6], [1.0, 0.95], 5)], rows[1]]
    noisy = [[([1, 2], [3.02, 2.0], 1), ([5, 6], [0.97, 0.98], 6)], rows[1]]
    flip = gsc.compare_seeded(_resp([[1, 5], [2, 7]]), _resp([[1, 6], [2, 7]]), _trace("g", near),
                              _trace("e", noisy))
    assert not flip["same_tokens"] and flip["ok"] and flip["first_token_difference"] == [1, None]
    assert abs(flip["max_abs_logit_delta"] - 0.03) < 1e-9
    # different candidate sets: a real difference, not a rounding one
    other = [[([1, 3], [3.0, 2.0], 1)], rows[1]]
    bad = gsc.compare_seeded(_resp([[1, 6], [2, 7]]), _resp([[3, 6], [2, 7]]), _trace("g", rows),
                             _trace("e", other))
    assert not bad["ok"] and bad["candidate_set_mismatches"] == 1
