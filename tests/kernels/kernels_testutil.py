"""Input builders and tolerance checks shared by the kernel tests."""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch

EPS32 = torch.finfo(torch.float32).eps


def assert_interpreted(fn) -> None:
    """The kernel must be the interpreter's: a compiled JITFunction would mean TRITON_INTERPRET came too late."""
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(fn, InterpretedFunction), "TRITON_INTERPRET=1 was not set before the kernel module was imported"


def candidate_inputs(rows: int, cands: int, weight: torch.Tensor, dtype: torch.dtype, *, gen: torch.Generator,
                     counts: Optional[list] = None, betas: Optional[list] = None, with_bias: bool = False,
                     index_dtype=torch.int64) -> Dict[str, torch.Tensor]:
    """Random candidates over ``weight`` [V, H]; ragged counts; the last vocabulary row is always a candidate."""
    vocab, hidden = weight.shape
    ids = torch.randint(0, vocab, (rows, cands), generator=gen)
    ids[0, 0] = vocab - 1  # the int64 row offset of the last row is the largest the kernel computes
    if counts is None:
        counts = torch.randint(0, cands + 1, (rows,), generator=gen).tolist()
        counts[0] = cands
    if betas is None:
        betas = (torch.rand(rows, generator=gen) * 2).tolist()
    beta = torch.tensor(betas, dtype=torch.float32)
    temp = 0.5 + torch.rand(rows, generator=gen)
    scaled = (torch.randn(rows, cands, generator=gen) * 3 / temp[:, None]).to(dtype)
    return {
        "h_hat": (torch.randn(rows, hidden, generator=gen) * 2).to(dtype),
        "cand_ids": ids.to(index_dtype),
        "counts": torch.tensor(counts, dtype=index_dtype),
        "cand_scaled": scaled,
        "lm_head_weight": weight,
        "lm_head_bias": (torch.randn(vocab, generator=gen) * 0.5).to(dtype) if with_bias else None,
        "beta": beta,
        # the "scaled" temperature form beta / T: a coefficient that differs from beta
        "dist_coef": beta / temp,
    }


def assert_candidate_close(out: torch.Tensor, ref: torch.Tensor, inp: Dict[str, torch.Tensor]) -> None:
    """Kernel and reference both form fp32 products of the same (exactly upcast) inputs and differ only in the
    order of the fp32 sums over H. Bound per element: 4 * eps32 * sqrt(H) * coef * sum_h |w_h * h_h| (random
    rounding errors grow like sqrt(H); factor 4 for headroom), plus 4 ulp of the (1+beta)*l/T term.
    Padding (-inf) and every non-finite entry must match exactly."""
    assert out.dtype == torch.float32 and out.shape == ref.shape
    fin = torch.isfinite(ref)
    assert torch.equal(fin, torch.isfinite(out)), "finite pattern differs"
    assert torch.equal(out[~fin], ref[~fin])
    w = inp["lm_head_weight"].index_select(0, inp["cand_ids"].reshape(-1).long()).view(*inp["cand_ids"].shape, -1)
    mag = torch.bmm(w.float().abs(), inp["h_hat"].float().abs().unsqueeze(-1)).squeeze(-1)
    hidden = inp["h_hat"].shape[1]
    beta = inp["beta"].float()[:, None]
    bound = (4 * EPS32 * math.sqrt(hidden) * inp["dist_coef"].float().abs()[:, None] * mag
             + 4 * EPS32 * (1 + beta) * inp["cand_scaled"].float().abs() + 1e-30)
    err = (out - ref).abs()
    worst = (err[fin] / bound[fin]).max().item() if fin.any() else 0.0
    assert worst <= 1.0, f"error exceeds the fp32 summation bound by {worst:.2f}x"


def make_bank(slots: int, hidden: int, width: int, blocks: int, out_ln: bool, dtype: torch.dtype, *,
              gen: torch.Generator) -> Dict[str, torch.Tensor]:
    """A bank with weights large enough that every block visibly moves the residual (down is not zero)."""
    bank = {}
    for k in range(blocks):
        bank[f"blocks.{k}.up"] = torch.randn(slots, hidden, width, generator=gen) / math.sqrt(hidden)
        bank[f"blocks.{k}.gate"] = torch.randn(slots, hidden, width, generator=gen) / math.sqrt(hidden)
        bank[f"blocks.{k}.gate_bias"] = torch.randn(slots, width, generator=gen) * 0.5
        bank[f"blocks.{k}.down"] = torch.randn(slots, width, hidden, generator=gen) / math.sqrt(width)
    if out_ln:
        bank["out_ln.weight"] = 1 + 0.2 * torch.randn(slots, hidden, generator=gen)
        bank["out_ln.bias"] = 0.2 * torch.randn(slots, hidden, generator=gen)
    return {k: v.to(dtype) for k, v in bank.items()}
