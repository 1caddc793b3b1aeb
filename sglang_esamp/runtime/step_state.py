"""``ESampStep``: everything one forward step knows about its ESamp rows, in one typed object.

``step.plan`` creates it; the ``after_init_new`` shim attaches it, with the runtime (``Armed``), to the step's
``SamplingBatchInfo`` under one attribute (``ATTR``; the model may run on a shallow copy of the ForwardBatch, but every copy and
``ModelRunner.sample`` share that SamplingBatchInfo). ``step.run`` fills it from the tap buffers (``h_src``,
``h_tgt``) and the prediction, the sampler adds ``logits`` and ``out``, and the ``around_sample`` shim removes it
in a ``finally``. Nothing else about a step is stored on SGLang objects, so nothing can leak into a later step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import torch

from ..algo.rule.inputs import RowTerms
from ..algo.rule.sampling import SampleOutput
from ..algo.rule.seeded_noise import SeededRows

ATTR = "esamp_step"


@dataclass
class ESampStep:
    # 1. plan (step.plan): the batch rows that use the ESamp rule this step, in batch order
    rows: torch.Tensor                      # [R] int64 batch rows
    members: List[object]                   # [R] members.Member of each row
    planned_slots: List[int]                # [R] distiller slot as planned on the host (-1: none); no device read
    terms: RowTerms                         # [R] what the rule does per row: slot, beta, coefficient, divisor
    sample_only: bool = False               # a prefill step: ESamp's sampler only (no taps, no distiller)
    width: Optional[int] = None             # a sync-free core's candidate width (ESampCore.candidate_width)
    positions: Optional[torch.Tensor] = None  # [R] int64 sequence index of the token being drawn
    seeded: Optional[SeededRows] = None     # rows of seeded requests
    sampled_logprobs: Optional[torch.Tensor] = None  # [S] int64 step rows whose logprobs are the sampled ones
    # 2. taps (step.read_taps, from tap_buffers.TapBuffers): the plan's rows' hidden states
    h_src: Optional[torch.Tensor] = None    # [R, H] shallow tap
    h_tgt: Optional[torch.Tensor] = None    # [R, H] LM-head input
    fresh: Optional[torch.Tensor] = None    # masked taps: [R] bool, the row's taps wrote this step
    # 3.-4. predict and sample (sampler.ESampSampler -> step.sample -> core.sample)
    logits: Optional[torch.Tensor] = None   # [R, V] fp32: the rows' logits after SGLang's preprocessing
    h_hat: Optional[torch.Tensor] = None    # [R, H] the distiller's prediction (weights after the previous update)
    out: Optional[SampleOutput] = None
    error: Optional[BaseException] = None   # an exception the sampler contained (its rows kept stock tokens)


class Armed(NamedTuple):
    """What the sampler finds on ``SamplingBatchInfo``: the runtime and the step it samples for."""
    rt: object
    step: ESampStep


def attach(sampling_info, rt, step: ESampStep) -> None:
    setattr(sampling_info, ATTR, Armed(rt, step))


def current(sampling_info) -> Optional[Armed]:
    return getattr(sampling_info, ATTR, None) if sampling_info is not None else None


def detach(sampling_info) -> None:
    if sampling_info is not None and hasattr(sampling_info, ATTR):
        delattr(sampling_info, ATTR)
