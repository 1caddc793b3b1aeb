"""Per forward step: which rows use ESamp, then predict -> reweight+sample -> train (DESIGN §1 and §2).

* ``plan_rows`` (after ``ForwardBatch.init_new``, which receives the ScheduleBatch): maps each decode row to its
  request explicitly (``forward_batch.rids[i] == batch.reqs[i].rid`` is checked), joins the request to its group
  (taking the group's slot at its first decode step) and attaches a ``StepPlan`` to the step (``taps.step_holder``;
  without a plan the taps copy nothing). The plan is
  rebuilt every step from the requests themselves, so it cannot drift from SGLang's row order when requests join
  or leave the batch (``filter_batch``/``merge_batch``) -- there is no parallel per-row state to keep in sync.
* ``sample_step`` (around ``ModelRunner.sample``): predicts ĥ for the plan's rows with the weights after the
  previous update (exactly one step stale), lets ``ESampSampler`` apply the rule, then runs this step's update on
  the same rows (synchronously; the overlap work moves it behind ``ESampCore.join``).
* ``request_left`` (after ``release_kv_cache`` of a finished/aborted request): the member leaves its group.
Prefill, mixed and idle batches are never reweighted or trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

from . import step_trace
from .runtime import current_runtime
from .sampler import STEP_ATTR, SamplerStep
from .taps import PLAN_ATTR, step_holder, take_step_state


@dataclass
class StepPlan:
    rows: torch.Tensor     # [R] int64 batch rows
    slots: torch.Tensor    # [R] int64
    betas: torch.Tensor    # [R] fp32
    groups: List[str]


def plan_rows(forward_batch, batch) -> None:
    rt = current_runtime()
    if rt is None or forward_batch is None or batch is None:
        return
    mode = forward_batch.forward_mode
    if not mode.is_decode():
        if mode.is_mixed():
            rt.mixed_batches_skipped += 1
        return
    rt.decode_steps += 1
    rt.groups.expire()
    holder = step_holder(forward_batch)
    if hasattr(holder, PLAN_ATTR):
        delattr(holder, PLAN_ATTR)
    rows, slots, betas, groups = [], [], [], []
    rids = forward_batch.rids
    for i, req in enumerate(batch.reqs):
        info = rt.groups.info_for(req)
        if info is None:
            continue
        if rids is not None and rids[i] != req.rid:
            raise RuntimeError(f"ESamp row map: row {i} is {rids[i]} in the forward batch but {req.rid} in the "
                               "schedule batch")
        slot = rt.groups.join(info)
        if slot is None:
            continue  # bank full: this group samples without ESamp (counted at acquire)
        rows.append(i)
        slots.append(slot)
        betas.append(info.beta)
        groups.append(info.group)
    if rows:
        dev = rt.core.device
        setattr(holder, PLAN_ATTR, StepPlan(torch.tensor(rows, device=dev), torch.tensor(slots, device=dev),
                                            torch.tensor(betas, dtype=torch.float32, device=dev), groups))


def sample_step(original, model_runner, logits_output, forward_batch, *args, **kwargs):
    rt = current_runtime()
    if rt is None or model_runner is not rt.model_runner:
        return original(model_runner, logits_output, forward_batch, *args, **kwargs)
    plan, src, tgt = take_step_state(forward_batch)
    if plan is None:
        return original(model_runner, logits_output, forward_batch, *args, **kwargs)
    if src is None or tgt is None:
        rt.tap_misses += 1
        return original(model_runner, logits_output, forward_batch, *args, **kwargs)
    # a delayed sample may run after a group was released: keep only rows whose group still owns the slot
    keep = [j for j, g in enumerate(plan.groups) if rt.core.slot_of(g) == int(plan.slots[j])]
    if len(keep) != len(plan.groups):
        idx = torch.tensor(keep, dtype=torch.int64, device=plan.rows.device)
        plan = StepPlan(plan.rows[idx], plan.slots[idx], plan.betas[idx], [plan.groups[j] for j in keep])
        if not keep:
            return original(model_runner, logits_output, forward_batch, *args, **kwargs)
    h_src = src.index_select(0, plan.rows)
    h_tgt = tgt.index_select(0, plan.rows)
    h_hat = rt.core.predict(h_src, plan.slots)
    sampling_info = forward_batch.sampling_info
    step = SamplerStep(plan.rows, plan.betas, h_hat, rt.core)
    if step_trace.enabled():
        step.rids = [forward_batch.rids[i] for i in plan.rows.tolist()]
        step.groups = plan.groups
    setattr(sampling_info, STEP_ATTR, step)
    try:
        next_ids = original(model_runner, logits_output, forward_batch, *args, **kwargs)
    finally:
        delattr(sampling_info, STEP_ATTR)
    # SGLang samples under inference mode; the update needs autograd on ordinary (non-inference) tensors
    with torch.inference_mode(False), torch.enable_grad():
        rt.core.train(h_src.clone(), h_tgt.clone(), plan.slots.clone())
    rt.esamp_steps += 1
    rt.metrics.maybe_update(rt.snapshot)
    return next_ids


def request_left(req) -> None:
    rt = current_runtime()
    if rt is None or not req.finished():
        return  # a retracted request comes back; only finished/aborted ones leave
    info = getattr(req, "_esamp_info", None)
    if info:
        rt.groups.leave(info)
        rt.metrics.maybe_update(rt.snapshot, force=True)
