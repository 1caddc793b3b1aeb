"""One decode step with ESamp, as a numbered sequence across files (DESIGN §1 and §2):

  1. plan     ``plan_rows`` (after ``ForwardBatch.init_new``, which receives the ScheduleBatch): maps each decode
              row to its request explicitly (``forward_batch.rids[i] == batch.reqs[i].rid`` is checked), lets the
              request join its group (``groups.GroupMembers``; the group's slot is acquired at its first decode
              step) and attaches a fresh ``step_state.ESampStep`` to the step. Rebuilt every step from the requests
              themselves, so it cannot drift from SGLang's row order when requests join or leave the batch.
  2. taps     the model's forward runs; ``taps.TapSet`` copies the batch's shallow and LM-head hidden states
              into the runtime's static ``tap_buffers`` (graph-capturable); ``sample_step`` reads the plan's rows
              back (a stale stamp = a tap miss).
  3. predict  ``sample_step`` (around ``ModelRunner.sample``): ``ESampCore.predict`` gives h_hat for the plan's
              rows with the weights after the previous update (exactly one step stale).
  4. sample   SGLang's sampler runs; ``sampler.ESampSampler`` applies the ESamp rule to the plan's rows
              (``algo.sampling``) and writes their tokens.
  5. update   ``sample_step``: ``ESampCore.train`` on the same rows; the ESampStep is removed in a ``finally``.
  6. leave    ``request_left`` (after ``release_kv_cache`` of a finished or aborted request): the member leaves
              its group; the last member's leaving releases the slot.
Prefill, mixed and idle batches are never reweighted or trained on (counted). A prefill step does get a plan when
one of its requests needs ESamp's own sampler for its first token (a ``sampling_seed``, ``logprobs: "sampled"``,
``return_tokens``): those rows are drawn by the ESamp rule with beta 0 (``_sample_prefill``), so a seeded request
is reproducible from its first token.
Faults: an exception anywhere in ESamp's part of a step (predict, the rule, the update -- an async update's error
surfaces at the next join) never reaches the scheduler: the step's ESamp rows keep SGLang's own tokens, the
step's distiller slots are re-initialised, ``step_errors`` grows and the first traceback is logged. Rows that
sampled stock this way (or after a tap miss) are counted per request (``meta_info.esamp.skipped_rows``).
``--esamp-debug-faults`` (``algo.faults``) injects faults at these points to prove it.
"""
from __future__ import annotations

import logging

import torch

from ..algo.seeded_noise import SeededRows
from . import step_state, step_trace
from .runtime import current_runtime
from .step_state import ESampStep

logger = logging.getLogger("sglang_esamp")


def plan_rows(forward_batch, batch) -> None:
    rt = current_runtime()
    if rt is None or forward_batch is None or batch is None:
        return
    sampling_info = getattr(forward_batch, "sampling_info", None)
    step_state.detach(sampling_info)   # a step that never sampled must not hand its state to this one
    rt.members.expire_stale()
    mode = forward_batch.forward_mode
    if mode.is_decode():
        rt.counters.add("decode_steps")
        _plan(rt, forward_batch, batch, sampling_info, decode=True)
    elif mode.is_mixed():
        rt.counters.add("mixed_batches_skipped")
    elif mode.is_extend():
        _plan(rt, forward_batch, batch, sampling_info, decode=False)


def _plan(rt, forward_batch, batch, sampling_info, decode: bool) -> None:
    """Decode: every ESamp member's row. Prefill: only the rows of members that need ESamp's own sampler (a seed,
    sampled logprobs, per-token signals), drawn with beta 0: the first token is never reweighted."""
    rows, slots, betas, novelty, members = [], [], [], [], []
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
        beta, nov = (m.beta, 0.0 if m.group is None else 1.0) if decode else (0.0, 0.0)
        if decode and slot is None and m.group is not None:
            if not m.own_sampler:
                continue  # bank full: this group samples without ESamp (counted at acquire)
            beta = nov = 0.0   # bank full, but the seed / logprobs / signals still need ESamp's sampler
        rows.append(i)
        slots.append(-1 if slot is None else slot)
        betas.append(beta)
        novelty.append(nov)
        members.append(m)
    if not rows or sampling_info is None:
        return
    dev = rt.core.device
    step = ESampStep(rows=torch.tensor(rows, device=dev), slots=torch.tensor(slots, device=dev),
                     betas=torch.tensor(betas, dtype=torch.float32, device=dev),
                     novelty=torch.tensor(novelty, dtype=torch.float32, device=dev), members=members,
                     sample_only=not decode)
    need_positions = any(m.seed is not None or m.signals is not None for m in members)
    _row_options(step, forward_batch.seq_lens.index_select(0, step.rows).to(torch.int64) if need_positions else None)
    step_state.attach(sampling_info, step)


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


def _keep_owned(rt, step: ESampStep) -> ESampStep:
    """A delayed sample may run after a group was released: keep only rows whose group still owns its slot."""
    keep = [j for j, m in enumerate(step.members) if m.group is None or rt.core.slot_of(m.group) == m.slot]
    if len(keep) == len(step.members):
        return step
    idx = torch.tensor(keep, dtype=torch.int64, device=step.rows.device)
    members = [step.members[j] for j in keep]
    out = ESampStep(rows=step.rows[idx], slots=step.slots[idx], betas=step.betas[idx], novelty=step.novelty[idx],
                    members=members, h_src=step.h_src[idx], h_tgt=step.h_tgt[idx])
    _row_options(out, None if step.positions is None else step.positions[idx])
    return out


def sample_step(original, model_runner, logits_output, forward_batch, *args, **kwargs):
    rt = current_runtime()
    sampling_info = getattr(forward_batch, "sampling_info", None)
    step = step_state.current(sampling_info)
    if rt is None or model_runner is not rt.model_runner or step is None:
        return original(model_runner, logits_output, forward_batch, *args, **kwargs)
    if step.sample_only:
        return _sample_prefill(rt, step, original, model_runner, logits_output, forward_batch, *args, **kwargs)
    sampled, next_ids = False, None
    try:
        taps = rt.tap_buffers.read(step.rows, forward_batch.positions.index_select(0, step.rows),
                                   int(forward_batch.positions.shape[0]))
        if taps is None:
            rt.counters.add("tap_misses")
            _count_skipped(step.members)
            step_state.detach(sampling_info)
            return original(model_runner, logits_output, forward_batch, *args, **kwargs)
        step.h_src, step.h_tgt = taps
        step = _keep_owned(rt, step)
        if not step.members:
            step_state.detach(sampling_info)
            return original(model_runner, logits_output, forward_batch, *args, **kwargs)
        if step_trace.taps_enabled():
            step_trace.write_taps([forward_batch.rids[i] for i in step.rows.tolist()], step.h_src, step.h_tgt)
        if rt.faults.enabled:
            rt.faults.corrupt_taps(step.h_src, step.h_tgt)
            rt.faults.maybe_raise("predict")
        step.h_hat = rt.core.predict(step.h_src, step.slots)
        step_state.attach(sampling_info, step)
        sampled = True
        next_ids = original(model_runner, logits_output, forward_batch, *args, **kwargs)
        if step.error is not None:
            raise step.error
        # SGLang samples under inference mode; the update needs autograd on ordinary (non-inference) tensors
        with torch.inference_mode(False), torch.enable_grad():
            rt.core.train(step.h_src.clone(), step.h_tgt.clone(), step.slots.clone(),
                          sample=step.out,
                          after=lambda done=step: _after_update(rt, done))
        rt.counters.add("esamp_steps")
        if step_trace.enabled():
            step_trace.write([forward_batch.rids[i] for i in step.rows.tolist()],
                             [m.group for m in step.members], step.out)
        rt.metrics.maybe_update(rt.snapshot)
        return next_ids
    except Exception as e:
        _contain(rt, step, e)
        if next_ids is not None:
            return next_ids    # sampled: the ESamp rows kept SGLang's own tokens, or the update failed after it
        step_state.detach(sampling_info)
        if sampled:
            raise              # SGLang's own sampling failed: not ours to hide
        return original(model_runner, logits_output, forward_batch, *args, **kwargs)
    finally:
        step_state.detach(sampling_info)


def _contain(rt, step: ESampStep, error: BaseException) -> None:
    """Count the fault, log the first traceback, and re-initialise the step's slots (they may be torn)."""
    first = rt.counters.get("step_errors") == 0
    rt.counters.add("step_errors")
    _count_skipped(step.members)
    if first:
        logger.error("ESamp step failed; its rows sampled stock (counted in step_errors): %r", error,
                     exc_info=error)
    try:
        rt.core.reset_slots(sorted({int(s) for s in step.slots.tolist() if s >= 0}))
    except Exception:  # the reset itself must not take the scheduler down either
        logger.exception("ESamp slot reset after a step error failed")


def _count_skipped(members) -> None:
    """Per-request count of decode rows that should have used ESamp but sampled stock (tap miss, step error)."""
    for m in members:
        m.skipped_rows += 1


def _sample_prefill(rt, step: ESampStep, original, model_runner, logits_output, forward_batch, *args, **kwargs):
    """A prefill step with rows that need ESamp's own sampler (beta 0): no taps, no distiller."""
    sampling_info = forward_batch.sampling_info
    next_ids = None
    try:
        next_ids = original(model_runner, logits_output, forward_batch, *args, **kwargs)
        if step.error is not None:
            raise step.error
        if step.out is not None:
            rt.counters.add("prefill_rows_sampled", len(step.members))
            _record_signals(step)
        return next_ids
    except Exception as e:
        if next_ids is None:
            raise      # SGLang's own sampling failed: not ours to hide
        _contain(rt, step, e)
        return next_ids
    finally:
        step_state.detach(sampling_info)


def _after_update(rt, step: ESampStep) -> None:
    if rt.faults.enabled:
        rt.faults.maybe_raise("update")
    _count_rows(step.members, step.out)
    _record_signals(step)


def _record_signals(step: ESampStep) -> None:
    """Per-token signals of the members that asked (``esamp.return_tokens``); host reads only then."""
    asked = [j for j, m in enumerate(step.members) if m.signals is not None]
    out = step.out
    if not asked or out is None or step.positions is None:
        return
    pos, slots = step.positions.tolist(), step.slots.tolist()
    counts, shift, rew = out.counts.tolist(), out.chosen_shift.tolist(), out.reweighted.tolist()
    nov = None
    if step.h_tgt is not None and step.h_hat is not None:
        nov = (step.h_tgt.float() - step.h_hat.float()).norm(dim=1).tolist()
    for j in asked:
        m = step.members[j]
        novelty = nov[j] if nov is not None and slots[j] >= 0 else None
        m.signals[pos[j] - m.prompt_len] = (novelty, shift[j], counts[j], bool(rew[j]))


def _count_rows(members, out) -> None:
    """Per-request row counts for meta_info.esamp (runs with the update, off the scheduler's path)."""
    if out is None:
        return
    for m, c in zip(members, out.counts.tolist()):
        m.rows += 1
        m.multi_candidate_rows += c > 1


def request_left(req, ended: bool = False) -> None:
    """After ``release_kv_cache`` (``ended`` False: only a finished request leaves -- a retracted one comes back)
    and after ``send_abort_output`` (``ended`` True: the scheduler ended it outside the output stream -- aborted
    while queued, possibly after a retraction, aborted by retraction, or rejected). Leaving twice is a no-op."""
    rt = current_runtime()
    if rt is None or not (ended or req.finished()):
        return
    m = rt.members.member_of(req)   # parsed here if it ends before its first decode step
    if m:
        rt.members.leave(m)
        rt.metrics.maybe_update(rt.snapshot, force=True)
