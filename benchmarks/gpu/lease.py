"""One GPU lease, one command (issue #45): the stages of benchmarks/gpu/lease_stages.py in order, each under a
watchdog, each leaving its results in the output folder the moment it ends.

    bash benchmarks/gpu/lease.sh [--dry-run] [OUTDIR] [--stages a,b] [--budget STAGE=S] [--fault STAGE=raise|hang]

Why it is built this way:

* **At most ``--total-s`` (540) seconds in all**, inside the device's 600 s per command: each stage's limit is
  what is left minus the budgets reserved for the stages after it and ``RESERVE_S`` for this driver, so a stage
  that ends early hands its time on and one that hangs cannot eat a later stage's budget.
* **The watchdog**: a stage runs in its own process group; at its limit minus ``GRACE_S`` it gets SIGTERM (the
  server stage then stops its servers and saves what ran), at its limit SIGKILL. Then every process still carrying
  the stage's token in its environment is killed, and so is every process left to this driver, a subreaper
  (``prctl``) -- SGLang's servers run in sessions of their own, which a process group signal does not reach, and
  would hold the GPU through the next stage.
* **Nothing lost**: a stage's log is written into OUTDIR while it runs (``<stage>.log``); when it ends, for
  whatever reason, ``<stage>.json`` gets its status, seconds and key numbers and the stage script's own JSON, and
  ``summary.json`` is rewritten. A stage that fails or times out leaves the earlier ones' files as they were.
* **What comes back**: the device returns at most 8 files, so OUTDIR holds exactly ``summary.json``, a ``.json``
  and a ``.log`` per stage and ``server_logs.tar.gz``; the summary lists them and flags anything more.

The summary ends with a table: stage, status (ok / failed / timeout / skipped), seconds, key numbers.
``--dry-run``: the same control flow on CPU with each script's tiny dry run (CI: tests/bench/test_lease_dry_run.py).
``--fault STAGE=raise|hang`` swaps a stage's command for one that fails at once or hangs ignoring SIGTERM with an
orphan in its own session (lease_stages.fault_command): the rehearsal of the failure paths.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lease_stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOTAL_S = 540          # the lease's whole run, inside the device's 600 s per command
RESERVE_S = 20         # this driver: start, reaping, summaries
GRACE_S = 15           # SIGTERM to SIGKILL: the server stage stops four servers and saves its summary
MIN_STAGE_S = 10       # below this a stage is skipped rather than started
MAX_FILES = 8          # what the device brings back from OUTDIR
MAX_FILE_BYTES = 15 * 2**20   # the device's limit is 16 MiB a file
LOG_KEEP = (1 * 2**20, 3 * 2**20)   # a longer log keeps its first and last bytes
TOKEN_ENV = "ESAMP_LEASE_TOKEN"


def log(msg: str) -> None:
    print(f"[lease] {msg}", flush=True)


# ------------------------------------------------------------------ processes


def become_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER: a stage's orphans (SGLang's servers run in sessions of their own) become this
    driver's children instead of init's, so ``reap`` finds them even where a process rewrote its environment."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0   # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _procs():
    """(pid, parent pid, state) of every process /proc shows."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                yield int(entry.name), int(fields[1]), fields[0]
            except (OSError, ValueError, IndexError):
                pass   # gone meanwhile


def _collect_zombies() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def reap(token: str) -> List[int]:
    """After a stage: SIGKILL every process whose environment carries ``TOKEN_ENV=token``, then every child left
    to this driver (a subreaper: orphans come here, a killed server's own children in turn). Their pids."""
    needle = f"{TOKEN_ENV}={token}".encode()
    killed = set()
    for pid, _, _ in _procs():
        try:
            if pid != os.getpid() and needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        except OSError:
            pass   # gone, or not ours to read
    for _ in range(50):
        _collect_zombies()
        left = [pid for pid, ppid, state in _procs() if ppid == os.getpid() and state != "Z"]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    _collect_zombies()
    return sorted(killed)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_watched(argv: List[str], log_path: Path, env: Dict[str, str], limit_s: float) -> Dict:
    """Run ``argv`` with its output in ``log_path``; SIGTERM at ``limit_s - grace``, SIGKILL at ``limit_s``."""
    grace = min(GRACE_S, limit_s / 3)
    t0 = time.time()
    with open(log_path, "w") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
        try:
            return {"rc": proc.wait(timeout=limit_s - grace), "timed_out": False, "seconds": time.time() - t0}
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            return {"rc": proc.returncode, "timed_out": True, "seconds": time.time() - t0}


def trim_log(path: Path) -> None:
    size = path.stat().st_size
    head, tail = LOG_KEEP
    if size <= head + tail:
        return
    with open(path, "rb") as f:
        first = f.read(head)
        f.seek(size - tail)
        last = f.read()
    path.write_bytes(first + f"\n[... {size - head - tail} bytes left out ...]\n".encode() + last)


# ------------------------------------------------------------------ one stage


def run_stage(stage: lease_stages.Stage, out: Path, work: Path, python: str, limit_s: float, dry_run: bool,
              fault: Optional[str]) -> Dict:
    work.mkdir(parents=True, exist_ok=True)
    ctx = lease_stages.Ctx(python=python, work=work, timeout_s=limit_s, dry_run=dry_run)
    argv = lease_stages.fault_command(python, fault, stage.name) if fault else stage.command(ctx)
    token = uuid.uuid4().hex
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{TOKEN_ENV: token})
    log(f"{stage.name}: {stage.title} (limit {limit_s:.0f} s{', fault ' + fault if fault else ''})")
    ran = run_watched(argv, out / f"{stage.name}.log", env, limit_s)
    reaped = reap(token)
    status = "timeout" if ran["timed_out"] else ("ok" if ran["rc"] == 0 else "failed")
    try:
        key, result, problems = stage.collect(work)
    except Exception as e:  # noqa: BLE001  (a stage's odd output must not stop the lease)
        key, result, problems = {}, {}, [f"collect: {type(e).__name__}: {e}"]
    if status == "ok" and problems:
        status = "failed"
    record = {"stage": stage.name, "title": stage.title, "status": status, "seconds": round(ran["seconds"], 1),
              "budget_s": stage.budget_s, "limit_s": round(limit_s, 1), "rc": ran["rc"], "fault": fault,
              "reaped_pids": reaped, "problems": problems, "key": key, "argv": argv, "files": {}}
    for src, name in stage.extra_files.items():
        path = work / src
        if path.is_file():
            if path.stat().st_size <= MAX_FILE_BYTES:
                shutil.copyfile(path, out / name)
                record["files"][name] = path.stat().st_size
            else:
                record["files"][name] = f"left out: {path.stat().st_size} bytes, over {MAX_FILE_BYTES}"
    record["result"] = result
    trim_log(out / f"{stage.name}.log")
    (out / f"{stage.name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    log(f"{stage.name}: {status} in {ran['seconds']:.0f} s" + (f" ({'; '.join(problems)})" if problems else ""))
    return record


# ------------------------------------------------------------------ summary


def env_info(python: str) -> Dict:
    info = {"python": python, "python_version": platform.python_version(), "platform": platform.platform(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["gpu"] = smi.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = None
    return info


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "+".join(map(str, v))
    return str(v)


def flat(key: Dict, prefix: str = "") -> List[str]:
    out = []
    for k, v in key.items():
        if isinstance(v, dict):
            out += flat(v, f"{prefix}{k}.")
        elif v is not None:
            out.append(f"{prefix}{k}={_fmt(v)}")
    return out


def table(rows: List[Dict]) -> str:
    lines = [f"{'stage':<8} {'status':<8} {'seconds':>7}  key numbers"]
    for r in rows:
        seconds = "-" if r.get("seconds") is None else f"{r['seconds']:.0f}"
        lines.append(f"{r['stage']:<8} {r['status']:<8} {seconds:>7}  {' '.join(flat(r.get('key', {})))}")
    return "\n".join(lines)


def own_files(stages: List[str]) -> List[str]:
    extra = [n for s in stages for n in lease_stages.BY_NAME[s].extra_files.values()]
    return ["summary.json", *(f"{s}.{x}" for s in stages for x in ("json", "log")), *extra]


def out_files(out: Path) -> Dict:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = [p.relative_to(out).as_posix() for p in files]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9._-]+", n)]
    big = [p.relative_to(out).as_posix() for p in files if p.stat().st_size > MAX_FILE_BYTES]
    return {"names": names, "ok": len(names) <= MAX_FILES and not bad and not big,
            "problems": ([f"{len(names)} files, the device returns {MAX_FILES}"] if len(names) > MAX_FILES else [])
            + [f"odd name {n}" for n in bad] + [f"{n} over {MAX_FILE_BYTES} bytes" for n in big]}


# ------------------------------------------------------------------ main


def _pairs(p: argparse.ArgumentParser, values: List[str], flag: str, names) -> Dict[str, str]:
    out = {}
    for v in values:
        stage, sep, val = v.partition("=")
        if not sep or stage not in names or not val:
            p.error(f"{flag} {v!r}: expected STAGE=VALUE with STAGE one of {', '.join(names)}")
        out[stage] = val
    return out


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpu/lease.sh", description=__doc__.splitlines()[0])
    p.add_argument("outdir", nargs="?", help="where results go (default: $OUT, the folder the device brings back)")
    p.add_argument("--dry-run", action="store_true", help="CPU rehearsal: each stage's tiny dry run")
    p.add_argument("--stages", default=",".join(lease_stages.BY_NAME), help="comma list, in lease order")
    p.add_argument("--budget", action="append", default=[], metavar="STAGE=S", help="a stage's budget in seconds")
    p.add_argument("--fault", action="append", default=[], metavar="STAGE=KIND",
                   help=f"rehearse a failure: KIND one of {', '.join(lease_stages.FAULTS)}")
    p.add_argument("--total-s", type=float, default=TOTAL_S, help="the whole lease, seconds")
    p.add_argument("--python", default=sys.executable, help="the interpreter the stages run with")
    a = p.parse_args(argv)
    names = list(lease_stages.BY_NAME)
    a.stage_list = [s for s in a.stages.split(",") if s]
    unknown = [s for s in a.stage_list if s not in names]
    if unknown or not a.stage_list:
        p.error(f"--stages: unknown {unknown or 'empty list'}; choose from {', '.join(names)}")
    a.budgets = {s: lease_stages.BY_NAME[s].budget_s for s in a.stage_list}
    for stage, val in _pairs(p, a.budget, "--budget", names).items():
        try:
            a.budgets[stage] = float(val)
        except ValueError:
            p.error(f"--budget {stage}={val}: seconds must be a number")
        if a.budgets[stage] <= 0:
            p.error(f"--budget {stage}={val}: seconds must be positive")
    a.faults = _pairs(p, a.fault, "--fault", names)
    bad = {s: k for s, k in a.faults.items() if k not in lease_stages.FAULTS}
    if bad:
        p.error(f"--fault {bad}: KIND must be one of {', '.join(lease_stages.FAULTS)}")
    need = sum(a.budgets[s] for s in a.stage_list) + RESERVE_S
    if need > a.total_s:
        p.error(f"--budget / --total-s: the stages' budgets plus {RESERVE_S} s for the driver need {need:.0f} s, "
                f"over --total-s {a.total_s:.0f}")
    a.outdir = a.outdir or os.environ.get("OUT") or ("/tmp/esamp-lease-dry" if a.dry_run else None)
    if not a.outdir:
        p.error("OUTDIR: pass it or set $OUT (the folder the device brings back)")
    return a


def main(argv: Optional[List[str]] = None) -> int:
    a = parse(argv)
    t_start = time.time()
    subreaper = become_subreaper()
    out = Path(a.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in own_files(a.stage_list):   # a rehearsal run twice into one folder: no stale stage results
        (out / old).unlink(missing_ok=True)
    work_root = Path(tempfile.mkdtemp(prefix="esamp-lease-"))
    summary = {"lease": "benchmarks/gpu/lease.sh", "dry_run": a.dry_run, "total_s_limit": a.total_s,
               "env": env_info(a.python), "subreaper": subreaper, "stages": [{"stage": s, "status": "pending", "budget_s": a.budgets[s]}
                                                     for s in a.stage_list]}

    def save() -> None:
        summary["seconds"] = round(time.time() - t_start, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")

    save()
    log(f"{'dry run, ' if a.dry_run else ''}stages {', '.join(a.stage_list)} in at most {a.total_s:.0f} s -> {out}")
    for i, name in enumerate(a.stage_list):
        stage = dataclasses.replace(lease_stages.BY_NAME[name], budget_s=a.budgets[name])
        later = sum(a.budgets[s] for s in a.stage_list[i + 1:])
        limit = a.total_s - (time.time() - t_start) - RESERVE_S - later
        if limit < min(MIN_STAGE_S, a.budgets[name]) - 1:   # 1 s: the driver's own time so far
            record = {"stage": name, "status": "skipped", "seconds": 0.0, "budget_s": a.budgets[name],
                      "key": {}, "problems": [f"{limit:.0f} s left for it"]}
            (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        else:
            try:
                record = run_stage(stage, out, work_root / name, a.python, limit, a.dry_run, a.faults.get(name))
            except Exception as e:  # noqa: BLE001  (the driver's own failure in one stage must not end the lease)
                record = {"stage": name, "status": "failed", "seconds": None, "budget_s": a.budgets[name],
                          "key": {}, "problems": [f"lease.py: {type(e).__name__}: {e}"]}
                log(f"{name}: failed in the driver: {type(e).__name__}: {e}")
        summary["stages"][i] = {k: record.get(k) for k in ("stage", "status", "seconds", "budget_s", "limit_s",
                                                            "problems", "key")}
        save()
    shutil.rmtree(work_root, ignore_errors=True)
    summary["ok"] = all(r["status"] == "ok" for r in summary["stages"])
    summary["files"] = out_files(out)
    summary["table"] = table(summary["stages"]).splitlines()
    save()
    print(table(summary["stages"]), flush=True)
    for p in summary["files"]["problems"]:
        log(f"WARNING: {p}")
    log(f"{'all stages ok' if summary['ok'] else 'not all stages ok'} in {time.time() - t_start:.0f} s: {out}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
