"""benchmarks/gpu/check.sh, the one prepared script of a lent GPU machine, runs end to end in its --dry-run (CPU,
Triton interpreter, tiny shapes): every step passes and leaves its results, so a device lease is not spent on a
broken script. The GPU numbers themselves come only from a GPU (docs/performance.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_on_cpu(tmp_path):
    env = dict(os.environ, OUT_DRY=str(tmp_path), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    proc = subprocess.run(["bash", "benchmarks/gpu/check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu_check done" in proc.stdout
    bench = json.loads((tmp_path / "esamp_graph_bench_dry.json").read_text())
    cell = bench["cells"]["tinyx16"]
    assert set(cell["arms"]) == {"off", "eager_serial", "graph_serial", "eager_async", "graph_async"}
    assert all(c == {"same_tokens": True, "same_weights": True} for c in cell["graph_vs_eager"].values())
    graphed = cell["arms"]["graph_serial"]
    assert graphed["updates"] > 0 and graphed["rows_reweighted"] > 0 and graphed["graph_eager_steps"] == 0
    assert graphed["graph_static_steps"] == graphed["updates"]           # on CPU the replay path runs eagerly
    assert json.loads((tmp_path / "tap_graph_check.json").read_text())
    assert (tmp_path / "esamp_graph_bench_dry.png").stat().st_size > 0
