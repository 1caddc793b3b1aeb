"""``ESampStep``: everything one forward step knows about its ESamp rows, in one typed object.

``step.plan`` creates it; the ``after_init_new`` shim attaches it to the step's ``SamplingBatchInfo`` under one
attribute (``ATTR``; the model may run on a shallow copy of the ForwardBatch, but every copy and
``ModelRunner.sample`` share that SamplingBatchInfo). ``step.run`` fills it from the tap buffers (``h_src``,
``h_tgt``) and the prediction, the sampler adds ``logits`` and ``out``, and the ``around_sample`` shim removes it
in a ``finally``. Nothing else about a step is stored on SGLang objects, so nothing can leak into a later step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

ATTR = "esamp_step"


@dataclass
class ESampStep:
    runtime: object                         # the ESampRuntime the step belongs to (the sampler reaches it here)
    # 1. plan (step.plan): the batch rows that use the ESamp rule this step, in batch order
    rows: torch.Tensor                      # [R] int64 batch rows
    slots: torch.Tensor                     # [R] int64 distiller slot; -1 = no distiller (control, bank full)
    planned_slots: List[int]                # the same, as planned on the host (read without a device sync)
    betas: torch.Tensor                     # [R] fp32
    distiller_coef: torch.Tensor            # [R] fp32 multiplier of the distiller term: 1 = ESamp, 0 = sharpening
    members: List[object]                   # [R] members.Member of each row
    positions: Optional[torch.Tensor] = None  # [R] int64 sequence index of the token being drawn
    seeded: Optional[object] = None         # algo.seeded_noise.SeededRows: rows of seeded requests
    sampled_logprobs: Optional[torch.Tensor] = None  # [S] int64 step rows whose logprobs are the sampled ones
    sample_only: bool = False               # a prefill step: ESamp's sampler only (no taps, no distiller)
    width: Optional[int] = None             # sync-free steps: the candidates' topk width (filters.width_bucket)
    divisor: Optional[torch.Tensor] = None  # [R] fp32 the reweighted logits are divided by (1+beta: esamp.sharpen
                                            # false); None = 1 for every row
    # 2. taps (step.read_taps, from tap_buffers.TapBuffers): the plan's rows' hidden states
    h_src: Optional[torch.Tensor] = None    # [R, H] shallow tap
    h_tgt: Optional[torch.Tensor] = None    # [R, H] LM-head input
    fresh: Optional[torch.Tensor] = None    # sync-free steps: [R] bool, the row's taps wrote this step
    # 3. predict (step.predict): the distiller's output with the weights after the previous update
    h_hat: Optional[torch.Tensor] = None    # [R, H] (sync-free steps: computed with the draw, in step.sample)
    prepared: bool = False                  # taps read and (eager steps) h_hat predicted: the rule may run
    # 4. sample (sampler.ESampSampler -> step.sample)
    logits: Optional[torch.Tensor] = None   # [R, V] fp32: the rows' logits after SGLang's preprocessing
    out: Optional[object] = None            # algo.sampling.SampleOutput
    error: Optional[BaseException] = None   # an exception the sampler contained (its rows kept stock tokens)


def attach(sampling_info, step: ESampStep) -> None:
    setattr(sampling_info, ATTR, step)


def current(sampling_info) -> Optional[ESampStep]:
    return getattr(sampling_info, ATTR, None) if sampling_info is not None else None


def detach(sampling_info) -> None:
    if sampling_info is not None and hasattr(sampling_info, ATTR):
        delattr(sampling_info, ATTR)
