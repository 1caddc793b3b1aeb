"""The stages of one GPU lease (issue #45), most valuable first: what each runs and which numbers it reports.

A stage is an existing script run as a subprocess (benchmarks/gpu/lease.py runs it under a watchdog); this module
says which command, with which time budget, and reads the script's own JSON back into ``key`` numbers for the
summary. Budgets (seconds, each including its set-up; 520 in all, plus lease.RESERVE_S for the driver = 540):

* ``server`` (a) 350 s: benchmarks/gpu/server_check.py -- the carried bundle installed and SGLang's modules
  imported (~45 s), a random-weight Qwen2.5-0.5B-config model (~15 s), four SGLang servers (ESamp with CUDA graphs
  + trace, ESamp eager, ESamp with graphs for the bench, stock; up to ~150 s to start, compile and capture), a
  seeded ESamp request graph vs eager, /esamp/stats (0 tap misses on replayed decode batches, work counters
  moved), bench_throughput on / off / stock at 16 x n=8, 128 tokens (~70 s). The most valuable and the least
  predictable stage: it goes first and gets the largest share.
* ``graph`` (b) 130 s: benchmarks/gpu/esamp_graph_bench.py at the 0.5B and 7B shapes, 128 rows, medians of 3 runs
  of 30 steps after 5 of warm-up, five arms; graphed must equal eager in tokens and weights. Overhead against the
  issue's bars (<= 6 % at 0.5B, <= 2 % at 7B) on the better graphed arm.
* ``kernels`` (c) 40 s: esamp_kernels.bench, the Triton kernels compiled and timed against their torch references
  at serving shapes, the largest |triton - torch| checked against ``KERNEL_TOL``.

An earlier stage that ends early leaves its unused time to the later ones (lease.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

# the bars for a graphed ESamp step over a graph-replayed forward, overhead in %
GRAPH_BARS = {"0.5b": 6.0, "7b": 2.0}
# |triton - torch| allowed per kernel: fp32 candidate logits (measured 4.8e-7 on an H200) and the bf16 distiller
# output (one bf16 ulp at |h| 2-4 is 1.6e-2, measured there)
KERNEL_TOL = {"candidate_novelty": 1e-4, "grouped_forward": 5e-2}


@dataclass
class Ctx:
    """What a stage's command needs: the interpreter, its scratch folder, its time limit, the mode."""
    python: str
    work: Path
    timeout_s: float
    dry_run: bool


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    budget_s: int
    command: Callable[[Ctx], List[str]]
    # scratch folder -> (key numbers, the stage's own JSON, problems that make a finished stage "failed")
    collect: Callable[[Path], Tuple[Dict, Dict, List[str]]]
    # files (scratch-relative) copied into the output folder under a new name, when they exist
    extra_files: Dict[str, str] = field(default_factory=dict)


def _json(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ (a) the real server, CUDA graphs on


def server_command(c: Ctx) -> List[str]:
    # the script stops starting steps a little before the watchdog's SIGTERM (lease.GRACE_S before the limit)
    deadline = max(30.0, c.timeout_s - 25.0)
    argv = [c.python, "benchmarks/gpu/server_check.py", "--out", str(c.work / "out"), "--work", str(c.work / "tmp"),
            "--deadline-s", f"{deadline:.0f}"]
    return argv + (["--dry-run"] if c.dry_run else [])


def server_collect(work: Path) -> Tuple[Dict, Dict, List[str]]:
    res = _json(work / "out" / "gpu_server_check.json")
    if res is None:
        return {}, {}, ["no gpu_server_check.json"]
    steps = res.get("steps", {})
    key: Dict = {"dry_run": res.get("dry_run")}
    if "import_check" in steps:
        key["imports_ok"] = steps["import_check"].get("ok")
    if "servers" in steps:
        key["servers_up"] = sorted(n for n, v in steps["servers"].items() if v.get("up"))
    seeded = steps.get("seeded", {})
    key.update({f"seeded_{k}": seeded[k] for k in ("ok", "same_tokens", "max_abs_logit_delta") if k in seeded})
    for tag in ("graph", "bench"):
        st = steps.get(f"stats_{tag}", {})
        key.update({f"{tag}_{k}": st[k] for k in ("tap_misses", "esamp_steps", "updates", "replayed") if k in st})
    bench = steps.get("bench_16x8", {}).get("result", {})
    for k in ("ratio_on_off", "ratio_off_stock"):
        if isinstance(bench.get(k), dict):
            key[k] = bench[k].get("median")
    for arm, v in (bench.get("tok_s") or {}).items():
        key[f"tok_s_{arm}"] = v.get("median") if isinstance(v, dict) else v
    if res.get("dry_run"):
        key["servers_parsed"] = all(s.get("parsed") for s in steps.get("plan", {}).get("servers", {}).values())
    bench_full = _json(work / "out" / "bench_16x8.json")   # every round, not only the medians
    if bench_full is not None:
        res["bench_16x8_full"] = bench_full
    problems = [] if res.get("ok", res.get("dry_run")) else ["gpu_server_check.json: ok is false"]
    return key, res, problems


# ------------------------------------------------------------------ (b) the graphed ESamp step


def graph_command(c: Ctx) -> List[str]:
    argv = [c.python, "benchmarks/gpu/esamp_graph_bench.py", "--out", str(c.work / "esamp_graph_bench")]
    if c.dry_run:
        return argv + ["--dry-run"]
    return argv + ["--shapes", "0.5b,7b", "--rows", "128", "--steps", "30", "--warmup", "5", "--repeats", "3"]


def graph_collect(work: Path) -> Tuple[Dict, Dict, List[str]]:
    found = sorted(work.glob("esamp_graph_bench*.json"))
    res = _json(found[0]) if found else None
    if res is None:
        return {}, {}, ["no esamp_graph_bench JSON"]
    key: Dict = {"device": res.get("device")}
    problems = []
    for cell_name, cell in res.get("cells", {}).items():
        arms, checks = cell.get("arms", {}), cell.get("graph_vs_eager", {})
        row: Dict = {"off_ms": arms.get("off", {}).get("ms_per_step")}
        for arm in ("graph_serial", "graph_async"):
            row[f"{arm}_pct"] = arms.get(arm, {}).get("overhead_pct")
        row["graph_equals_eager"] = bool(checks) and all(all(c.values()) for c in checks.values())
        graphed = [v for k, v in row.items() if k.endswith("_pct") and v is not None]
        shape = cell_name.split("x")[0]
        if shape in GRAPH_BARS and graphed:
            row["bar_pct"] = GRAPH_BARS[shape]
            row["bar_met"] = min(graphed) <= GRAPH_BARS[shape]   # a finding, not a failure of the stage
        if not row["graph_equals_eager"]:
            problems.append(f"{cell_name}: graphed differs from eager ({checks})")
        key[cell_name] = row
    return key, res, problems


# ------------------------------------------------------------------ (c) the Triton kernels


def kernels_command(c: Ctx) -> List[str]:
    argv = [c.python, "-m", "esamp_kernels.bench", "--out", str(c.work / "kernel_bench")]
    return argv + (["--dry-run"] if c.dry_run else ["--rep-ms", "50"])   # 45 shapes x 2: ~10 s of timing


def kernels_collect(work: Path) -> Tuple[Dict, Dict, List[str]]:
    res = _json(work / "kernel_bench" / "kernel_bench.json")
    if res is None:
        return {}, {}, ["no kernel_bench.json"]
    key: Dict = {"device": res.get("meta", {}).get("device")}
    problems = []
    for op, tol in KERNEL_TOL.items():
        rows = [r for r in res.get("results", []) if r.get("op") == op]
        speedups = [r["speedup"] for r in rows if r.get("speedup") is not None]
        diffs = [r["max_abs_diff"] for r in rows if r.get("max_abs_diff") is not None]
        key[op] = {"shapes": len(rows), "speedup_min": min(speedups, default=None),
                   "speedup_max": max(speedups, default=None), "max_abs_diff": max(diffs, default=None), "tol": tol}
        if any(not d <= tol for d in diffs):          # inf or nan included
            problems.append(f"{op}: |triton - torch| {max(diffs)} over {tol}")
    return key, res, problems


STAGES: Tuple[Stage, ...] = (
    Stage("server", "(a) real SGLang server, CUDA graphs on", 350, server_command, server_collect,
          {"out/logs.tar.gz": "server_logs.tar.gz"}),
    Stage("graph", "(b) graphed ESamp step vs graph-replayed forward", 130, graph_command, graph_collect),
    Stage("kernels", "(c) Triton kernels vs references", 40, kernels_command, kernels_collect),
)
BY_NAME = {s.name: s for s in STAGES}


def fault_command(python: str, kind: str, stage: str) -> List[str]:
    """The command a stage runs instead under ``--fault STAGE=KIND`` (the CPU rehearsal of lease.py's failure
    paths): ``raise`` fails at once; ``hang`` leaves two children in sessions of their own (as SGLang's servers
    are), ignores SIGTERM and never ends, so only the watchdog's SIGKILL and the reaper end them."""
    if kind == "raise":
        return [python, "-c", f"raise RuntimeError('injected fault: --fault {stage}=raise')"]
    # two orphans, as SGLang's servers are: one keeps the stage's environment, one has a new one (only the
    # driver's subreaper finds it)
    code = ("import signal, subprocess, sys, time\n"
            "sleeper = [sys.executable, '-c', 'import time; time.sleep(600)']\n"
            "for env in (None, {}):\n"
            "    child = subprocess.Popen(sleeper, start_new_session=True, env=env)\n"
            "    print('orphan pid', child.pid, flush=True)\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "time.sleep(600)\n")
    return [python, "-c", code]


FAULTS = ("raise", "hang")
