"""The distiller forward in plain torch (single slot, and grouped over a slot bank): the production training path
(differentiable; ``algo.distiller.bank`` trains through it) and the CPU forward, and the truth ``grouped_forward_triton`` is
tested against. fp32 accumulation,
output in the input's dtype. Parameter layout: ``layout``.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from .layout import LN_EPS, OUT_LN_BIAS, OUT_LN_WEIGHT, block_names


def distiller_forward_torch(x: torch.Tensor, params: Dict[str, torch.Tensor], blocks: int, out_ln: bool) -> torch.Tensor:
    """x [R, H]; params without a slot dimension. Differentiable. One distiller = ``distiller_forward_slots_torch``
    with a single slot."""
    return distiller_forward_slots_torch(x.unsqueeze(0), {k: v.unsqueeze(0) for k, v in params.items()}, blocks,
                                       out_ln)[0]


def grouped_distiller_forward_torch(x: torch.Tensor, slot_ids: torch.Tensor, bank: Dict[str, torch.Tensor],
                                  blocks: int, out_ln: bool) -> torch.Tensor:
    """x [R, H], slot_ids [R] (int64, each in [0, S)), bank tensors shaped [S, ...] -> [R, H].

    Rows are grouped by slot and each group runs with that slot's weights (no per-row weight copies).
    Differentiable w.r.t. the bank tensors.
    """
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for s in torch.unique(slot_ids).tolist():
        rows = (slot_ids == s).nonzero(as_tuple=True)[0]
        slot_params = {name: t[s] for name, t in bank.items()}
        out = out.index_put((rows,), distiller_forward_torch(x.index_select(0, rows), slot_params, blocks, out_ln).float())
    return out.to(x.dtype)


def grouped_distiller_forward_sorted_torch(x: torch.Tensor, slot_ids: torch.Tensor, bank: Dict[str, torch.Tensor],
                                          blocks: int, out_ln: bool) -> torch.Tensor:
    """``grouped_distiller_forward_torch`` without reading a tensor value back to the host (the sync-free step):
    rows sorted by slot, the slot offsets counted on the device, and one grouped matmul per weight
    (``torch._grouped_mm``: each slot's rows against that slot's matrix; empty slots cost nothing). Not
    differentiable (the prediction path). Falls back to every slot on every row, masked, when the shapes do not
    meet the grouped matmul's 16-byte alignment (small widths in tests) -- S times the work, still no host read.
    """
    r, hdim = x.shape
    s_count = bank[block_names(0)[0]].shape[0]
    width = bank[block_names(0)[0]].shape[2]
    order = torch.argsort(slot_ids, stable=True)
    sid = slot_ids.index_select(0, order)
    h = x.index_select(0, order).float()
    aligned = hdim % 4 == 0 and width % 4 == 0 and hasattr(torch, "_grouped_mm")
    if aligned:
        offs = torch.zeros(s_count, dtype=torch.int32, device=x.device).index_add_(
            0, sid, torch.ones_like(sid, dtype=torch.int32)).cumsum(0).to(torch.int32)
        mm = lambda a, w: torch._grouped_mm(a, w.float(), offs=offs)   # noqa: E731
    else:
        onehot = (sid.unsqueeze(1) == torch.arange(s_count, device=x.device)).float()   # [R, S]
        mm = lambda a, w: torch.einsum("rs,srw->rw", onehot, torch.matmul(a.unsqueeze(0), w.float()))  # noqa: E731
    for k in range(blocks):
        up, gate, bias, down = (bank[n] for n in block_names(k))
        act = F.silu(mm(h, gate) + bias.float().index_select(0, sid)) * mm(h, up)
        h = h + mm(act, down)
    if out_ln:
        w, b = bank[OUT_LN_WEIGHT].float().index_select(0, sid), bank[OUT_LN_BIAS].float().index_select(0, sid)
        h = F.layer_norm(h, (hdim,), None, None, LN_EPS) * w + b
    out = torch.empty_like(h).index_copy_(0, order, h)
    return out.to(x.dtype)


def distiller_forward_slots_torch(x: torch.Tensor, params: Dict[str, torch.Tensor], blocks: int,
                                out_ln: bool) -> torch.Tensor:
    """x [A, P, H]: P rows for each of A distillers; params shaped [A, ...] (distiller a = index a) -> [A, P, H].

    The batched training path: one batched matmul per weight for every slot at once, so a training step costs the
    same few kernel launches whatever the number of slots (a loop over slots is host-bound on a GPU). Differentiable;
    fp32 accumulation, output in the input's dtype.
    """
    h = x.float()
    for k in range(blocks):
        up, gate, bias, down = (params[n].float() for n in block_names(k))
        h = h + (F.silu(torch.matmul(h, gate) + bias.unsqueeze(1)) * torch.matmul(h, up)).matmul(down)
    if out_ln:
        w, b = params[OUT_LN_WEIGHT].float(), params[OUT_LN_BIAS].float()
        h = F.layer_norm(h, (h.shape[-1],), None, None, LN_EPS) * w.unsqueeze(1) + b.unsqueeze(1)
    return h.to(x.dtype)
