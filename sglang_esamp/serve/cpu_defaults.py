"""Server defaults for a machine without CUDA, so `launch_server` runs the real SGLang runtime on CPU.

Measured recipe (docs/sglang_on_cpu.md): SGLANG_USE_CPU_ENGINE=1 (else SGLang takes a CUDA path), the torch
native attention backend, no CUDA graphs, an explicit KV-pool size (on CPU SGLang sizes it from host RAM),
``--watchdog-timeout 3600`` (a CPU batch can outlast SGLang's 300 s hang detector), the per-rank thread binding
for ``--dp-size``/``--tp-size`` > 1, and ``--sleep-on-idle``: without it an idle scheduler polls its sockets in a
busy loop and holds a whole core, which on a 2-core machine is the core the next forward (or a second server, or
the distiller update) needs; with it the scheduler blocks in a socket poll and wakes on the next request. Anything
the user passed wins.
"""
from __future__ import annotations

import os
from typing import List

CPU_MAX_TOTAL_TOKENS = 65536
# SGLang's scheduler watchdog kills the server when one batch takes longer than this (default 300 s): a 0.5B model's
# batch of 40 rows on a loaded 2-core machine took longer (measured: the Qwen bench_quality server died so)
CPU_WATCHDOG_TIMEOUT_S = 3600


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _given(argv: List[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def apply_cpu_defaults(argv: List[str]) -> List[str]:
    """Returns argv with the CPU defaults filled in (and sets SGLANG_USE_CPU_ENGINE) when there is no CUDA."""
    if cuda_available() and not _given(argv, "--device"):
        return list(argv)
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    out = list(argv)
    if not _given(out, "--device"):
        out += ["--device", "cpu"]
    if not _given(out, "--attention-backend"):
        out += ["--attention-backend", "torch_native"]
    if not _given(out, "--disable-cuda-graph"):
        out += ["--disable-cuda-graph"]
    if not _given(out, "--max-total-tokens") and not _given(out, "--mem-fraction-static"):
        out += ["--max-total-tokens", str(CPU_MAX_TOTAL_TOKENS)]
    if not _given(out, "--sleep-on-idle"):
        out += ["--sleep-on-idle"]
    if not _given(out, "--watchdog-timeout"):
        out += ["--watchdog-timeout", str(CPU_WATCHDOG_TIMEOUT_S)]
    bind_cpu_threads(_ranks(out))
    return out


def _flag_int(argv: List[str], flags) -> int:
    for i, a in enumerate(argv):
        for f in flags:
            if a == f and i + 1 < len(argv):
                return int(argv[i + 1])
            if a.startswith(f + "="):
                return int(a.split("=", 1)[1])
    return 1


def _ranks(argv: List[str]) -> int:
    return _flag_int(argv, ("--dp-size", "--dp", "--data-parallel-size")) * \
        _flag_int(argv, ("--tp-size", "--tp", "--tensor-parallel-size"))


def bind_cpu_threads(ranks: int) -> None:
    """SGLang on CPU needs ``SGLANG_CPU_OMP_THREADS_BIND`` when there are more ranks than NUMA nodes: give each
    rank its own contiguous share of the cores ("0|1" for 2 ranks on 2 cores), unless the user set it."""
    if ranks <= 1 or "SGLANG_CPU_OMP_THREADS_BIND" in os.environ:
        return
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if len(cores) < ranks:
        raise SystemExit(f"--dp-size x --tp-size = {ranks} ranks but only {len(cores)} CPU cores; lower them or set "
                         "SGLANG_CPU_OMP_THREADS_BIND yourself")
    per = len(cores) // ranks
    parts = []
    for r in range(ranks):
        share = cores[r * per:(r + 1) * per]
        parts.append(str(share[0]) if len(share) == 1 else f"{share[0]}-{share[-1]}")
    os.environ["SGLANG_CPU_OMP_THREADS_BIND"] = "|".join(parts)


def engine_cpu_defaults(kwargs: dict) -> dict:
    """The same defaults for `sgl.Engine(**kwargs)`."""
    if cuda_available() and "device" not in kwargs:
        return dict(kwargs)
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    out = dict(kwargs)
    out.setdefault("device", "cpu")
    out.setdefault("attention_backend", "torch_native")
    out.setdefault("disable_cuda_graph", True)
    if "mem_fraction_static" not in out:
        out.setdefault("max_total_tokens", CPU_MAX_TOTAL_TOKENS)
    out.setdefault("sleep_on_idle", True)
    out.setdefault("watchdog_timeout", CPU_WATCHDOG_TIMEOUT_S)
    bind_cpu_threads(int(out.get("dp_size", 1) or 1) * int(out.get("tp_size", 1) or 1))
    return out
