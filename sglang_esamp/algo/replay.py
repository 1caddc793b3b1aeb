"""What the two replayed units (the step's rule, ``rule.step_graphs``; the distiller update, ``update.update_graphs``)
share: the row buckets their static buffers are sized to, how many warm-up runs precede a capture, and the choice
between a CUDA-graph replay (``graph``), the same static buffers run eagerly (``static``, CPU) and no buffers at all
(``eager``)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

ROW_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512)
WARMUP_RUNS = 2   # lazy inits (Triton compiles, cuBLAS handles) happen before a capture, never inside it


def row_bucket(rows: int, buckets: Sequence[int] = ROW_BUCKETS) -> Optional[int]:
    """The smallest bucket holding ``rows``; None above the largest (that step runs eagerly)."""
    for b in buckets:
        if b >= rows:
            return b
    return None


def replay_mode(mode: Optional[str], device: torch.device, owner: str) -> str:
    """``graph`` on CUDA, ``static`` elsewhere, unless ``mode`` says which."""
    mode = mode or ("graph" if device.type == "cuda" else "static")
    if mode not in ("graph", "static", "eager"):
        raise ValueError(f"{owner} mode must be graph, static or eager, got {mode!r}")
    return mode


def declare_counters(counters, names: Sequence[str]) -> None:
    for name in names:
        if counters is not None and name not in counters.combine():
            counters.declare(name)
