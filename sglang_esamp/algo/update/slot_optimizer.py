"""The per-slot optimizer arithmetic both update paths share: ``clip_grad_norm_``'s clip per slot, and Adam (torch's
arithmetic, bias corrections from each slot's own step count, no weight decay) or plain SGD. Out of place, so the
reference writes the result back where it updated and the sync-free step keeps it with a mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

CLIP_EPS = 1e-6


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str = "adam"          # adam | sgd
    lr: float = 4e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-4
    grad_clip: float = 0.5      # 0 disables


def clip_coefficients(opt: OptimizerSpec, norms: torch.Tensor) -> torch.Tensor:
    """[A] factors a slot's gradient is scaled by: ``min(1, clip / (norm + 1e-6))`` (1 when clipping is off)."""
    if opt.grad_clip > 0:
        return (opt.grad_clip / (norms + CLIP_EPS)).clamp(max=1.0)
    return torch.ones_like(norms)


class AdamCoefficients:
    """Adam's per-slot step size and bias correction from the slots' step counts (after this step's increment)."""

    def __init__(self, opt: OptimizerSpec, steps: torch.Tensor):
        b1, b2 = opt.betas
        step = steps.clamp(min=1).to(torch.float64)
        self.neg_step_size = (-opt.lr / (1 - b1 ** step)).to(torch.float32)     # -lr / bias_correction1
        self.bc2_sqrt = (1 - b2 ** step).sqrt().to(torch.float32)


def slot_update(opt: OptimizerSpec, p: torch.Tensor, g: torch.Tensor, coef: torch.Tensor, moments=None,
                adam: AdamCoefficients = None) -> Tuple[torch.Tensor, ...]:
    """One step for ``p`` [A, ...] with gradient ``g`` scaled by ``coef`` [A]: SGD gives ``(p',)``, Adam (with the
    fp32 ``moments`` (m, v) and ``adam``) gives ``(p', m', v')``."""
    view = (-1,) + (1,) * (g.dim() - 1)
    g = g * coef.view(view)
    if opt.kind == "sgd":
        return (p - opt.lr * g,)
    b1, b2 = opt.betas
    m, v = moments
    m = m.lerp(g, 1 - b1)
    v = v * b2 + (1 - b2) * g * g
    denom = v.sqrt() / adam.bc2_sqrt.view(view) + opt.eps
    return p + adam.neg_step_size.view(view) * m / denom, m, v
