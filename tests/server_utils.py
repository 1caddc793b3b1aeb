"""Start and stop real servers for tests: 127.0.0.1, a free port, a start timeout, killed by process group
(the same launcher the benchmarks use, ``sglang_esamp.serve.local_server``)."""
from __future__ import annotations

import os
from pathlib import Path

from sglang_esamp.serve.local_server import local_server_process

START_TIMEOUT_S = float(os.environ.get("ESAMP_TEST_START_TIMEOUT", "300"))


def running_server(args, log_path: Path, env_extra=None, module="sglang_esamp.launch_server"):
    """Context manager yielding ``(base_url, process)``."""
    return local_server_process(list(args), Path(log_path), env_extra, START_TIMEOUT_S, module)
