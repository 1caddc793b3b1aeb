"""The latent distiller: K gated residual blocks, stored per slot in a bank of ``[S, ...]`` tensors.

One block: ``x <- x + (silu(x @ gate + gate_bias) * (x @ up)) @ down``; optional output LayerNorm. The parameter
names and shapes (also the warm-start file layout, without the slot dimension) live in ``esamp_kernels.layout``,
shared with the torch references and the kernels.
Random init (DESIGN §1): up/gate ~ N(0, 0.02^2), gate_bias = ``gate_bias_init``, down = 0, LN = (1, 0), so a fresh
distiller is the identity map (or LN(x) with the output LayerNorm).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from esamp_kernels import layout
from esamp_kernels.grouped_forward_torch import distiller_forward_torch

INIT_STD = 0.02


@dataclass(frozen=True)
class DistillerShape:
    hidden: int
    blocks: int = 2
    width: int = 384
    out_ln: bool = False
    gate_bias_init: float = 0.0

    def param_shapes(self) -> Dict[str, tuple]:
        return layout.param_shapes(self.hidden, self.width, self.blocks, self.out_ln)

    def num_params(self) -> int:
        n = 0
        for shape in self.param_shapes().values():
            p = 1
            for d in shape:
                p *= d
            n += p
        return n

    def to_dict(self) -> dict:
        return {"hidden": self.hidden, "blocks": self.blocks, "width": self.width, "out_ln": self.out_ln,
                "gate_bias_init": self.gate_bias_init}


def init_params_(params: Dict[str, torch.Tensor], shape: DistillerShape, generator: Optional[torch.Generator] = None):
    """Random init in place; tensors may carry a leading slot dimension (all slots given are initialised)."""
    with torch.no_grad():
        for name, t in params.items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("up", "gate"):
                t.copy_(torch.randn(t.shape, generator=generator, dtype=torch.float32, device="cpu").mul_(INIT_STD))
            elif leaf == "gate_bias":
                t.fill_(shape.gate_bias_init)
            elif leaf in ("down", "bias"):
                t.zero_()
            elif leaf == "weight":
                t.fill_(1.0)
            else:
                raise KeyError(name)


class Distiller(nn.Module):
    """A single distiller (one slot) as an ``nn.Module``: what offline pretraining trains and exports."""

    def __init__(self, shape: DistillerShape, dtype=torch.float32, device=None,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.shape = shape
        self.params = nn.ParameterDict()
        for name, s in shape.param_shapes().items():
            self.params[name.replace(".", "__")] = nn.Parameter(torch.empty(s, dtype=dtype, device=device))
        init_params_(self.named_tensors(), shape, generator)

    def named_tensors(self) -> Dict[str, torch.Tensor]:
        return {k.replace("__", "."): v for k, v in self.params.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return distiller_forward_torch(x, self.named_tensors(), self.shape.blocks, self.shape.out_ln)

    def export_state(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().float().contiguous().cpu() for k, v in self.named_tensors().items()}

    def load_export_state(self, state: Dict[str, torch.Tensor]):
        check_state_matches(state, self.shape)
        with torch.no_grad():
            for k, v in self.named_tensors().items():
                v.copy_(state[k])


def check_state_matches(state: Dict[str, torch.Tensor], shape: DistillerShape):
    expected = shape.param_shapes()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"distiller state does not match {shape.to_dict()}: missing {missing}, unexpected {extra}")
    for k, s in expected.items():
        if tuple(state[k].shape) != tuple(s):
            raise ValueError(f"distiller state {k}: shape {tuple(state[k].shape)}, expected {tuple(s)}")
