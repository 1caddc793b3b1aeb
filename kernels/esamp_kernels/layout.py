"""The distiller's parameter layout: the one home of its names, shapes and LayerNorm epsilon.

Used by the algorithm (``sglang_esamp.algo.distiller.distiller``, the bank, the warm-start files), the torch references and
the Triton kernels. A distiller of hidden size H, width W and K blocks has, per block k,
  ``blocks.{k}.up`` [H, W], ``blocks.{k}.gate`` [H, W], ``blocks.{k}.gate_bias`` [W], ``blocks.{k}.down`` [W, H]
and with the output LayerNorm ``out_ln.weight`` [H], ``out_ln.bias`` [H]. A bank stores each with a leading slot
dimension ``[S, ...]``. One block computes ``x + (silu(x @ gate + gate_bias) * (x @ up)) @ down``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

LN_EPS = 1e-5
BLOCK_PARAMS = ("up", "gate", "gate_bias", "down")
OUT_LN_WEIGHT = "out_ln.weight"
OUT_LN_BIAS = "out_ln.bias"


def block_names(k: int) -> Tuple[str, str, str, str]:
    """(up, gate, gate_bias, down) of block k."""
    return tuple(f"blocks.{k}.{p}" for p in BLOCK_PARAMS)


def param_names(blocks: int, out_ln: bool) -> List[str]:
    names = [n for k in range(blocks) for n in block_names(k)]
    return names + [OUT_LN_WEIGHT, OUT_LN_BIAS] if out_ln else names


def param_shapes(hidden: int, width: int, blocks: int, out_ln: bool) -> Dict[str, tuple]:
    h, w = hidden, width
    per_block = {"up": (h, w), "gate": (h, w), "gate_bias": (w,), "down": (w, h)}
    shapes = {f"blocks.{k}.{p}": per_block[p] for k in range(blocks) for p in BLOCK_PARAMS}
    if out_ln:
        shapes[OUT_LN_WEIGHT] = (h,)
        shapes[OUT_LN_BIAS] = (h,)
    return shapes
