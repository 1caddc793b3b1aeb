"""benchmarks/gpu/lease.sh, the one command of a GPU lease (issue #45), rehearsed on CPU: every stage's real dry run
under the watchdog, each stage's files in the output folder, the summary; then a stage that raises and one that
hangs (ignoring SIGTERM, two orphans in sessions of their own, one without the stage's environment) -- the
others' files stay, the summary names what failed and what timed out, and the orphans are killed. The GPU
numbers themselves come only from a lent GPU."""
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("server", "graph", "kernels")


def _lease(*args, timeout=300):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    return subprocess.run(["bash", "benchmarks/gpu/lease.sh", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _stage(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


@pytest.mark.slow
def test_the_dry_run_leaves_every_stage_and_a_summary(tmp_path):
    out = tmp_path / "out"
    proc = _lease("--dry-run", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == list(STAGES)
    assert all(s["status"] == "ok" for s in summary["stages"]) and summary["ok"] is True
    for name in STAGES:
        record = _stage(out, name)
        assert record["status"] == "ok" and record["rc"] == 0 and record["result"], name
        assert (out / f"{name}.log").stat().st_size > 0
    # each stage's own results came through: the plan parsed by SGLang, graphed = eager, both kernels measured
    assert _stage(out, "server")["key"]["servers_parsed"] is True
    assert _stage(out, "graph")["key"]["tinyx16"]["graph_equals_eager"] is True
    assert _stage(out, "kernels")["key"]["candidate_novelty"]["shapes"] > 0
    with tarfile.open(out / "server_logs.tar.gz") as tf:
        assert "logs/plan.json" in tf.getnames()
    # what the device brings back: at most 8 plainly named files, all listed
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["summary.json", "server_logs.tar.gz", *(f"{s}.{x}" for s in STAGES for x in ("json",
                                                                                                       "log"))])
    assert summary["files"]["ok"] is True and sorted(summary["files"]["names"]) == names
    assert sum(s["budget_s"] for s in summary["stages"]) + 20 <= summary["total_s_limit"] == 540
    for name in STAGES:   # the printed table
        assert re.search(rf"^{name}\s+ok\s+\d+", proc.stdout, re.M), proc.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.slow
def test_a_stage_that_raises_and_one_that_hangs_leave_the_others(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "server_logs.tar.gz").write_text("a stale file of an earlier run")   # the lease's own names are cleared
    (out / "notes.txt").write_text("not the lease's")                          # anything else is left alone
    t0 = time.time()
    # graph's limit: 90 s total - 20 reserved for the driver - 55 for kernels = under 15 s (server's unused budget
    # passes on to it)
    proc = _lease("--dry-run", str(out), "--fault", "server=raise", "--fault", "graph=hang", "--budget", "server=8",
                  "--budget", "graph=5", "--budget", "kernels=55", "--total-s", "90")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.time() - t0 < 80
    summary = json.loads((out / "summary.json").read_text())
    assert {s["stage"]: s["status"] for s in summary["stages"]} == {"server": "failed", "graph": "timeout",
                                                                    "kernels": "ok"}
    assert summary["ok"] is False
    server = _stage(out, "server")
    assert server["rc"] != 0 and "injected fault: --fault server=raise" in (out / "server.log").read_text()
    graph = _stage(out, "graph")
    assert graph["limit_s"] <= 15 and graph["seconds"] <= graph["limit_s"] + 2
    orphans = [int(p) for p in re.findall(r"orphan pid (\d+)", (out / "graph.log").read_text())]
    assert len(orphans) == 2 and summary["subreaper"] is True
    # the one with the stage's token and the one with a new environment (found as the driver's child)
    assert set(orphans) <= set(graph["reaped_pids"]) and not any(_alive(p) for p in orphans)
    assert _stage(out, "kernels")["status"] == "ok" and (out / "kernels.log").stat().st_size > 0
    assert not (out / "server_logs.tar.gz").exists() and (out / "notes.txt").exists()
    assert re.search(r"^graph\s+timeout", proc.stdout, re.M) and re.search(r"^server\s+failed", proc.stdout, re.M)


@pytest.mark.parametrize("args, flag", [
    (["--dry-run", "--fault", "graph=explode"], "--fault"),
    (["--dry-run", "--fault", "nosuch=raise"], "--fault"),
    (["--dry-run", "--budget", "server=600"], "--total-s"),
    (["--dry-run", "--budget", "graph=abc"], "--budget"),
    (["--dry-run", "--stages", "server,gpu"], "--stages"),
    ([], "OUTDIR"),
])
def test_bad_input_is_refused_naming_the_flag(args, flag):
    proc = _lease(*args, timeout=60)
    assert proc.returncode == 2 and flag in proc.stderr, proc.stderr
