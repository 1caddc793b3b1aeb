"""Static tap buffers: the taps write the whole decode batch into fixed tensors, the step reads its rows from there.

Why static: a captured graph (CUDA graphs; SGLang's torch.compile CPU graph runner) replays the recorded kernels
without running any Python, so a tap that *assigns* a new tensor to the step object would see nothing on a
replayed step. A tap that *copies into a buffer allocated before capture* is recorded as a kernel with fixed
addresses, so every replay refills the buffer. Eager steps use the very same code path (which is what the CPU
tests exercise: this machine cannot run SGLang's CPU graph runner, see docs/performance.md).

Freshness without Python: each write also copies the batch's ``positions`` (the sequence index of every row's
token, a graph input) into a stamp buffer beside the hidden states; ``read`` accepts the rows only when both taps'
stamps equal this step's positions, then invalidates the stamps, so a tap that did not run (a miss, a replay of a
graph captured without taps) is detected exactly, never served stale.

Capacity: allocated for ``rows`` batch rows (the largest captured batch size on a graph-capable device); an eager
batch larger than that grows the buffers (never during a capture, where addresses must stay fixed: there it is a
``TapCapacityError`` naming the limit).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

ROLES = ("source", "target")
DEFAULT_ROWS = 256


class TapCapacityError(RuntimeError):
    pass


def capturing() -> bool:
    """True while a CUDA graph is being captured on the current stream (False on machines without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class TapBuffers:
    def __init__(self, hidden: int, dtype: torch.dtype, device, rows: int = DEFAULT_ROWS, masked: bool = False):
        """``masked``: ``take`` reads nothing back to the host and masks stale rows (a sync-free core's step)."""
        self.hidden, self.dtype, self.device = int(hidden), dtype, torch.device(device)
        self.masked = masked
        self.h: Dict[str, torch.Tensor] = {}
        self.stamp: Dict[str, torch.Tensor] = {}
        self._allocate(max(1, int(rows)))

    @property
    def rows(self) -> int:
        return self.h["source"].shape[0]

    def _allocate(self, rows: int) -> None:
        for role in ROLES:
            self.h[role] = torch.zeros(rows, self.hidden, dtype=self.dtype, device=self.device)
            self.stamp[role] = torch.full((rows,), -1, dtype=torch.int64, device=self.device)

    def write(self, role: str, value: torch.Tensor, positions: torch.Tensor) -> None:
        """Copy the tap's whole batch (``value`` [B, H], ``positions`` [B]) into the buffers (graph-capturable)."""
        n = value.shape[0]
        if n > self.rows:
            if capturing():
                raise TapCapacityError(f"ESamp tap buffers hold {self.rows} rows but a captured batch has {n}; "
                                       "they are allocated at startup for the largest decode graph batch size")
            self._allocate(max(n, 2 * self.rows))
        self.h[role][:n].copy_(value)
        self.stamp[role][:n].copy_(positions[:n])

    def take(self, rows: torch.Tensor, positions: torch.Tensor,
             batch_size: int) -> Optional[Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]]:
        """The step's read: ``read_masked`` (source, target, fresh) for masked buffers, else ``read`` with fresh
        None; None = a miss."""
        if self.masked:
            return self.read_masked(rows, positions, batch_size)
        taps = self.read(rows, positions, batch_size)
        return None if taps is None else (taps[0], taps[1], None)

    def read_masked(self, rows: torch.Tensor, positions: torch.Tensor,
                    batch_size: int) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``read`` without reading a tensor back to the host (the sync-free step): (source, target, fresh), where
        ``fresh`` [R] bool marks the rows both taps wrote this step; None only when the batch is larger than the
        buffers (known from shapes). Invalidates the stamps."""
        try:
            if batch_size > self.rows:
                return None
            fresh = torch.ones_like(positions, dtype=torch.bool)
            for role in ROLES:
                fresh &= self.stamp[role].index_select(0, rows) == positions
            return self.h["source"].index_select(0, rows), self.h["target"].index_select(0, rows), fresh
        finally:
            for role in ROLES:
                self.stamp[role][:batch_size].fill_(-1)

    def read(self, rows: torch.Tensor, positions: torch.Tensor,
             batch_size: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """(source, target) hidden states of ``rows`` when both taps wrote this step (their stamps equal
        ``positions``, the rows' positions this step), else None (a tap miss). Invalidates the stamps either way.
        ``read_masked`` plus one host read: whether every row is fresh."""
        taps = self.read_masked(rows, positions, batch_size)
        if taps is None or not bool(taps[2].all()):
            return None
        return taps[0], taps[1]
