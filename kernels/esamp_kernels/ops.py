"""One entry point per ESamp hot-path operation; callers never pick an implementation themselves.

Each call runs the Triton kernel on CUDA tensors when the kernel supports the shapes/dtypes (decided before any
launch from shapes, dtypes and devices), and the plain-torch reference otherwise; ``kernel_counters()`` says which
ran. ``ESAMP_KERNELS=auto|torch|triton`` or ``set_kernel_mode(...)`` forces one (see ``dispatch``).
The Triton modules are imported lazily, so CPU-only use never imports triton.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict, Optional

import torch

from .candidate_ref import candidate_novelty_logits_ref
from .dispatch import (KernelUnsupportedError, choose, kernel_counters, kernel_mode, reset_kernel_counters,
                       set_kernel_mode)
from .grouped_forward_torch import grouped_distiller_forward_sorted_torch, grouped_distiller_forward_torch

__all__ = [
    "candidate_novelty_logits", "grouped_distiller_forward", "kernel_counters", "reset_kernel_counters",
    "set_kernel_mode", "kernel_mode", "KernelUnsupportedError",
]


def _triton_module(name: str) -> Optional[ModuleType]:
    """The kernel module, or None when triton cannot be imported here (then only torch can run)."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        return None


def _why_not(name: str, *args) -> Optional[str]:
    mod = _triton_module(name)
    if mod is None:
        return "triton is not importable"
    return mod.unsupported_reason(*args)


def candidate_novelty_logits(h_hat: torch.Tensor, cand_ids: torch.Tensor, counts: torch.Tensor,
                             cand_scaled: torch.Tensor, lm_head_weight: torch.Tensor,
                             lm_head_bias: Optional[torch.Tensor], beta: torch.Tensor,
                             dist_coef: torch.Tensor) -> torch.Tensor:
    """``(1+beta)*l/T - coef * W[cand].h_hat`` on the candidates, -inf past each row's count; [R, C] fp32.

    Exact semantics: ``candidate_ref``. beta == 0 rows pass ``cand_scaled`` through bit for bit.
    """
    args = (h_hat, cand_ids, counts, cand_scaled, lm_head_weight, lm_head_bias, beta, dist_coef)
    impl = choose("candidate_novelty", h_hat.device, lambda: _why_not("candidate_triton", *args))
    if impl == "triton":
        return _triton_module("candidate_triton").candidate_novelty_logits_triton(*args)
    return candidate_novelty_logits_ref(*args)


def grouped_distiller_forward(x: torch.Tensor, slot_ids: torch.Tensor, bank: Dict[str, torch.Tensor],
                              blocks: int, out_ln: bool, sync_free: bool = False) -> torch.Tensor:
    """No-grad prediction path over a slot bank: row r runs slot ``slot_ids[r]``'s distiller. [R, H], x's dtype.

    Slot ids must lie in [0, S); the Triton path does not check them (that would need a host sync).
    ``sync_free``: never read a tensor value back to the host (the Triton kernel never does; in torch the rows
    are sorted by slot and run as one grouped matmul per weight, ``grouped_distiller_forward_sorted_torch``).
    """
    args = (x, slot_ids, bank, blocks, out_ln)
    impl = choose("grouped_forward", x.device, lambda: _why_not("grouped_forward_triton", *args))
    if impl == "triton":
        return _triton_module("grouped_forward_triton").grouped_distiller_forward_triton(*args)
    if sync_free:
        return grouped_distiller_forward_sorted_torch(*args)
    return grouped_distiller_forward_torch(*args)
