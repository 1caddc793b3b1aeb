"""The scheduler-side hook shims: each receives SGLang's objects, finds this process's runtime (the only place
``current_runtime()`` is called) and calls the numbered step functions of ``step.py`` with it. Each shim declares
the SGLang function it hooks (``wire.hookspec.hook``); ``sglang_esamp.hooks`` collects them.

No SGLang import at module level: SGLang registers the plugin early in every process, and the classes that
subclass SGLang's (``sampler``, ``output``) are imported when first needed.
"""
from __future__ import annotations

import logging

from ..wire.hookspec import AFTER, AROUND, BEFORE, hook
from ..wire.sglang_paths import MODEL_RUNNER, SCHEDULER, WEIGHT_UPDATER
from . import cpu_gemm, step, step_state
from .esamp_runtime import current_runtime

logger = logging.getLogger("sglang_esamp")

_MR, _SCHED, _WU = MODEL_RUNNER, SCHEDULER, WEIGHT_UPDATER


# -- the step ------------------------------------------------------------------------------------------------------
@hook("sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new", AFTER,
      ("cls", "batch", "model_runner"), "1. plan: map decode rows to requests and their group slots")
def after_init_new(result, *args, **kwargs):
    rt = current_runtime()
    batch = kwargs.get("batch", args[1] if len(args) > 1 else None)
    sampling_info = getattr(result, "sampling_info", None)
    step_state.detach(sampling_info)   # a step that never sampled must not hand its state to this one
    if rt is None or result is None or batch is None or sampling_info is None:
        return result
    planned = step.plan(rt, result, batch)
    if planned is not None:
        step_state.attach(sampling_info, rt, planned)
    return result


@hook(f"{_MR}.sample", AROUND, ("self", "logits_output", "forward_batch"),
      "2.-5. taps -> predict -> reweighted sampling -> update, per step")
def around_sample(original, model_runner, logits_output, forward_batch, *args, **kwargs):
    rt = current_runtime()
    sampling_info = getattr(forward_batch, "sampling_info", None)
    armed = step_state.current(sampling_info)
    if rt is None or model_runner is not rt.model_runner or armed is None:
        return original(model_runner, logits_output, forward_batch, *args, **kwargs)

    def sglang_sample(armed: bool):
        if not armed:
            step_state.detach(sampling_info)   # the sampler sees no ESamp rows: every row samples stock
        return original(model_runner, logits_output, forward_batch, *args, **kwargs)
    try:
        return step.run(rt, armed.step, forward_batch, sglang_sample)
    finally:
        step_state.detach(sampling_info)


@hook("sglang.srt.layers.sampler.create_sampler", AROUND, ("backend",),
      "serve ESampSampler for whatever sampling backend SGLang resolved")
def around_create_sampler(original, *args, **kwargs):
    from sglang.srt.layers.sampler import Sampler

    from ..wire.handoff import config_given
    from .sampler import ESampSampler

    sampler = original(*args, **kwargs)
    if type(sampler) is Sampler:
        return ESampSampler()
    message = (f"ESamp wraps SGLang's built-in Sampler only, but the sampling backend gave "
               f"{type(sampler).__name__} (--sampling-backend): its rows would sample without ESamp")
    if config_given():
        from ..wire.modes import UnsupportedModeError

        raise UnsupportedModeError(message + "; use a built-in --sampling-backend or run with SGLANG_ESAMP=0")
    logger.warning("%s -- serving without ESamp", message)
    return sampler


# -- members arrive and leave ----------------------------------------------------------------------------------------
@hook(f"{_SCHED}._add_request_to_queue", BEFORE, ("self", "req"),
      "parse the member on arrival: seeded siblings take their streams in the order SGLang sent them")
def before_add_request_to_queue(self, req, *args, **kwargs):
    rt = current_runtime()
    if rt is not None:
        # SGLang sends the n siblings of a request in order, but may schedule them in another (queue policy,
        # retraction): parsing here, not at the first forward, ties a seeded sibling's stream to its index
        rt.members.member_of(req)
    return None


@hook("sglang.srt.mem_cache.common.release_kv_cache", AFTER, ("req", "tree_cache"),
      "6. leave: a finished request leaves its group (a retracted one comes back)")
def after_release_kv_cache(result, req, *args, **kwargs):
    if req.finished():
        _leave(req)
    return result


@hook(f"{_SCHED}.send_abort_output", AFTER, ("self", "abort_req", "req"),
      "6. leave: a request ended outside the output stream (aborted while queued, by retraction, rejected)")
def after_send_abort_output(result, self, abort_req, req, *args, **kwargs):
    _leave(req)
    return result


def _leave(req) -> None:
    rt = current_runtime()
    m = rt.members.member_of(req) if rt is not None else None   # parsed here if it ends before decoding
    if m:
        step.leave(rt, m)


# -- what the scheduler reports ----------------------------------------------------------------------------------------
@hook(f"{_SCHED}.get_output_streamer_class", AFTER, ("self",), "attach meta_info.esamp to responses")
def output_streamer_class(result, *args, **kwargs):
    from .output import streamer_class

    return streamer_class(result, meta_info)


def meta_info(reqs) -> list:
    """``meta_info.esamp`` of each request (None without ESamp), for ``output.ESampOutputStreamer``."""
    rt = current_runtime()
    if rt is None:
        return [None] * len(reqs)
    # SGLang builds this for every output batch (each step), right after the step submitted its update: a
    # finishing request's report must count every step (wait), a running one's is a progress report (no wait, or
    # the update would run while the scheduler waits instead of beside the next forward)
    step.settle(rt, wait=any(req.finished() for req in reqs))
    members = [rt.members.member_of(req) for req in reqs]   # also a request that never decoded
    return [rt.members.report(m) if m else None for m in members]


@hook(f"{_SCHED}.get_internal_state", AFTER, ("self", "recv_req"),
      "expose ESamp counters through SGLang's internal-state RPC (/esamp/stats)")
def after_internal_state(result, self, *args, **kwargs):
    rt = current_runtime()
    state = getattr(result, "internal_state", None)
    if rt is not None and isinstance(state, dict):
        step.settle(rt)
        rt.table.expire()   # the linger backstop also runs on an idle server (no forward steps)
        state["esamp"] = rt.snapshot()
    return result


# -- served weights replaced (runtime.weights) --------------------------------------------------------------------------
def _runtime_for(updater):
    rt = current_runtime()
    get_runner = getattr(updater, "get_model_runner", None)
    if rt is None or get_runner is None or get_runner() is not rt.model_runner:
        return None   # no ESamp, or a draft model's updater
    return rt


@hook(f"{_WU}.update_weights_from_disk", AFTER, ("self", "model_path"),
      "weights replaced from disk: read the LM head again; keep the warm start only if it fits the new checkpoint")
def after_disk_update(result, updater, *args, **kwargs):
    from .weights import weights_changed

    cpu_gemm.weights_replaced()
    rt = _runtime_for(updater)
    if rt is not None:
        model_path = args[0] if args else kwargs.get("model_path")
        ok = bool(result[0]) if isinstance(result, tuple) and result else False
        weights_changed(rt, f"update_weights_from_disk({model_path})", new_model_dir=model_path if ok else None)
    return result


@hook(f"{_WU}.update_weights_from_tensor", AFTER, ("self", "named_tensors"),
      "weights replaced in memory: read the LM head again, drop the warm start")
@hook(f"{_WU}.load_weights_from_distributed", AFTER, ("self", "named_tensors"),
      "weights broadcast by a trainer: as update_weights_from_tensor")
@hook(f"{_WU}.update_weights_from_ipc", AFTER, ("self", "recv_req"),
      "weights handed over by IPC: as update_weights_from_tensor")
def after_tensor_update(result, updater, *args, **kwargs):
    from .weights import weights_changed

    cpu_gemm.weights_replaced()
    rt = _runtime_for(updater)
    if rt is not None:
        weights_changed(rt, "an in-memory weight update (tensor / IPC / distributed)", new_model_dir=None)
    return result


@hook(f"{_WU}.end_weight_update", AFTER, ("self",),
      "a weight-update session ends (weights post-processed): read the LM head again")
def after_end_update(result, updater, *args, **kwargs):
    from .weights import refresh_lm_head

    cpu_gemm.weights_replaced()
    rt = _runtime_for(updater)
    if rt is not None:
        refresh_lm_head(rt)
    return result
