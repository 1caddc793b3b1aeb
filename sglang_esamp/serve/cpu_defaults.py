"""Server defaults for a machine without CUDA, so `launch_server` runs the real SGLang runtime on CPU.

Measured recipe (docs/sglang_on_cpu.md): SGLANG_USE_CPU_ENGINE=1 (else SGLang takes a CUDA path), the torch
native attention backend, no CUDA graphs, an explicit KV-pool size (on CPU SGLang sizes it from host RAM), and
``--sleep-on-idle``: without it an idle scheduler polls its sockets in a busy loop and holds a whole core, which on
a 2-core machine is the core the next forward (or a second server, or the distiller update) needs; with it the
scheduler blocks in a socket poll and wakes on the next request. Anything the user passed wins.
"""
from __future__ import annotations

import os
from typing import List

CPU_MAX_TOTAL_TOKENS = 65536


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
    return out


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
    return out
