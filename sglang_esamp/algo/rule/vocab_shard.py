"""ESamp's candidate logits when the LM head is split by vocabulary across tensor-parallel ranks.

Under ``--tp-size N`` every rank holds the rows ``[start, end)`` of the LM head (SGLang's vocab-parallel head), but
every rank sees the full-vocabulary logits (SGLang all-gathers them before sampling), the same replicated hidden
states, and so builds the same candidate sets and trains an identical distiller replica. The distiller term of a
candidate ``W[id] . h_hat`` is computed by the rank that holds row ``id`` (0 elsewhere) and summed over the TP
group with one all-reduce of the [R, C] candidate block -- C numbers per row, never the vocabulary. The result is
the same on every rank, so the ranks sample the same token (same noise: the same seeded or RNG draws everywhere)
and SGLang's own token sync stays consistent. The alternative -- one rank with a gathered full head -- would hold
the whole head twice on that rank and make the others wait for a broadcast; this one costs a small all-reduce.
Plain torch: the fused Triton kernel does not take part under TP (the partial sums must cross ranks first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from esamp_kernels.candidate_ref import candidate_distiller_logits_ref, combine_novelty


@dataclass
class VocabShard:
    start: int                                   # first token id whose LM-head row this rank holds
    end: int                                     # one past the last
    all_reduce: Callable[[torch.Tensor], torch.Tensor]   # sum over the TP group (SGLang's GroupCoordinator)
    tp_size: int = 1


def sharded_candidate_logits(h_hat: torch.Tensor, cand_ids: torch.Tensor, counts: torch.Tensor,
                             cand_scaled: torch.Tensor, w_local: torch.Tensor, b_local: Optional[torch.Tensor],
                             beta: torch.Tensor, coef: torch.Tensor, shard: VocabShard) -> torch.Tensor:
    """The semantics of ``esamp_kernels.candidate_ref.candidate_novelty_logits_ref`` over a vocab-sharded head."""
    in_shard = (cand_ids >= shard.start) & (cand_ids < shard.end)
    local = torch.where(in_shard, cand_ids - shard.start, torch.zeros_like(cand_ids))
    dist = candidate_distiller_logits_ref(h_hat, local, w_local, b_local) * in_shard
    return combine_novelty(cand_scaled, shard.all_reduce(dist.contiguous()), counts, beta, coef)
