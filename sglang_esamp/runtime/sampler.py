"""``ESampSampler``: SGLang's own Sampler, plus the ESamp rule on the rows of the current step that use it.

Everything SGLang does stays as it is (penalties, grammar, custom logit processors, NaN handling, logprobs, TP
token sync). Two overrides:
  * ``_preprocess_logits``: after SGLang's preprocessing, keep a copy of the ESamp rows' logits (the sampler then
    divides by the temperature and softmaxes in place);
  * ``_sample_from_probs``: SGLang samples every row as usual; the ESamp rows' tokens are then replaced by the
    ESamp rule applied to the saved logits with the rows' own temperature/top-k/top-p/min-p.
Rows without ESamp therefore go through exactly the stock computation (bit-identical), and an all-greedy batch
never reaches ``_sample_from_probs`` (greedy rows are untouched by default). Logprobs, when requested, are the
LLM's own log-probabilities of the token that was chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from sglang.srt.layers.sampler import Sampler

from . import step_trace

STEP_ATTR = "_esamp_step"


@dataclass
class SamplerStep:
    rows: torch.Tensor           # [R] int64 batch rows that use ESamp
    betas: torch.Tensor          # [R] fp32
    h_hat: torch.Tensor          # [R, H] predicted final hidden (weights after the previous update)
    core: object                 # ESampCore
    rids: Optional[list] = None  # request ids and groups of the rows (for the optional step trace)
    groups: Optional[list] = None
    snapshot: Optional[torch.Tensor] = None


class ESampSampler(Sampler):
    def _preprocess_logits(self, logits, sampling_info):
        logits = super()._preprocess_logits(logits, sampling_info)
        step: Optional[SamplerStep] = getattr(sampling_info, STEP_ATTR, None)
        if step is not None and step.snapshot is None and logits.shape[0] == len(sampling_info.temperatures):
            step.snapshot = logits.index_select(0, step.rows).float()
        return logits

    def _sample_from_probs(self, probs, sampling_info, positions, simple_sampling_case):
        ids, capture = super()._sample_from_probs(probs, sampling_info, positions, simple_sampling_case)
        step: Optional[SamplerStep] = getattr(sampling_info, STEP_ATTR, None)
        if step is None or step.snapshot is None:
            return ids, capture
        rows = step.rows
        pick = lambda t: t.reshape(-1).index_select(0, rows)  # noqa: E731  [bs,1] or [bs] -> [R]
        out = step.core.sample(step.snapshot, pick(sampling_info.temperatures), pick(sampling_info.top_ks),
                               pick(sampling_info.top_ps), pick(sampling_info.min_ps), step.betas, step.h_hat)
        ids = ids.clone()
        ids[rows] = out.tokens.to(ids.dtype)
        if step.rids is not None:
            step_trace.write(step.rids, step.groups, out)
        return ids, capture
