"""The bank's training step with every decision on the device: no host read, fixed shapes, so it can be captured
in a CUDA graph (issue #38, item 2) and replayed on the update's side stream.

``DistillerBank.train_step`` is the reference: same loss, rows dropped for a non-finite src/tgt, per-slot clip,
Adam, divergence guard and resets (bank.py's docstring gives the decisions). It reads the host three times a step
(the slots and row counts, the per-slot stats, the grad norms) and branches on what it read. Here:

1. The host passes what it already knows from the plan, never from tensor values: the slots in the batch (``slots``,
   padded to a bucket ``A`` with slots not in it, which get no row and are written back unchanged) and the largest
   group's row count (``width``, bucketed). Rows are laid out ``[A, P, H]`` on the device (one-hot ranks).
2. Forward, loss and backward of the ``A`` slots in one batched pass over gathered copies of their parameters.
3. Each slot's fate as device masks: no row (skipped), non-finite loss or grad norm (reset), over the guard
   (diverged, reset), else updated. The guard's baselines live on the device (``DistillerBank.device_baseline``).
4. Clip and Adam for every gathered slot, kept only where updated (``torch.where``), written back with
   ``index_copy_`` (the padded slots are distinct, so every write is its own slot).
5. The step's per-slot stats go to a ``[A, 8]`` tensor. ``fold`` turns one into the reference's ``TrainResult``
   and applies the resets; the caller runs it where a host read is free: after an async copy to pinned memory
   has completed (next step), or at stats time. A reset is therefore applied one fold late; until then the slot is
   not updated by the rejected step and keeps its previous weights.

The row layout (``slot_rows.py``), the guard and its baselines (``divergence_guard.py``) and the clip + Adam/SGD
arithmetic (``slot_optimizer.py``) are the reference's own code; what is this file's is the masks. Adam is the
explicit arithmetic (``torch._fused_adam_`` takes a host list of per-slot tensors); it matches the fused kernel to
float rounding.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch

from esamp_kernels.grouped_forward_torch import distiller_forward_slots_torch

from ..distiller.bank import DistillerBank, TrainResult
from .divergence_guard import observed
from .slot_optimizer import AdamCoefficients, clip_coefficients, slot_update
from .slot_rows import SlotRows

# columns of the per-slot stats a step writes
SLOT, KEPT, DROPPED, LOSS, NOVELTY, GRAD_NORM, FATE = range(7)
STATS_COLUMNS = 7
# FATE values
SKIPPED, UPDATED, NONFINITE, DIVERGED = 0.0, 1.0, 2.0, 3.0


def bucket(n: int) -> int:
    """The next power of two >= n (the shapes a captured step is keyed by)."""
    return 1 << max(0, int(n) - 1).bit_length()


def padded_slots(slots: Sequence[int], size: int, num_slots: int) -> List[int]:
    """``slots`` followed by the lowest slots not in it, ``size`` in all (distinct: every write-back is its own)."""
    if size < len(slots) or size > num_slots:
        raise ValueError(f"cannot pad {len(slots)} slots to {size} in a bank of {num_slots}")
    taken = set(slots)
    return list(slots) + [s for s in range(num_slots) if s not in taken][:size - len(slots)]


class DeviceTrainStep:
    def __init__(self, bank: DistillerBank):
        if bank.opt.kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {bank.opt.kind!r}")
        self.bank = bank

    @torch.no_grad()
    def step(self, src: torch.Tensor, tgt: torch.Tensor, slot_ids: torch.Tensor, idx: torch.Tensor,
             width: int) -> torch.Tensor:
        """One update of the slots ``idx`` [A] (device, distinct; the batch's slots first, then padding) from rows
        with ``slot_ids`` [R] (-1: no slot); ``width``: at least the most rows any slot has. Returns stats [A, 7]."""
        bank, guard = self.bank, self.bank.guard
        a_count, dev = idx.numel(), src.device
        # 1. rows laid out [A, P, H] by the slot's place in idx (-1: a slot not in idx, or no slot)
        local = torch.full((bank.num_slots,), -1, dtype=torch.int64, device=dev).index_copy_(
            0, idx, torch.arange(a_count, device=dev))
        lsid = torch.where(slot_ids >= 0, local.index_select(0, slot_ids.clamp(min=0)), -1)
        finite = torch.isfinite(src).all(dim=1) & torch.isfinite(tgt).all(dim=1)
        rows = SlotRows(lsid, finite, a_count, width)
        y = rows(tgt)

        # 2. forward, loss, backward of the gathered slots
        leaves = {name: t.index_select(0, idx).float().requires_grad_(True) for name, t in bank.params.items()}
        with torch.enable_grad():
            pred = distiller_forward_slots_torch(rows(src), leaves, bank.shape.blocks, bank.shape.out_ln)
            sq = (y - pred).pow(2).sum(dim=2) * rows.mask
            loss = sq.sum(dim=1) / rows.rows_f
            # 3. fates (the guard on the forward's stats, then the grad norms)
            base = bank.device_baseline.index_select(0, idx)
            has = rows.kept > 0
            finite_loss = torch.isfinite(loss.detach())
            diverged = torch.zeros_like(has)
            if guard.enabled:
                pn = rows.mean(torch.linalg.vector_norm(pred.detach(), dim=2))
                tn = rows.mean(torch.linalg.vector_norm(y, dim=2))
                diverged = has & finite_loss & guard.diverges(base, loss.detach(), pn, tn)
            picked = has & finite_loss & ~diverged
            grads = torch.autograd.grad(torch.where(picked, loss, 0.0).sum(), list(leaves.values()),
                                        allow_unused=True)
        grads = {name: torch.zeros_like(p) if g is None else
                 torch.where(picked.view((-1,) + (1,) * (g.dim() - 1)), g, 0.0)
                 for (name, p), g in zip(leaves.items(), grads)}
        norms = torch.zeros(a_count, dtype=torch.float32, device=dev)
        for g in grads.values():
            norms += torch.linalg.vector_norm(g.reshape(a_count, -1), dim=1).square()
        norms = norms.sqrt()
        nonfinite = has & (~finite_loss | (picked & ~torch.isfinite(norms)))
        updated = picked & torch.isfinite(norms)

        # 4. clip + optimizer and baselines, kept where updated
        self._apply(idx, leaves, grads, norms, updated)
        energy = rows.mean(y.square().sum(dim=2))
        bank.device_baseline.index_copy_(0, idx, observed(base, updated, loss.detach(), energy))

        # 5. per-slot stats
        fate = torch.where(updated, UPDATED, SKIPPED)
        fate = torch.where(nonfinite, NONFINITE, torch.where(diverged, DIVERGED, fate))
        novelty = sq.detach().sqrt().sum(dim=1)
        loss_out = torch.where(has, loss.detach(), float("nan"))
        cols = [idx.float(), rows.kept.float(), (rows.count - rows.kept).float(), loss_out, novelty, norms, fate]
        return torch.stack(cols, dim=1)

    def _apply(self, idx, leaves, grads, norms, updated):
        """slot_optimizer's step for every gathered slot, written back only where ``updated``."""
        bank, opt = self.bank, self.bank.opt
        coef = clip_coefficients(opt, norms)
        steps = bank.steps.index_select(0, idx) + updated.to(torch.int64)
        bank.steps.index_copy_(0, idx, steps)
        adam = AdamCoefficients(opt, steps) if opt.kind == "adam" else None
        for name, leaf in leaves.items():
            u = updated.view((-1,) + (1,) * (leaf.dim() - 1))
            moments = (bank.exp_avg[name].index_select(0, idx), bank.exp_avg_sq[name].index_select(0, idx)) \
                if adam else None
            out = slot_update(opt, leaf.detach(), grads[name], coef, moments, adam)
            old = bank.params[name].index_select(0, idx)
            bank.params[name].index_copy_(0, idx, torch.where(u, out[0].to(bank.dtype), old))
            if adam:
                bank.exp_avg[name].index_copy_(0, idx, torch.where(u, out[1], moments[0]))
                bank.exp_avg_sq[name].index_copy_(0, idx, torch.where(u, out[2], moments[1]))


def fold(bank: DistillerBank, stats_rows: List[List[float]]) -> TrainResult:
    """One step's stats (host values, ``[A, 7]`` as lists) as the reference's ``TrainResult``, with the step's
    resets applied now (re-initialising the slot and its baselines). Slots that had no row at all are left out,
    like the reference leaves out slots not in the batch."""
    res = TrainResult()
    for row in stats_rows:
        kept, dropped = int(row[KEPT]), int(row[DROPPED])
        if kept + dropped == 0:
            continue
        s, fate = int(row[SLOT]), row[FATE]
        res.slots.append(s)
        res.rows.append(kept)
        res.dropped_rows.append(dropped)
        res.losses.append(row[LOSS] if kept else float("nan"))
        res.novelty_sums.append(row[NOVELTY] if kept else float("nan"))
        res.grad_norms.append(row[GRAD_NORM] if math.isfinite(row[GRAD_NORM]) else float("nan"))
        res.updated.append(fate == UPDATED)
        if fate == NONFINITE:
            bank.reset_slot(s)
            res.reset_slots.append(s)
        elif fate == DIVERGED:
            bank.reset_slot(s)
            res.diverged_slots.append(s)
    return res
