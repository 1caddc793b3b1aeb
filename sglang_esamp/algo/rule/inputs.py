"""The rule's input, as one value (in the spirit of vLLM v1's ``SamplingMetadata``): ``RuleInputs`` carries every
row's taps, logits, filters, terms (kind, beta, coefficient, divisor, slot), seeds and the candidate width, so the
core's ``sample(inputs)`` and the rule ``sampling.esamp_sample(inputs, h_hat, head, options)`` take one argument
for everything that varies per step; ``LMHead`` and ``RuleOptions`` are what the server fixes.

A row's *kind* decides its terms (``RowTerms.plan``):
  * ``ESAMP``         the rule with its group's distiller: beta, coefficient 1; ``esamp.sharpen: false`` divides the
                      reweighted logits by 1 + beta (``l/T - beta/(1+beta) * l_dist``);
  * ``CONTROL``       ``esamp.sharpen_only``: the (1 + beta) sharpening of the same candidates, no distiller term;
  * ``SAMPLER_ONLY``  beta 0: a seed, sampled logprobs or per-token signals need ESamp's sampler, nothing else
                      (a prefill row, or a member without a distiller);
  * ``BANK_FULL``     the group got no slot but still needs the sampler: beta 0 as above (counted by the table).
Rows that cannot use their distiller after the plan (a stale tap, a group released meanwhile) are masked to beta 0
and slot -1 (``RowTerms.masked``) rather than removed, so no row list is re-indexed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import List, Optional, Sequence

import torch

from .seeded_noise import SeededRows
from .vocab_shard import VocabShard


class RowKind(IntEnum):
    ESAMP = 0
    CONTROL = 1
    SAMPLER_ONLY = 2
    BANK_FULL = 3


@dataclass
class RowTerms:
    """What the rule does with each row, [R] each."""
    slots: torch.Tensor                       # int64 distiller slot; -1 = none
    betas: torch.Tensor                       # fp32; 0 = not reweighted
    distiller_coef: torch.Tensor              # fp32 multiplier of the distiller term: 1 = ESamp, 0 = control
    divisor: Optional[torch.Tensor] = None    # fp32 the reweighted logits are divided by; None = 1 everywhere

    @classmethod
    def plan(cls, kinds: Sequence[RowKind], betas: Sequence[float], slots: Sequence[int],
             sharpen: Sequence[bool], device) -> "RowTerms":
        beta = [b if k in (RowKind.ESAMP, RowKind.CONTROL) else 0.0 for k, b in zip(kinds, betas)]
        coef = [1.0 if k == RowKind.ESAMP else 0.0 for k in kinds]
        div = [1.0 + b if k == RowKind.ESAMP and not sh else 1.0 for k, b, sh in zip(kinds, beta, sharpen)]
        f32 = dict(dtype=torch.float32, device=device)
        return cls(slots=torch.tensor(list(slots), dtype=torch.int64, device=device), betas=torch.tensor(beta, **f32),
                   distiller_coef=torch.tensor(coef, **f32),
                   divisor=torch.tensor(div, **f32) if any(d != 1 for d in div) else None)

    def masked(self, keep: torch.Tensor) -> "RowTerms":
        """Rows where ``keep`` is False lose their distiller and their reweighting (beta 0, slot -1)."""
        return replace(self, slots=torch.where(keep, self.slots, -1), betas=torch.where(keep, self.betas, 0.0),
                       distiller_coef=torch.where(keep, self.distiller_coef, 0.0))


@dataclass
class RuleInputs:
    """One step's input to the rule, [R] or [R, ...] per tensor."""
    logits: torch.Tensor                      # [R, V] fp32 after SGLang's preprocessing
    temperatures: torch.Tensor                # [R] fp32
    top_ks: torch.Tensor                      # [R] int64 (SGLang's normalized: greedy = 1)
    top_ps: torch.Tensor                      # [R] fp32
    min_ps: torch.Tensor                      # [R] fp32
    betas: torch.Tensor                       # [R] fp32
    distiller_coef: Optional[torch.Tensor] = None   # [R] fp32; None = 1
    divisor: Optional[torch.Tensor] = None    # [R] fp32; None = 1
    h_src: Optional[torch.Tensor] = None      # [R, H] shallow taps (what the distiller predicts from)
    slots: Optional[torch.Tensor] = None      # [R] int64 (-1: no distiller)
    noise: Optional[torch.Tensor] = None      # [R, >= K] Gumbel draws (tests, benchmarks); None: drawn in the rule
    seeded: Optional[SeededRows] = None       # rows that draw counter-based noise from their request's seed
    width: Optional[int] = None               # the sync-free form's candidate width (filters.width_bucket)

    @classmethod
    def of(cls, terms: RowTerms, h_src: torch.Tensor, logits: torch.Tensor, filters: Sequence[torch.Tensor],
           seeded: Optional[SeededRows] = None, width: Optional[int] = None) -> "RuleInputs":
        """A step's inputs from its planned terms, taps and logits, and the rows' (T, top-k, top-p, min-p)."""
        temps, top_ks, top_ps, min_ps = (t.reshape(-1) for t in filters)
        return cls(logits, temps.float(), top_ks.long(), top_ps.float(), min_ps.float(), terms.betas,
                   terms.distiller_coef, terms.divisor, h_src, terms.slots, seeded=seeded, width=width)

    def tensors(self) -> List[str]:
        """The names of the tensor fields present (what a replay bucket holds)."""
        return [f.name for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]


@dataclass
class LMHead:
    weight: torch.Tensor                      # [V, H] (this rank's rows under tensor parallelism)
    bias: Optional[torch.Tensor] = None       # [V]
    shard: Optional[VocabShard] = None        # the vocabulary slice it holds (tensor parallel), None = all


@dataclass(frozen=True)
class RuleOptions:
    candidate_cap: int = 1024                 # candidates at most per row when no filter bounds them
    greedy_mode: str = "skip"                 # greedy rows: SGLang's argmax (skip) or reweighted (apply)
    temperature_form: str = "tllm"            # the distiller term's coefficient: beta (tllm) or beta / T (scaled)
