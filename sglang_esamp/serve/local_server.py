"""Start ``python -m sglang_esamp.launch_server`` as a child process on 127.0.0.1 (a free port) and stop it again:
what the benchmarks use when no ``--base-url`` is given. The whole process group is killed on exit."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .server_probe import ServerProbe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(args: List[str], log_path: Path, env_extra: Optional[Dict[str, str]] = None,
                 start_timeout_s: float = 600.0) -> Iterator[str]:
    """Yields the base URL once ``/health`` answers; raises with the log's tail if the server dies first."""
    with local_server_process(args, log_path, env_extra, start_timeout_s) as (base, _proc):
        yield base


@contextmanager
def local_server_process(args: List[str], log_path: Path, env_extra: Optional[Dict[str, str]] = None,
                         start_timeout_s: float = 600.0,
                         module: str = "sglang_esamp.launch_server") -> Iterator[Tuple[str, subprocess.Popen]]:
    """``local_server`` that also yields the server's process (tests look at it)."""
    port = free_port()
    env = dict(os.environ)
    env.pop("SGLANG_ESAMP_SECRET", None)   # each server signs its own session ids (wire.identity), as real ones do
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), *args]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    probe = ServerProbe(base)
    try:
        deadline = time.time() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{Path(log_path).read_text()[-4000:]}")
            if probe.health(timeout_s=2).ok:
                break
            if time.time() > deadline:
                raise TimeoutError(f"server not healthy after {start_timeout_s:.0f}s (log: {log_path})")
            time.sleep(1)
        yield base, proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        probe.close()
