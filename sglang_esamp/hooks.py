"""Every SGLang symbol ESamp relies on (sglang==0.5.23), in one place; ``tests/runtime/test_hooks_contract.py``
checks every entry and fails loudly if one moves or changes.

This module is the composition root: it wires the scheduler-side adapter (``runtime/``) and the server-process side
(``serve/``) into SGLang through its plugin ``HookRegistry``; those two packages never import each other.
Four kinds of reliance, each a table below:
  HOOKS      functions we hook (BEFORE/AFTER/AROUND), with our function as "module:attr" under sglang_esamp
             (imported lazily so this module stays import-light) and the leading parameters the hook relies on;
  OVERRIDES  methods (some private) that our subclasses override, with their leading parameters;
  CALLS      functions and methods we call or wrap on instances (taps), with the parameters we pass or read;
  ATTRIBUTES attributes we read on SGLang objects (fields, instance attributes set in ``__init__``).
"""
from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Callable, Tuple

logger = logging.getLogger("sglang_esamp")

_MR = "sglang.srt.model_executor.model_runner.ModelRunner"
_TM = "sglang.srt.managers.tokenizer_manager.TokenizerManager"
_SCHED = "sglang.srt.managers.scheduler.Scheduler"
_STREAMER = "sglang.srt.managers.scheduler_components.output_streamer.SchedulerOutputStreamer"
_WU = "sglang.srt.model_executor.model_runner_components.weight_updater.WeightUpdater"


@dataclass(frozen=True)
class Hook:
    path: str                 # sglang dotted path
    kind: str                 # BEFORE | AFTER | AROUND
    hook: str                 # "module:function" under sglang_esamp
    params: Tuple[str, ...]   # leading parameter names of the SGLang function we rely on
    why: str


@dataclass(frozen=True)
class Signature:
    path: str                 # sglang dotted path of a function or method
    params: Tuple[str, ...]   # leading parameter names we rely on (positions matter where we read args)
    why: str


@dataclass(frozen=True)
class Attribute:
    owner: str                # sglang dotted path of a class or module
    names: Tuple[str, ...]    # attributes we read (class attributes, dataclass fields or set in __init__)
    why: str


HOOKS = (
    Hook(f"{_MR}.load_model", "AFTER", "hooks:after_load_model", ("self",),
         "build ESampRuntime (taps, bank) once the served model is loaded"),
    Hook("sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new", "AFTER", "hooks:after_init_new",
         ("cls", "batch", "model_runner"), "1. plan: map decode rows to requests and their group slots"),
    Hook(f"{_MR}.sample", "AROUND", "runtime.step:sample_step", ("self", "logits_output", "forward_batch"),
         "3.-5. predict -> reweighted sampling -> train, per decode step"),
    Hook("sglang.srt.layers.sampler.create_sampler", "AROUND", "hooks:around_create_sampler", ("backend",),
         "serve ESampSampler for whatever sampling backend SGLang resolved"),
    Hook("sglang.srt.mem_cache.common.release_kv_cache", "AFTER", "hooks:after_release_kv_cache",
         ("req", "tree_cache"), "6. leave: a finished or aborted request leaves its group"),
    Hook(f"{_SCHED}._add_request_to_queue", "BEFORE", "hooks:before_add_request_to_queue", ("self", "req"),
         "parse the member on arrival: seeded siblings take their streams in the order SGLang sent them"),
    Hook(f"{_SCHED}.send_abort_output", "AFTER", "hooks:after_send_abort_output", ("self", "abort_req", "req"),
         "6. leave: a request ended outside the output stream (aborted while queued, by retraction, rejected)"),
    Hook(f"{_SCHED}.get_output_streamer_class", "AFTER", "runtime.output:output_streamer_class", ("self",),
         "attach meta_info.esamp to responses"),
    Hook(f"{_SCHED}.get_internal_state", "AFTER", "hooks:after_internal_state", ("self", "recv_req"),
         "expose ESamp counters through SGLang's internal-state RPC (/esamp/stats)"),
    Hook(f"{_WU}.update_weights_from_disk", "AFTER", "runtime.weights:after_disk_update", ("self", "model_path"),
         "weights replaced from disk: read the LM head again; keep the warm start only if it fits the new checkpoint"),
    Hook(f"{_WU}.update_weights_from_tensor", "AFTER", "runtime.weights:after_tensor_update",
         ("self", "named_tensors"), "weights replaced in memory: read the LM head again, drop the warm start"),
    Hook(f"{_WU}.load_weights_from_distributed", "AFTER", "runtime.weights:after_tensor_update",
         ("self", "named_tensors"), "weights broadcast by a trainer: as update_weights_from_tensor"),
    Hook(f"{_WU}.update_weights_from_ipc", "AFTER", "runtime.weights:after_tensor_update", ("self", "recv_req"),
         "weights handed over by IPC: as update_weights_from_tensor"),
    Hook(f"{_WU}.end_weight_update", "AFTER", "runtime.weights:after_end_update", ("self",),
         "a weight-update session ends (weights post-processed): read the LM head again"),
    Hook(f"{_TM}._create_tokenized_object", "BEFORE", "serve.tokenizer_hooks:before_tokenize", ("self", "obj"),
         "accept sampling_params.esamp; validate"),
    Hook(f"{_TM}._create_tokenized_object", "AFTER", "serve.tokenizer_hooks:after_tokenize", ("self", "obj"),
         "stamp the request group shared by n siblings"),
    Hook(f"{_TM}.update_request_meta_info", "AROUND", "serve.tokenizer_hooks:set_meta_info",
         ("self", "meta_info", "state", "customized_info", "index", "finish_reason"),
         "meta_info.esamp is a dict, not an accumulated list"),
    Hook("sglang.srt.entrypoints.http_server.launch_server", "BEFORE", "serve.http_routes:before_launch_http",
         ("server_args",), "add /esamp/stats and the esamp body middleware to SGLang's app"),
)

OVERRIDES = (
    Signature("sglang.srt.layers.sampler.Sampler._preprocess_logits", ("self", "logits", "sampling_info"),
              "runtime.sampler: keep the ESamp rows' logits after SGLang's preprocessing"),
    Signature("sglang.srt.layers.sampler.Sampler._sample_from_probs",
              ("self", "probs", "sampling_info", "positions", "simple_sampling_case"),
              "runtime.sampler: replace the ESamp rows' tokens (returns (ids, capture))"),
    Signature(f"{_STREAMER}.build_additional_customized_info", ("self", "reqs"), "runtime.output"),
    Signature(f"{_STREAMER}.is_request_level_customized_info_key", ("self", "key"), "runtime.output"),
)

CALLS = (
    Signature("sglang.srt.layers.layer_boundary.stage.StageBoundary.prepare", ("self", "hidden_states", "forward_batch"),
              "runtime.taps wraps layers[i].attn_boundary.prepare (the shallow tap)"),
    Signature("sglang.srt.layers.logits_processor.LogitsProcessor.forward",
              ("self", "input_ids", "hidden_states", "lm_head", "logits_metadata"),
              "runtime.taps: a forward pre-hook reads hidden_states (arg 1)"),
    Signature("sglang.srt.managers.schedule_batch.Req.finished", ("self",), "runtime.step.request_left"),
    Signature(f"{_TM}.get_internal_state", ("self",), "serve.http_routes: /esamp/stats"),
    Signature("sglang.srt.entrypoints.http_server.get_global_state", (), "serve.http_routes: /esamp/stats"),
    Signature("sglang.srt.runtime_context.get_server_args", (), "runtime.metrics: --enable-metrics"),
    Signature("sglang.srt.runtime_context.get_parallel", (), "runtime.runtime: this scheduler's DP rank"),
    Signature("sglang.srt.plugins.hook_registry.HookRegistry.register", ("cls", "target", "hook", "hook_type"),
              "install()"),
    Signature("sglang.launch_server.run_server", ("server_args",), "sglang_esamp.launch_server"),
    Signature("sglang.srt.server_args.prepare_server_args", ("argv",), "sglang_esamp.launch_server"),
    Signature("sglang.srt.server_args.ServerArgs.add_cli_args", ("parser",), "sglang_esamp.launch_server --help"),
    Signature("sglang.srt.plugins.load_plugins", (), "sglang_esamp.launch_server"),
)

ATTRIBUTES = (
    Attribute("sglang.srt.models.llama.LlamaDecoderLayer", ("attn_boundary",), "runtime.taps (shallow tap)"),
    Attribute("sglang.srt.models.qwen2.Qwen2DecoderLayer", ("attn_boundary",), "runtime.taps (shallow tap)"),
    Attribute("sglang.srt.models.llama.LlamaForCausalLM", ("model", "lm_head", "logits_processor", "config"),
              "runtime.taps / runtime.runtime: layers, LM-head weight, final-norm tap"),
    Attribute("sglang.srt.models.llama.LlamaModel", ("layers",), "runtime.taps"),
    Attribute("sglang.srt.models.qwen2.Qwen2ForCausalLM", ("model", "lm_head", "logits_processor", "config"),
              "runtime.taps / runtime.runtime"),
    Attribute("sglang.srt.models.qwen2.Qwen2Model", ("layers",), "runtime.taps"),
    Attribute("sglang.srt.models.qwen3.Qwen3DecoderLayer", ("attn_boundary",), "runtime.taps (shallow tap)"),
    Attribute("sglang.srt.models.gemma3_causal.Gemma3DecoderLayer", ("input_layernorm",),
              "runtime.taps: the input-norm form of the shallow tap (no attn_boundary)"),
    Attribute("sglang.srt.models.gemma3_causal.Gemma3ForCausalLM", ("model", "lm_head", "logits_processor"),
              "runtime.taps / runtime.runtime"),
    Attribute("sglang.srt.layers.logits_processor.LogitsProcessor", ("final_logit_softcapping", "logit_scale"),
              "runtime.taps.check_logits_processor: models whose logits ESamp's W . h_hat would not match"),
    Attribute("sglang.srt.model_executor.forward_batch_info.ForwardBatch",
              ("rids", "forward_mode", "sampling_info", "seq_lens"),
              "runtime.step / runtime.taps; seq_lens: the position of the token a seeded row draws"),
    Attribute("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo",
              ("temperatures", "top_ks", "top_ps", "min_ps"), "runtime.sampler: the rows' own filters"),
    Attribute("sglang.srt.managers.schedule_batch.ScheduleBatch", ("reqs", "forward_mode"), "runtime.step"),
    Attribute("sglang.srt.managers.schedule_batch.Req", ("rid", "sampling_params", "origin_input_ids"),
              "runtime.groups (origin_input_ids: a seeded member's prompt length and stream key)"),
    Attribute("sglang.srt.sampling.sampling_params.SamplingParams", ("custom_params", "n", "sampling_seed"),
              "where esamp travels (wire.request); sampling_seed: seeded ESamp rows (algo.seeded_noise)"),
    Attribute(_WU, ("get_model_runner",), "runtime.weights: is this the served model's updater"),
    Attribute("sglang.srt.layers.vocab_parallel_embedding.VocabParallelEmbedding",
              ("tp_size", "tp_group", "shard_indices"), "runtime.runtime: the LM head's vocabulary slice under TP"),
    Attribute("sglang.srt.layers.vocab_parallel_embedding.VocabParallelEmbeddingShardIndices",
              ("org_vocab_start_index", "org_vocab_end_index"), "algo.vocab_shard: which token ids a rank holds"),
    Attribute(_MR, ("model", "model_config", "is_draft_worker", "server_args"), "runtime.runtime.attach"),
    Attribute("sglang.srt.server_args.ServerArgs",
              ("disable_cuda_graph", "speculative_algorithm", "enable_deterministic_inference", "enable_mixed_chunk",
               "pp_size", "dp_size"), "wire.modes: modes refused at startup; dp_size: wire.placement"),
    Attribute("sglang.srt.plugins.hook_registry.HookRegistry", ("_patched",), "check_hooks_applied"),
    Attribute(_TM, ("server_args",), "serve.tokenizer_hooks: --dp-size for the group's placement"),
    Attribute("sglang.srt.managers.io_struct.TokenizedGenerateReqInput", ("rid", "sampling_params", "routed_dp_rank"),
              "serve.tokenizer_hooks: stamp the group, route it to its DP rank"),
    Attribute("sglang.srt.configs.model_config.ModelConfig", ("model_path",), "warm-start fingerprint"),
    Attribute("sglang.srt.entrypoints.http_server", ("app",), "serve.http_routes.install_routes"),
)


def resolve_hook(spec: str) -> Callable:
    module, attr = spec.split(":")
    return getattr(importlib.import_module(f"sglang_esamp.{module}"), attr)


def resolve(path: str):
    """The SGLang object at a dotted path (raises if it moved)."""
    import pkgutil

    try:
        return importlib.import_module(path)
    except ImportError:
        pass
    obj_path, attr = path.rsplit(".", 1)
    owner = pkgutil.resolve_name(obj_path)
    return inspect.getattr_static(owner, attr) if isinstance(owner, type) else getattr(owner, attr)


def target_signature_params(path: str) -> Tuple[str, ...]:
    """The parameter names of an SGLang function or method (raises if it moved)."""
    fn = resolve(path)
    if isinstance(fn, (classmethod, staticmethod)):
        fn = fn.__func__
    fn = inspect.unwrap(fn)
    return tuple(inspect.signature(fn).parameters)


def install():
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for t in HOOKS:
        HookRegistry.register(t.path, _lazy(t.hook), getattr(HookType, t.kind))


class HookNotAppliedError(RuntimeError):
    """SGLang's registry logs a target it failed to patch and carries on; ESamp would then be silently inert."""


def check_hooks_applied(patched=None) -> None:
    """Raise, naming them, if any of our hook targets was not patched in this process (a moved or renamed SGLang
    symbol). Called where a server or Engine starts (after SGLang's ``load_plugins``) and in each scheduler."""
    import os

    if os.environ.get("SGLANG_ESAMP", "1") == "0":
        return   # the plugin is switched off: nothing was meant to be hooked
    if patched is None:
        from sglang.srt.plugins.hook_registry import HookRegistry

        patched = HookRegistry._patched
    missing = sorted({t.path for t in HOOKS} - set(patched))
    if missing:
        raise HookNotAppliedError(
            "ESamp could not hook these SGLang functions (SGLang's log above says why; is sglang the pinned "
            f"version?): {', '.join(missing)}. Refusing to start a server that would silently sample without "
            "ESamp; run without the plugin with SGLANG_ESAMP=0.")


def _lazy(spec: str) -> Callable:
    fn = None

    def call(*args, **kwargs):
        nonlocal fn
        if fn is None:
            fn = resolve_hook(spec)
        return fn(*args, **kwargs)
    call.__name__ = spec.replace(":", ".")
    return call


# -- small hook bodies that join the two sides (the logic lives in the modules they call) ------------------------
def after_load_model(result, self, *args, **kwargs):
    from .runtime.runtime import attach
    from .wire.handoff import config_from_env, config_given

    strict = config_given()
    if strict:
        check_hooks_applied()
    attach(self, config_from_env(), strict=strict)
    return result


def after_init_new(result, *args, **kwargs):
    from .runtime.step import plan_rows

    batch = kwargs.get("batch", args[1] if len(args) > 1 else None)
    plan_rows(result, batch)
    return result


def around_create_sampler(original, *args, **kwargs):
    from sglang.srt.layers.sampler import Sampler

    from .runtime.sampler import ESampSampler

    sampler = original(*args, **kwargs)
    if type(sampler) is Sampler:
        return ESampSampler()
    message = (f"ESamp wraps SGLang's built-in Sampler only, but the sampling backend gave "
               f"{type(sampler).__name__} (--sampling-backend): its rows would sample without ESamp")
    from .wire.handoff import config_given

    if config_given():
        from .wire.modes import UnsupportedModeError

        raise UnsupportedModeError(message + "; use a built-in --sampling-backend or run with SGLANG_ESAMP=0")
    logger.warning("%s -- serving without ESamp", message)
    return sampler


def after_release_kv_cache(result, req, *args, **kwargs):
    from .runtime.step import request_left

    request_left(req)
    return result


def before_add_request_to_queue(self, req, *args, **kwargs):
    from .runtime.runtime import current_runtime

    rt = current_runtime()
    if rt is not None:
        # SGLang sends the n siblings of a request in order, but may schedule them in another (queue policy,
        # retraction): parsing here, not at the first forward, ties a seeded sibling's stream to its index
        rt.members.member_of(req)
    return None


def after_send_abort_output(result, self, abort_req, req, *args, **kwargs):
    from .runtime.step import request_left

    request_left(req, ended=True)
    return result


def after_internal_state(result, self, *args, **kwargs):
    from .runtime.runtime import current_runtime

    rt = current_runtime()
    state = getattr(result, "internal_state", None)
    if rt is not None and isinstance(state, dict):
        rt.members.expire_stale()   # the linger backstop also runs on an idle server (no forward steps)
        state["esamp"] = rt.snapshot()
    return result
