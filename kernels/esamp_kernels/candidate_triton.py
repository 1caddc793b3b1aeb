"""Triton kernel for the candidate novelty reweighting; the truth is ``candidate_ref.candidate_novelty_logits_ref``.

One program owns BLOCK_C candidates of one row: it gathers their LM-head rows in BLOCK_H-wide slices, multiplies
by the row's predicted hidden and reduces once at the end (fp32 accumulator tile), then combines
``(1 + beta) * l/T - coef * dist`` and writes fp32. Only valid candidates' rows are loaded, so ragged rows cost
what they hold; programs past a row's count and rows with beta == 0 load no weights at all (beta == 0 copies the
input logits exactly, bit for bit).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .support import FLOAT_DTYPES, INDEX_DTYPES, same_device, sm_count

# Tile of BLOCK_C x BLOCK_H gathered weights per step: 4096 elements keep the fp32 accumulator at 32 registers
# per thread with 4 warps, and each gathered row segment is >= 128 elements (>= 256 contiguous bytes).
_TILE_ELEMS = 4096
_NUM_WARPS = 4


@triton.jit
def _candidate_novelty_kernel(
    h_ptr, ids_ptr, counts_ptr, scaled_ptr, w_ptr, bias_ptr, beta_ptr, coef_ptr, out_ptr,
    C, H,
    stride_h_r, stride_h_h,
    stride_ids_r, stride_ids_c,
    stride_s_r, stride_s_c,
    stride_w_v, stride_w_h,
    stride_o_r, stride_o_c,
    HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
):
    row = tl.program_id(0)
    c_offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    count = tl.load(counts_ptr + row)
    valid = (c_offs < C) & (c_offs < count)

    beta = tl.load(beta_ptr + row).to(tl.float32)
    coef = tl.load(coef_ptr + row).to(tl.float32)
    scaled = tl.load(scaled_ptr + row * stride_s_r + c_offs * stride_s_c, mask=valid, other=0.0).to(tl.float32)

    # Skip the whole gather when nothing here needs the distiller term (beta == 0, or past this row's count).
    need = (beta != 0.0) & (tl.program_id(1) * BLOCK_C < count)
    n_steps = tl.where(need, tl.cdiv(H, BLOCK_H), 0)
    # int64 row offsets: V * H exceeds 2**31 elements for large vocabularies.
    ids = tl.load(ids_ptr + row * stride_ids_r + c_offs * stride_ids_c, mask=valid, other=0).to(tl.int64)
    w_rows = w_ptr + ids[:, None] * stride_w_v
    acc = tl.zeros((BLOCK_C, BLOCK_H), dtype=tl.float32)
    for step in range(0, n_steps):
        h_offs = step * BLOCK_H + tl.arange(0, BLOCK_H)
        h_mask = h_offs < H
        h = tl.load(h_ptr + row * stride_h_r + h_offs * stride_h_h, mask=h_mask, other=0.0).to(tl.float32)
        w = tl.load(w_rows + h_offs[None, :] * stride_w_h, mask=valid[:, None] & h_mask[None, :], other=0.0)
        acc += w.to(tl.float32) * h[None, :]
    dist = tl.sum(acc, axis=1)
    if HAS_BIAS:
        dist += tl.load(bias_ptr + ids, mask=valid, other=0.0).to(tl.float32)

    new = (1.0 + beta) * scaled - coef * dist
    new = tl.where(beta == 0.0, scaled, new)
    new = tl.where(valid, new, float("-inf"))
    tl.store(out_ptr + row * stride_o_r + c_offs * stride_o_c, new, mask=c_offs < C)


# Decided when the kernel was decorated (TRITON_INTERPRET at import), not by the env at call time.
_INTERPRETED = not isinstance(_candidate_novelty_kernel, triton.runtime.JITFunction)


def unsupported_reason(h_hat: torch.Tensor, cand_ids: torch.Tensor, counts: torch.Tensor, cand_scaled: torch.Tensor,
                       lm_head_weight: torch.Tensor, lm_head_bias: Optional[torch.Tensor], beta: torch.Tensor,
                       dist_coef: torch.Tensor) -> Optional[str]:
    """Why this call cannot run the kernel (decided from shapes/dtypes/devices only), or None."""
    tensors = [h_hat, cand_ids, counts, cand_scaled, lm_head_weight, beta, dist_coef]
    if lm_head_bias is not None:
        tensors.append(lm_head_bias)
    if not same_device(tensors):
        return "tensors are on different devices"
    if h_hat.device.type != "cuda" and not _INTERPRETED:
        return "non-CUDA tensors need the kernels built for the interpreter (TRITON_INTERPRET=1 before import)"
    if h_hat.dim() != 2 or cand_ids.dim() != 2 or cand_scaled.dim() != 2 or lm_head_weight.dim() != 2:
        return "h_hat, cand_ids, cand_scaled and lm_head_weight must be 2-D"
    r, h = h_hat.shape
    c = cand_ids.shape[1]
    if cand_ids.shape[0] != r or tuple(cand_scaled.shape) != (r, c) or lm_head_weight.shape[1] != h:
        return "shape mismatch between h_hat [R, H], cand_ids/cand_scaled [R, C] and lm_head_weight [V, H]"
    for name, t in (("counts", counts), ("beta", beta), ("dist_coef", dist_coef)):
        if t.dim() != 1 or t.shape[0] != r:
            return f"{name} must be 1-D with R entries"
    if lm_head_bias is not None and tuple(lm_head_bias.shape) != (lm_head_weight.shape[0],):
        return "lm_head_bias must be [V]"
    if cand_ids.dtype not in INDEX_DTYPES or counts.dtype not in INDEX_DTYPES:
        return "cand_ids and counts must be int32 or int64"
    floats = [h_hat, cand_scaled, lm_head_weight, beta, dist_coef] + tensors[7:]  # + the bias, if any
    if any(t.dtype not in FLOAT_DTYPES for t in floats):
        return "float inputs must be float32, bfloat16 or float16"
    if r == 0 or c == 0 or h == 0:
        return "empty input"
    return None


def _block_c(rows: int, cands: int, device: torch.device) -> int:
    """Largest candidate block that still gives about two programs per SM (small R x C needs more programs).

    Under the CPU interpreter there is one "SM", so this picks the largest block (fewest interpreted programs).
    """
    sms = sm_count(device)
    cap = triton.next_power_of_2(cands)
    for block in (32, 16, 8):
        if block <= cap and rows * triton.cdiv(cands, block) >= 2 * sms:
            return block
    return 4


def candidate_novelty_logits_triton(h_hat: torch.Tensor, cand_ids: torch.Tensor, counts: torch.Tensor,
                                    cand_scaled: torch.Tensor, lm_head_weight: torch.Tensor,
                                    lm_head_bias: Optional[torch.Tensor], beta: torch.Tensor,
                                    dist_coef: torch.Tensor, *, block_c: Optional[int] = None) -> torch.Tensor:
    """Same contract as the reference: [R, C] fp32. Caller checks ``unsupported_reason`` first.

    ``block_c`` overrides the heuristic (tests use it to cover every block size under the interpreter).
    """
    r, h = h_hat.shape
    c = cand_ids.shape[1]
    out = torch.empty((r, c), dtype=torch.float32, device=h_hat.device)
    block_c = block_c or _block_c(r, c, h_hat.device)
    block_h = min(_TILE_ELEMS // block_c, triton.next_power_of_2(h))
    # The per-row vectors are indexed with unit stride in the kernel; they are tiny, so copying is free.
    counts, beta, dist_coef = counts.contiguous(), beta.contiguous(), dist_coef.contiguous()
    bias = lm_head_bias.contiguous() if lm_head_bias is not None else lm_head_weight  # unread without HAS_BIAS
    _candidate_novelty_kernel[(r, triton.cdiv(c, block_c))](
        h_hat, cand_ids, counts, cand_scaled, lm_head_weight, bias, beta, dist_coef, out,
        c, h,
        h_hat.stride(0), h_hat.stride(1),
        cand_ids.stride(0), cand_ids.stride(1),
        cand_scaled.stride(0), cand_scaled.stride(1),
        lm_head_weight.stride(0), lm_head_weight.stride(1),
        out.stride(0), out.stride(1),
        HAS_BIAS=lm_head_bias is not None, BLOCK_C=block_c, BLOCK_H=block_h, num_warps=_NUM_WARPS,
    )
    return out
