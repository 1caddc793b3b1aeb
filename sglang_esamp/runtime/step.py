"""One step with ESamp, top to bottom (DESIGN §1 and §2). Each numbered step is a function here that takes the
runtime and the step's state; the hook shims (``shims.py``) receive SGLang's objects and call them.

  1. plan     ``plan`` (after ``ForwardBatch.init_new``): applies finished updates (without waiting), then maps each decode row to
              its request (``forward_batch.rids[i] == batch.reqs[i].rid`` is checked), lets the request join its
              group (``GroupTable``: the slot is acquired at the group's first decode step) and returns a fresh
              ``ESampStep``. Rebuilt every step from the requests themselves, so it cannot drift from SGLang's row
              order when requests join or leave the batch.
  2. taps     the model's forward runs; ``taps.TapSet`` copies the batch's shallow and LM-head hidden states
              into the static ``tap_buffers`` (graph-capturable); ``read_taps`` takes the plan's rows back
              (a stale stamp = a tap miss: the step samples stock).
  3. predict  ``predict``: h_hat for the plan's rows with the weights after the previous update (one step stale).
  4. sample   SGLang's sampler runs once (``run``: the one call); ``sampler.ESampSampler`` calls ``sample`` for
              the plan's rows and writes their tokens.
  5. update   ``update``: the distiller update on the same rows is submitted; what it measured for the
              requests (rows, candidates, per-token signals) comes back and is applied by ``settle`` on the
              scheduler thread at the next step, leave or report.
  6. leave    ``leave`` (a finished or aborted request): the member leaves its group; the last member's leaving
              releases the slot.
``run`` drives 2-5 around SGLang's sampler and is the one place that decides whether the sampler sees the ESamp
rows (armed) or samples them stock.

Prefill, mixed and idle batches are never reweighted or trained on (counted). A prefill step does get a plan when
one of its requests needs ESamp's own sampler for its first token (a ``sampling_seed``, ``logprobs: "sampled"``,
``return_tokens``): those rows are drawn by the ESamp rule with beta 0 and no taps, so a seeded request is
reproducible from its first token.
Faults: an exception anywhere in ESamp's part of a step (predict, the rule, the update -- an async update's error
comes back with its step, as a value, at the next ``settle``) never reaches the scheduler: the rows keep SGLang's own tokens (or,
for a failed update, the ESamp tokens they already had), the step's distiller slots are re-initialised,
``step_errors`` grows and the first traceback is logged. Rows that sampled stock this way (or after a tap miss) are
counted per request (``meta_info.esamp.skipped_rows``); the per-request counts of a step whose update failed are
lost with it. ``--esamp-debug-faults`` (``algo.faults``) injects faults at these points to prove it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional

import torch

from ..algo.rule.filters import width_bucket
from ..algo.rule.seeded_noise import SeededRows
from ..algo.rule.step_graphs import RuleInputs
from ..algo.update.job import Update
from . import step_trace
from .members import Member
from .step_state import ESampStep

logger = logging.getLogger("sglang_esamp")


# -- 1. plan ---------------------------------------------------------------------------------------------------
def plan(rt, forward_batch, batch) -> Optional[ESampStep]:
    """The step's ESamp rows, or None (no ESamp row, or a batch kind ESamp does not touch)."""
    with rt.counters.timed("plan"):
        step = _plan(rt, forward_batch, batch)
    rt.clock.tick(rt.counters, timed=step is not None and not step.sample_only)
    return step


def _plan(rt, forward_batch, batch) -> Optional[ESampStep]:
    settle(rt, wait=False)   # the update in flight runs on beside this step's forward
    rt.table.expire()
    mode = forward_batch.forward_mode
    if mode.is_decode():
        rt.counters.add("decode_steps")
        return _plan_rows(rt, forward_batch, batch, decode=True)
    if mode.is_mixed():
        rt.counters.add("mixed_batches_skipped")
        return None
    if mode.is_extend():
        return _plan_rows(rt, forward_batch, batch, decode=False)
    return None


@dataclass
class StepClock:
    """Wall time from one ESamp decode step's plan to the next one's: a whole scheduler iteration (SGLang's
    forward, sampling, output processing and scheduling, with ESamp's phases inside it), so the per-phase
    breakdown is read against the step it belongs to and a wait nobody timed shows up as unexplained time."""
    last: Optional[float] = None

    def tick(self, counters, timed: bool) -> None:
        now = time.perf_counter()
        if timed and self.last is not None:
            counters.add("time_step_s", now - self.last)
            counters.add("steps_timed")
        self.last = now if timed else None


def _plan_rows(rt, forward_batch, batch, decode: bool) -> Optional[ESampStep]:
    """Decode: every ESamp member's row. Prefill: only the rows of members that need ESamp's own sampler (a seed,
    sampled logprobs, per-token signals), drawn with beta 0: the first token is never reweighted."""
    rows, slots, betas, coefs, members, top_ks, divs = [], [], [], [], [], [], []
    rids = forward_batch.rids
    for i, req in enumerate(batch.reqs):
        m = rt.members.member_of(req)
        if m is None or m.left:
            continue   # no ESamp, or it already left (ended outside the output stream): SGLang's own token
        if not decode and not m.own_sampler:
            continue
        if rids is not None and rids[i] != req.rid:
            raise RuntimeError(f"ESamp row map: row {i} is {rids[i]} in the forward batch but {req.rid} in the "
                               "schedule batch")
        slot = rt.members.join(m) if decode else None
        beta, coef = (m.beta, 0.0 if m.group is None else 1.0) if decode else (0.0, 0.0)
        if decode and slot is None and m.group is not None:
            if not m.own_sampler:
                continue  # bank full: this group samples without ESamp (counted by the table)
            beta = coef = 0.0   # bank full, but the seed / logprobs / signals still need ESamp's sampler
        rows.append(i)
        slots.append(-1 if slot is None else slot)
        betas.append(beta)
        coefs.append(coef)
        members.append(m)
        top_ks.append(getattr(req.sampling_params, "top_k", None))
        divs.append(1.0 + beta if coef and not m.request.sharpen else 1.0)
    if not rows:
        return None
    dev = rt.core.device
    step = ESampStep(runtime=rt, rows=torch.tensor(rows, device=dev), slots=torch.tensor(slots, device=dev),
                     planned_slots=slots,
                     betas=torch.tensor(betas, dtype=torch.float32, device=dev),
                     distiller_coef=torch.tensor(coefs, dtype=torch.float32, device=dev), members=members,
                     sample_only=not decode, width=_width(rt, top_ks) if rt.core.sync_free else None,
                     divisor=torch.tensor(divs, dtype=torch.float32, device=dev) if any(d != 1 for d in divs)
                     else None)
    need_positions = any(m.seed is not None or m.signals is not None for m in members)
    _row_options(step, forward_batch.seq_lens.index_select(0, step.rows).to(torch.int64) if need_positions else None)
    return step


def _width(rt, top_ks) -> int:
    """The sync-free step's candidate width, from the rows' top-k as SGLang normalized it on the host (greedy =
    1; ``greedy="apply"`` drops a greedy row's top-k); a row without one is unbounded."""
    cap = rt.core.config.candidate_cap
    apply = rt.core.config.greedy == "apply"
    bound = [cap + 1 if k is None or k < 1 or (k == 1 and apply) else k for k in top_ks]
    return width_bucket(bound, cap, vocab=1 << 62)   # the filter clamps the width to the logits' vocabulary


def _row_options(step: ESampStep, positions) -> None:
    """The per-row options of the step's members: positions, seeded rows, rows with sampled logprobs."""
    dev, members = step.rows.device, step.members
    step.positions = positions
    seeded = [j for j, m in enumerate(members) if m.seed is not None]
    if seeded and positions is not None:
        idx = torch.tensor(seeded, dtype=torch.int64, device=dev)
        step.seeded = SeededRows(rows=idx, positions=positions.index_select(0, idx),
                                 seeds=torch.tensor([members[j].seed for j in seeded], device=dev),
                                 streams=torch.tensor([members[j].stream for j in seeded], device=dev))
    lp = [j for j, m in enumerate(members) if m.request.logprobs == "sampled"]
    if lp:
        step.sampled_logprobs = torch.tensor(lp, dtype=torch.int64, device=dev)


# -- 2.-5. around SGLang's sampler -------------------------------------------------------------------------------
def run(rt, step: ESampStep, forward_batch, sglang_sample: Callable[[bool], torch.Tensor]):
    """Steps 2-5. ``sglang_sample(armed)`` runs SGLang's sampler once, with the ESamp rows armed or not (not armed:
    they sample stock). SGLang's own sampling errors are not ours to hide: they propagate."""
    armed = step.sample_only or _prepare(rt, step, forward_batch)
    next_ids = sglang_sample(armed)
    if armed:
        _finish(rt, step, forward_batch)
    return next_ids


def _prepare(rt, step: ESampStep, forward_batch) -> bool:
    """2. taps and 3. predict; False = this step samples stock (a tap miss, a released group, a contained fault)."""
    try:
        with rt.counters.timed("taps"):
            read = read_taps(rt, step, forward_batch)
            if read:
                _drop_released_groups(rt, step)
        if not read:
            rt.counters.add("tap_misses")
            _count_skipped(step.members)
            return False
        if not step.members:
            return False
        settle(rt)   # the previous update is done (a failed one contained, its slots reset) before its weights are read
        predict(rt, step)
        step.prepared = True
        return True
    except Exception as e:
        contain(rt, step, e)
        return False


def read_taps(rt, step: ESampStep, forward_batch) -> bool:
    """2. The plan's rows of this step's taps; False when the buffers hold another step's states (a miss).
    Sync-free: stale rows are masked instead (no distiller term, no training, counted on the device and, per
    request, by the update's measurement), so nothing is read back to the host."""
    positions, batch_size = forward_batch.positions.index_select(0, step.rows), int(forward_batch.positions.shape[0])
    if rt.core.sync_free:
        taps = rt.tap_buffers.read_masked(step.rows, positions, batch_size)
        if taps is None:
            return False
        step.h_src, step.h_tgt, step.fresh = taps
        step.betas = torch.where(step.fresh, step.betas, 0.0)
        step.distiller_coef = torch.where(step.fresh, step.distiller_coef, 0.0)
        step.slots = torch.where(step.fresh, step.slots, -1)
        rt.counters.add_device("tap_misses", (~step.fresh).any())
    else:
        taps = rt.tap_buffers.read(step.rows, positions, batch_size)
        if taps is None:
            return False
        step.h_src, step.h_tgt = taps
    if step_trace.taps_enabled():
        step_trace.write_taps([forward_batch.rids[i] for i in step.rows.tolist()], step.h_src, step.h_tgt)
    if rt.faults.enabled:
        rt.faults.corrupt_taps(step.h_src, step.h_tgt)
    return True


def _drop_released_groups(rt, step: ESampStep) -> None:
    """A group released between plan and sample (the table is the truth) must not use its old slot."""
    slots = step.planned_slots
    keep = [j for j, m in enumerate(step.members) if m.group is None or slots[j] < 0 or rt.table.holds(m.group, slots[j])]
    if len(keep) == len(step.members):
        return
    idx = torch.tensor(keep, dtype=torch.int64, device=step.rows.device)
    step.members = [step.members[j] for j in keep]
    step.planned_slots = [slots[j] for j in keep]
    for name in ("rows", "slots", "betas", "distiller_coef", "h_src", "h_tgt", "fresh", "divisor"):
        if getattr(step, name) is not None:
            setattr(step, name, getattr(step, name).index_select(0, idx))
    _row_options(step, None if step.positions is None else step.positions.index_select(0, idx))


def predict(rt, step: ESampStep) -> None:
    """3. h_hat with the weights after the previous update."""
    if rt.faults.enabled:
        rt.faults.maybe_raise("predict")
    if rt.core.sync_free:
        return   # predicted with the draw, as one replayable unit (step.sample, algo.step_graphs)
    step.h_hat = rt.core.predict(step.h_src, step.slots)


def sample(step: ESampStep, temperatures, top_ks, top_ps, min_ps):
    """4. The ESamp rule on the step's rows (called by ``ESampSampler`` with the rows' own filters), or None with
    ``step.error`` set: those rows keep SGLang's tokens. Counted with the update, off the scheduler's path."""
    rt = step.runtime
    try:
        if rt.faults.enabled:
            rt.faults.maybe_raise("sample")
        if rt.core.sync_free and step.h_src is not None:
            inputs = RuleInputs(step.h_src, step.slots, step.logits, temperatures.reshape(-1).float(),
                                top_ks.reshape(-1).long(), top_ps.reshape(-1).float(), min_ps.reshape(-1).float(),
                                step.betas, step.distiller_coef, divisor=step.divisor)
            step.h_hat, step.out = rt.core.predict_and_sample(inputs, step.width, seeded=step.seeded)
        else:
            step.out = rt.core.sample(step.logits, temperatures, top_ks, top_ps, min_ps, step.betas, step.h_hat,
                                      distiller_coef=step.distiller_coef, seeded=step.seeded, record=False,
                                      width=step.width, divisor=step.divisor)
        return step.out
    except Exception as e:
        step.error = e
        return None


def _finish(rt, step: ESampStep, forward_batch) -> None:
    try:
        if step.error is not None:
            raise step.error
        if step.sample_only:
            if step.out is not None:
                rt.counters.add("prefill_rows_sampled", len(step.members))
                apply(rt, measure(step, None))
            return
        update(rt, step)
        if step_trace.enabled():
            step_trace.write([forward_batch.rids[i] for i in step.rows.tolist()], [m.group for m in step.members],
                             step.out)
        rt.metrics.maybe_update(rt.snapshot)
    except Exception as e:
        contain(rt, step, e)


def update(rt, step: ESampStep) -> None:
    """5. Submit the distiller update on the step's rows as one value (``Update``): it measures the step for its
    requests (host reads, on the update's thread) and comes back, with the step as its tag, through the next
    ``settle`` on the scheduler thread."""
    # SGLang samples under inference mode; the update needs autograd on ordinary (non-inference) tensors
    with torch.inference_mode(False), torch.enable_grad():
        rt.core.train(Update(step.h_src.clone(), step.h_tgt.clone(), step.slots.clone(),
                             host_slots=step.planned_slots, sample=step.out,
                             measure=partial(_measure_update, rt.faults, step), tag=step))
    rt.counters.add("esamp_steps")


def _measure_update(faults, step: ESampStep) -> Optional["StepMeasured"]:
    if faults.enabled:
        faults.maybe_raise("update")
    return measure(step, step.h_hat)


# -- what a step measured for its requests, applied on the scheduler thread ---------------------------------------
@dataclass
class StepMeasured:
    members: List[Member]
    counts: List[int]                        # candidates per row
    signals: List[Optional[tuple]]           # per row: (output index, novelty, shift, count, reweighted) or None
    decode: bool = True                      # a decode step (its rows count in meta_info.esamp.rows)
    stale: Optional[List[bool]] = None       # sync-free steps: rows whose taps missed (they sampled stock)


def measure(step: ESampStep, h_hat) -> Optional[StepMeasured]:
    """Host reads of a sampled step for its requests; writes nothing (it may run on the update's thread)."""
    out = step.out
    if out is None:
        return None
    counts = out.counts.tolist()
    stale = None if step.fresh is None else [not f for f in step.fresh.tolist()]
    signals: List[Optional[tuple]] = [None] * len(step.members)
    asked = [j for j, m in enumerate(step.members) if m.signals is not None]
    if asked and step.positions is not None:
        pos, slots = step.positions.tolist(), step.planned_slots
        shift, rew = out.chosen_shift.tolist(), out.reweighted.tolist()
        nov = None
        if step.h_tgt is not None and h_hat is not None:
            nov = (step.h_tgt.float() - h_hat.float()).norm(dim=1).tolist()
        for j in asked:
            novelty = nov[j] if nov is not None and slots[j] >= 0 and not (stale and stale[j]) else None
            signals[j] = (pos[j] - step.members[j].prompt_len, novelty, shift[j], counts[j], bool(rew[j]))
    return StepMeasured(list(step.members), counts, signals, decode=not step.sample_only, stale=stale)


def apply(rt, measured: Optional[StepMeasured]) -> None:
    """Write a step's measurements into its members (scheduler thread only)."""
    if measured is None:
        return
    stale = measured.stale or [False] * len(measured.members)
    for m, count, sig, missed in zip(measured.members, measured.counts, measured.signals, stale):
        m.skipped_rows += missed
        if measured.decode:
            m.rows += 1
            m.multi_candidate_rows += count > 1
        if sig is not None and m.signals is not None:
            m.signals[sig[0]] = sig[1:]


def settle(rt, wait: bool = True) -> None:
    """Apply what finished updates measured, and contain a failed one against its own step (scheduler thread).
    ``wait``: first wait for the update in flight -- only where its result or the distiller's weights are needed
    next (the rule, a leave, a report); ``plan`` does not wait, so the model's forward overlaps the update."""
    if wait:
        rt.core.wait_for_update()
    for done in rt.core.take_updates():
        if done.error is not None:
            contain(rt, done.tag, done.error, count_skipped=False)
        else:
            apply(rt, done.measured)


# -- 6. leave ------------------------------------------------------------------------------------------------------
def leave(rt, m: Member) -> None:
    """6. The request ended: its last step is settled first, so its report counts every step."""
    settle(rt)
    rt.members.leave(m)
    rt.metrics.maybe_update(rt.snapshot, force=True)


# -- faults --------------------------------------------------------------------------------------------------------
def contain(rt, step: Optional[ESampStep], error: BaseException, count_skipped: bool = True) -> None:
    """Count the fault, log the first traceback, and re-initialise the step's slots (they may be torn)."""
    first = rt.counters.get("step_errors") == 0
    rt.counters.add("step_errors")
    if first:
        logger.error("ESamp step failed; its rows sampled stock (counted in step_errors): %r", error,
                     exc_info=error)
    if step is None:
        return
    if count_skipped:
        _count_skipped(step.members)
    try:
        rt.core.reset_slots(sorted({s for s in step.planned_slots if s >= 0}))
    except Exception:  # the reset itself must not take the scheduler down either
        logger.exception("ESamp slot reset after a step error failed")


def _count_skipped(members) -> None:
    """Per-request count of decode rows that should have used ESamp but sampled stock (tap miss, step error)."""
    for m in members:
        m.skipped_rows += 1
