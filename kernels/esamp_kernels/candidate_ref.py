"""Plain-torch reference of the candidate novelty reweighting (the truth for ``candidate_triton``).

For R rows with up to C candidate token ids each (padded; ``counts[r]`` valid entries per row):
  dist[r, j] = lm_head_weight[cand_ids[r, j]] . h_hat[r]  (+ lm_head_bias[cand_ids[r, j]])
  new[r, j]  = (1 + beta[r]) * cand_scaled[r, j] - dist_coef[r] * dist[r, j]     for j < counts[r]
  new[r, j]  = cand_scaled[r, j]  exactly when beta[r] == 0                      (bit-identity)
  new[r, j]  = -inf                                                              for j >= counts[r]
``cand_scaled`` are the LLM's candidate logits already divided by the temperature; ``dist_coef`` is beta
(tLLM/paper form) or beta / T (the "scaled" temperature form). fp32 accumulation and output.
Only the C needed LM-head rows are touched: cost never scales with the vocabulary.
"""
from __future__ import annotations

from typing import Optional

import torch


# Rows per gather chunk are chosen so the gathered fp32 rows stay under this many elements. On CUDA the chunk is
# large (256 MiB) so launches stay few; without it R=128 x C=1024 x H=3584 would materialise ~1.9 GB. On CPU it is
# cache-sized (4 MiB): a fresh tens-of-MB buffer per call is served by mmap and page-faulted on every step, which
# measured 27 ms against 4 ms for 16 rows x 1024 candidates x H=576 (one thread). Chunking changes no semantics
# (fp32 accumulation either way); the rounding of a row may differ in the last bit with the chunk's batch size.
_GATHER_CHUNK_ELEMS = {"cuda": 1 << 26, "cpu": 1 << 20}


def candidate_distiller_logits_ref(h_hat: torch.Tensor, cand_ids: torch.Tensor, lm_head_weight: torch.Tensor,
                                   lm_head_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """dist [R, C] = W[cand_ids] . h_hat (+ b), fp32."""
    r, c = cand_ids.shape
    budget = _GATHER_CHUNK_ELEMS.get(h_hat.device.type, _GATHER_CHUNK_ELEMS["cpu"])
    hdim = lm_head_weight.shape[1]
    rows_per_chunk = max(1, min(r, budget // max(1, c * hdim)))
    dist = torch.empty((r, c), dtype=torch.float32, device=h_hat.device)
    if r == 0 or c == 0:   # nothing to gather: skip the chunk buffers
        return dist
    # one gather buffer and one fp32 buffer for all chunks: a fresh multi-MB buffer per chunk is page-faulted anew
    # (measured 0.22 ms against 0.06 ms to convert 1024 x 896 bf16 rows into a reused buffer)
    rows_buf = torch.empty((rows_per_chunk * c, hdim), dtype=lm_head_weight.dtype, device=h_hat.device)
    w32 = rows_buf if lm_head_weight.dtype == torch.float32 else torch.empty_like(rows_buf, dtype=torch.float32)
    h32 = h_hat.float()
    for lo in range(0, r, rows_per_chunk):
        ids = cand_ids[lo:lo + rows_per_chunk]
        n = ids.numel()
        torch.index_select(lm_head_weight, 0, ids.reshape(-1), out=rows_buf[:n])
        if w32 is not rows_buf:
            w32[:n].copy_(rows_buf[:n])
        torch.bmm(w32[:n].view(*ids.shape, hdim), h32[lo:lo + rows_per_chunk].unsqueeze(-1),
                  out=dist[lo:lo + rows_per_chunk].unsqueeze(-1))
    if lm_head_bias is not None:
        dist = dist + lm_head_bias.float().index_select(0, cand_ids.reshape(-1)).view(cand_ids.shape)
    return dist


def combine_novelty(cand_scaled: torch.Tensor, dist: torch.Tensor, counts: torch.Tensor, beta: torch.Tensor,
                    dist_coef: torch.Tensor) -> torch.Tensor:
    """The formula above from the candidates' distiller logits ``dist`` [R, C] (however they were computed)."""
    scaled = cand_scaled.float()
    beta_col = beta.float().unsqueeze(1)
    new = (1.0 + beta_col) * scaled - dist_coef.float().unsqueeze(1) * dist
    new = torch.where(beta_col == 0, scaled, new)
    valid = torch.arange(dist.shape[1], device=dist.device).unsqueeze(0) < counts.unsqueeze(1)
    return new.masked_fill(~valid, float("-inf"))


def candidate_novelty_logits_ref(h_hat: torch.Tensor, cand_ids: torch.Tensor, counts: torch.Tensor,
                                 cand_scaled: torch.Tensor, lm_head_weight: torch.Tensor,
                                 lm_head_bias: Optional[torch.Tensor], beta: torch.Tensor,
                                 dist_coef: torch.Tensor) -> torch.Tensor:
    dist = candidate_distiller_logits_ref(h_hat, cand_ids, lm_head_weight, lm_head_bias)
    return combine_novelty(cand_scaled, dist, counts, beta, dist_coef)
