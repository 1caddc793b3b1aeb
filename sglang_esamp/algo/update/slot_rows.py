"""Rows ``[R, H]`` laid out ``[A, P, H]`` by slot, the shape both update paths train on (``DistillerBank.train_step``
and ``DeviceTrainStep``): every slot's forward, loss and backward run as one batched pass, no loop over slots.

Built from device tensors only (a row's local slot index and whether it is kept), so the sync-free path can capture
it in a CUDA graph. ``P`` (``width``) is given by the caller: the largest slot's row count (reference) or its
bucket (sync-free). A row with no slot (-1), or beyond ``width`` in its slot, lands in one discarded row.
"""
from __future__ import annotations

import torch


class SlotRows:
    def __init__(self, local: torch.Tensor, keep: torch.Tensor, slots: int, width: int):
        """``local`` [R] int64: the row's slot index in ``[0, slots)``, or -1; ``keep`` [R] bool: the row enters the
        loss (finite src and tgt). Padded and dropped places are zero and masked out."""
        dev = local.device
        self.slots, self.width = slots, width
        onehot = local.unsqueeze(1) == torch.arange(slots, device=dev)            # [R, A]; -1 matches nothing
        in_slot = local >= 0
        self.keep = keep & in_slot
        self.count = onehot.sum(dim=0)                                             # rows per slot
        self.kept = (onehot & self.keep.unsqueeze(1)).sum(dim=0)                   # kept rows per slot
        rank = (onehot.long().cumsum(0) * onehot).sum(dim=1) - 1                   # a row's place in its slot
        self._dump = slots * width
        self._pos = torch.where(in_slot & (rank < width), local.clamp(min=0) * width + rank, self._dump)
        mask = torch.zeros(self._dump + 1, dtype=torch.float32, device=dev)
        self.mask = mask.index_copy_(0, self._pos, self.keep.float())[:self._dump].view(slots, width)   # [A, P]
        self.rows_f = self.kept.float().clamp(min=1)                               # loss denominators [A]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` [R, H] as fp32 ``[A, P, H]`` (dropped rows zero, so a NaN never reaches the loss's graph)."""
        flat = torch.zeros(self._dump + 1, t.shape[1], dtype=torch.float32, device=t.device)
        flat.index_copy_(0, self._pos, torch.where(self.keep.unsqueeze(1), t.float(), 0.0))
        return flat[:self._dump].view(self.slots, self.width, t.shape[1])

    def mean(self, per_row: torch.Tensor) -> torch.Tensor:
        """The mean over each slot's kept rows of ``per_row`` [A, P]."""
        return (per_row * self.mask).sum(dim=1) / self.rows_f
