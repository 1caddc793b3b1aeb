"""The GPU micro-benchmark's CPU smoke (--dry-run) and its refusal without a GPU."""
import json
import os
import subprocess
import sys

import pytest
import torch


def _bench(*args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)  # the bench must not rely on the interpreter
    return subprocess.run([sys.executable, "-m", "esamp_kernels.bench", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


def test_dry_run_writes_json_and_plot(tmp_path):
    res = _bench("--dry-run", "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "out" / "kernel_bench.json").read_text())
    assert data["meta"]["dry_run"] is True
    ops = {r["op"] for r in data["results"]}
    assert ops == {"candidate_novelty", "grouped_forward"}
    # every shape of the dry grid: 2 H x 2 R x 2 C candidate rows, 2 H x 2 presets x 2 R forward rows
    assert sum(r["op"] == "candidate_novelty" for r in data["results"]) == 8
    assert sum(r["op"] == "grouped_forward" for r in data["results"]) == 8
    assert all(r["torch_us"] > 0 and r["triton_us"] is None for r in data["results"])
    assert (tmp_path / "out" / "kernel_bench.png").stat().st_size > 0
    assert "candidate_novelty" in res.stdout and "speedup" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_without_cuda_exits_2_with_a_message(tmp_path):
    res = _bench("--out", str(tmp_path / "x.json"), tmp_path=tmp_path)
    assert res.returncode == 2
    assert "no CUDA device" in res.stderr and "--dry-run" in res.stderr
    assert not (tmp_path / "x.json").exists()
