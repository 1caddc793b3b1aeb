"""One step with ESamp, top to bottom (DESIGN §1 and §2), the same for either core (eager, or sync-free with its
replayed rule and update). Each numbered step is a function here that takes the runtime (``ESampRuntime``) and the
step's state (``ESampStep``); the hook shims (``shims.py``) receive SGLang's objects and call them.

  1. plan     ``plan`` (after ``ForwardBatch.init_new``): applies finished updates (without waiting: the forward
              overlaps the update in flight), maps each decode row to its request (``forward_batch.rids[i] ==
              batch.reqs[i].rid`` is checked), lets the request join its group (``GroupTable``: the slot is
              acquired at the group's first decode step) and returns a fresh ``ESampStep`` with each row's kind
              and terms (``rule.inputs.RowTerms``). Rebuilt every step from the requests themselves, so it cannot
              drift from SGLang's row order when requests join or leave the batch.
  2. taps     the model's forward runs; ``taps.TapSet`` copies the batch's shallow and LM-head hidden states into
              the static ``tap_buffers`` (graph-capturable); ``read_taps`` takes the plan's rows back. A tap that
              did not write this step is a miss: host-read buffers miss the whole step (it samples stock), masked
              ones (a sync-free core: no host read) mask the row to beta 0 and slot -1, counted on the device.
              Then ``settle`` waits for the update in flight, just before its weights are read.
  3. predict  and
  4. sample   SGLang's sampler runs once (``run``: the one call); ``sampler.ESampSampler`` calls ``sample`` with
              the rows' own filters, which hands one ``RuleInputs`` to ``core.sample``: h_hat with the weights
              after the previous update (one step stale), then candidates -> reweight -> draw -- one replayed unit
              on a sync-free core, eager on the other.
  5. update   ``update``: the distiller update on the same rows is submitted as one value (``Update``, the step as
              its tag); what it measured for the requests comes back with it.
  6. settle   ``settle``: finished updates' measurements are written into their members (rows, candidates,
              per-token signals) on the scheduler thread; a failed update is contained against its own step.
  7. leave    ``leave`` (a finished or aborted request): the member leaves its group; the last member's leaving
              releases the slot.
``run`` drives 2-5 around SGLang's sampler and is the one place that decides whether the sampler sees the ESamp
rows (armed) or samples them stock.

Prefill, mixed and idle batches are never reweighted or trained on (counted). A prefill step does get a plan when
one of its requests needs ESamp's own sampler for its first token (a ``sampling_seed``, ``logprobs: "sampled"``,
``return_tokens``): those rows are drawn by the ESamp rule with beta 0 and no taps, so a seeded request is
reproducible from its first token.
Faults: an exception anywhere in ESamp's part of a step (predict, the rule, the update -- a failed update comes
back with its step, as a value, at the next ``settle``) never reaches the scheduler: the rows keep SGLang's own
tokens (or, for a failed update, the ESamp tokens they already had), the step's distiller slots are
re-initialised, ``step_errors`` grows and the first traceback is logged. Rows that sampled stock this way (or after
a tap miss) are counted per request (``meta_info.esamp.skipped_rows``); the per-request counts of a step whose
update failed are lost with it. ``--esamp-debug-faults`` (``algo.faults``) injects faults at these points.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import torch

from ..algo.rule.inputs import RowKind, RowTerms, RuleInputs
from ..algo.rule.sampling import SampleOutput
from ..algo.rule.seeded_noise import SeededRows
from ..algo.update.job import Update
from . import step_trace
from .members import Member
from .step_state import ESampStep

if TYPE_CHECKING:
    from .esamp_runtime import ESampRuntime

logger = logging.getLogger("sglang_esamp")


# -- 1. plan ---------------------------------------------------------------------------------------------------
def plan(rt: ESampRuntime, forward_batch, batch) -> Optional[ESampStep]:
    """The step's ESamp rows, or None (no ESamp row, or a batch kind ESamp does not touch)."""
    with rt.counters.timed("plan"):
        step = _plan(rt, forward_batch, batch)
    rt.clock.tick(rt.counters, timed=step is not None and not step.sample_only)
    return step


def _plan(rt: ESampRuntime, forward_batch, batch) -> Optional[ESampStep]:
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


def _plan_rows(rt: ESampRuntime, forward_batch, batch, decode: bool) -> Optional[ESampStep]:
    """Decode: every ESamp member's row. Prefill: only the rows of members that need ESamp's own sampler (a seed,
    sampled logprobs, per-token signals), drawn with beta 0: the first token is never reweighted."""
    rows, kinds, slots, members, top_ks = [], [], [], [], []
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
        kind, slot = _row_kind(rt, m, decode)
        if kind is None:
            continue   # bank full: this group samples without ESamp (counted by the table)
        rows.append(i)
        kinds.append(kind)
        slots.append(-1 if slot is None else slot)
        members.append(m)
        top_ks.append(getattr(req.sampling_params, "top_k", None))
    if not rows:
        return None
    dev = rt.core.device
    terms = RowTerms.plan(kinds, [m.beta for m in members], slots, [m.request.sharpen for m in members], dev)
    step = ESampStep(rows=torch.tensor(rows, device=dev), members=members, planned_slots=slots, terms=terms,
                     sample_only=not decode, width=rt.core.candidate_width(top_ks))
    need_positions = any(m.seed is not None or m.signals is not None for m in members)
    _row_options(step, forward_batch.seq_lens.index_select(0, step.rows).to(torch.int64) if need_positions else None)
    return step


def _row_kind(rt: ESampRuntime, m: Member, decode: bool) -> Tuple[Optional[RowKind], Optional[int]]:
    """The row's kind and slot this step; (None, None) = no ESamp row (its group's bank is full and the member
    needs nothing of ESamp's sampler)."""
    if not decode:
        return RowKind.SAMPLER_ONLY, None
    slot = rt.members.join(m)
    if m.group is None:
        return (RowKind.CONTROL if m.beta > 0 else RowKind.SAMPLER_ONLY), None
    if slot is None:
        return (RowKind.BANK_FULL, None) if m.own_sampler else (None, None)
    return RowKind.ESAMP, slot


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
def run(rt: ESampRuntime, step: ESampStep, forward_batch, sglang_sample: Callable[[bool], torch.Tensor]):
    """Steps 2-5. ``sglang_sample(armed)`` runs SGLang's sampler once, with the ESamp rows armed or not (not armed:
    they sample stock); armed, the sampler calls ``sample`` (3. predict and 4. sample). SGLang's own sampling
    errors are not ours to hide: they propagate."""
    armed = step.sample_only or _taps_and_settle(rt, step, forward_batch)
    next_ids = sglang_sample(armed)
    if armed:
        _finish(rt, step, forward_batch)
    return next_ids


def _taps_and_settle(rt: ESampRuntime, step: ESampStep, forward_batch) -> bool:
    """2. taps, then the update in flight settled before the rule reads its weights; False = this step samples
    stock (a tap miss, a contained fault)."""
    try:
        with rt.counters.timed("taps"):
            read = read_taps(rt, step, forward_batch)
        if not read:
            rt.counters.add("tap_misses")
            _count_skipped(step.members)
            return False
        _mask_released_groups(rt, step)
        settle(rt)   # a failed update is contained (its slots reset) before this step predicts from them
        return True
    except Exception as e:
        contain(rt, step, e)
        return False


def read_taps(rt: ESampRuntime, step: ESampStep, forward_batch) -> bool:
    """2. The plan's rows of this step's taps; False when the buffers hold another step's states (a miss). Masked
    buffers (a sync-free core) miss only rows: those are masked to beta 0 and slot -1 -- no distiller term, no
    training, counted on the device and, per request, by the update's measurement -- and nothing is read back."""
    positions, batch_size = forward_batch.positions.index_select(0, step.rows), int(forward_batch.positions.shape[0])
    taps = rt.tap_buffers.take(step.rows, positions, batch_size)
    if taps is None:
        return False
    step.h_src, step.h_tgt, step.fresh = taps
    if step.fresh is not None:
        step.terms = step.terms.masked(step.fresh)
        rt.counters.add_device("tap_misses", (~step.fresh).any())
    if step_trace.taps_enabled():
        step_trace.write_taps([forward_batch.rids[i] for i in step.rows.tolist()], step.h_src, step.h_tgt)
    if rt.faults.enabled:
        rt.faults.corrupt_taps(step.h_src, step.h_tgt)
    return True


def _mask_released_groups(rt: ESampRuntime, step: ESampStep) -> None:
    """A group released between plan and sample (the table is the truth) must not use its old slot: its rows lose
    the distiller (beta 0, slot -1) and are not trained."""
    slots = step.planned_slots
    gone = [j for j, m in enumerate(step.members) if m.group is not None and slots[j] >= 0
            and not rt.table.holds(m.group, slots[j])]
    if not gone:
        return
    keep = torch.ones(len(slots), dtype=torch.bool)
    keep[gone] = False
    step.terms = step.terms.masked(keep.to(step.rows.device))
    step.planned_slots = [-1 if not k else s for s, k in zip(slots, keep.tolist())]


def sample(rt: ESampRuntime, step: ESampStep, filters: Sequence[torch.Tensor]) -> Optional[SampleOutput]:
    """3. predict and 4. sample: the rows' ``RuleInputs`` (taps, logits, terms, the rows' own (T, top-k, top-p,
    min-p) ``filters``, seeds, width) through ``core.sample``; None with ``step.error`` set: those rows keep
    SGLang's tokens. Counted with the update, off the scheduler's path."""
    try:
        if rt.faults.enabled:
            rt.faults.maybe_raise("predict")
            rt.faults.maybe_raise("sample")
        inputs = RuleInputs.of(step.terms, step.h_src, step.logits, filters, step.seeded, step.width)
        step.h_hat, step.out = rt.core.sample(inputs)
        return step.out
    except Exception as e:
        step.error = e
        return None


def _finish(rt: ESampRuntime, step: ESampStep, forward_batch) -> None:
    """After the draw: 5. update (decode steps), the trace and metrics; a prefill step's measurement directly."""
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


# -- 5. update ---------------------------------------------------------------------------------------------------
def update(rt: ESampRuntime, step: ESampStep) -> None:
    """5. Submit the distiller update on the step's rows as one value (``Update``): it measures the step for its
    requests (host reads, on the update's thread) and comes back, with the step as its tag, through the next
    ``settle`` on the scheduler thread."""
    # SGLang samples under inference mode; the update needs autograd on ordinary (non-inference) tensors
    with torch.inference_mode(False), torch.enable_grad():
        rt.core.train(Update(step.h_src.clone(), step.h_tgt.clone(), step.terms.slots.clone(),
                             host_slots=step.planned_slots, sample=step.out,
                             measure=partial(_measure_update, rt.faults, step), tag=step))
    rt.counters.add("esamp_steps")


def _measure_update(faults, step: ESampStep) -> Optional[StepMeasured]:
    if faults.enabled:
        faults.maybe_raise("update")
    return measure(step, step.h_hat)


@dataclass
class StepMeasured:
    """What a step measured for its requests, applied on the scheduler thread."""
    members: List[Member]
    counts: List[int]                        # candidates per row
    signals: List[Optional[tuple]]           # per row: (output index, novelty, shift, count, reweighted) or None
    decode: bool = True                      # a decode step (its rows count in meta_info.esamp.rows)
    stale: Optional[List[bool]] = None       # masked taps: rows whose taps missed (they sampled without ESamp)


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


# -- 6. settle ---------------------------------------------------------------------------------------------------
def settle(rt: ESampRuntime, wait: bool = True) -> None:
    """6. Apply what finished updates measured, and contain a failed one against its own step (scheduler thread).
    ``wait``: first wait for the update in flight -- only where its result or the distiller's weights are needed
    next (the rule, a leave, a report); ``plan`` does not wait, so the model's forward overlaps the update."""
    if wait:
        rt.core.wait_for_update()
    for done in rt.core.take_updates():
        if done.error is not None:
            contain(rt, done.tag, done.error, count_skipped=False)
        else:
            apply(rt, done.measured)


def apply(rt: ESampRuntime, measured: Optional[StepMeasured]) -> None:
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


# -- 7. leave ------------------------------------------------------------------------------------------------------
def leave(rt: ESampRuntime, m: Member) -> None:
    """7. The request ended: its last step is settled first, so its report counts every step."""
    settle(rt)
    rt.members.leave(m)
    rt.metrics.maybe_update(rt.snapshot, force=True)


# -- faults --------------------------------------------------------------------------------------------------------
def contain(rt: ESampRuntime, step: Optional[ESampStep], error: BaseException, count_skipped: bool = True) -> None:
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
