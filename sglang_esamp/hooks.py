"""Every SGLang symbol ESamp relies on (sglang==0.5.23), in one place; ``tests/runtime/test_hooks_contract.py``
checks every entry and fails loudly if one moves or changes.

This module is the composition root: it wires the scheduler side (``runtime/``) and the server-process side
(``serve/``) into SGLang through its plugin ``HookRegistry``; those two packages never import each other.
Four kinds of reliance:
  HOOKS      functions we hook (BEFORE/AFTER/AROUND). Each hook body declares its target next to its code
             (``wire.hookspec.hook``); the list is collected from the shim modules below, so every entry holds
             the function object (go-to-definition and the import graph see it);
  OVERRIDES  methods (some private) that our subclasses override, with their leading parameters;
  CALLS      functions and methods we call or wrap on instances (taps), with the parameters we pass or read;
  ATTRIBUTES attributes we read on SGLang objects (fields, instance attributes set in ``__init__``).
The shim modules import no SGLang at module level (SGLang registers plugins early in every process).
"""
from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Tuple

from .runtime import cpu_gemm
from .runtime import shims as scheduler_shims
from .serve import http_routes, tokenizer_hooks
from .wire.hookspec import AFTER, hook, hooks_of
from .wire.sglang_paths import MODEL_RUNNER, OUTPUT_STREAMER, TOKENIZER_MANAGER, WEIGHT_UPDATER

logger = logging.getLogger("sglang_esamp")

_MR, _TM, _STREAMER, _WU = MODEL_RUNNER, TOKENIZER_MANAGER, OUTPUT_STREAMER, WEIGHT_UPDATER


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


@hook(f"{_MR}.load_model", AFTER, ("self",), "build ESampRuntime (taps, bank, group table) once the model is loaded")
def after_load_model(result, self, *args, **kwargs):
    """Joins both sides: the config handed over by the launching process (wire) builds the scheduler's runtime."""
    from .runtime.esamp_runtime import attach
    from .wire.handoff import config_from_env, config_given

    strict = config_given()
    if strict:
        check_hooks_applied()
    attach(self, config_from_env(), strict=strict)
    return result


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
    Signature("sglang.srt.managers.schedule_batch.Req.finished", ("self",), "runtime.shims.after_release_kv_cache"),
    Signature(f"{_TM}.get_internal_state", ("self",), "serve.http_routes: /esamp/stats"),
    Signature("sglang.srt.entrypoints.http_server.get_global_state", (), "serve.http_routes: /esamp/stats"),
    Signature("sglang.srt.runtime_context.get_server_args", (), "runtime.metrics: --enable-metrics"),
    Signature("sglang.srt.runtime_context.get_parallel", (),
              "runtime.esamp_runtime: this scheduler's DP rank; runtime.bank_budget: tp_group.cpu_group"),
    Signature("sglang.srt.plugins.hook_registry.HookRegistry.register", ("cls", "target", "hook", "hook_type"),
              "install()"),
    Signature("sglang.launch_server.run_server", ("server_args",), "sglang_esamp.launch_server"),
    Signature("sglang.srt.server_args.prepare_server_args", ("argv",), "sglang_esamp.launch_server"),
    Signature("sglang.srt.server_args.ServerArgs.add_cli_args", ("parser",), "sglang_esamp.launch_server --help"),
    Signature("sglang.srt.plugins.load_plugins", (), "sglang_esamp.launch_server"),
    Signature("sglang.srt.layers.logits_processor.should_apply_lm_head_quant_method", ("lm_head", "quant_method"),
              "runtime.cpu_gemm: a quantized LM head is left to SGLang"),
)

ATTRIBUTES = (
    Attribute("sglang.srt.models.llama.LlamaDecoderLayer", ("attn_boundary",), "runtime.taps (shallow tap)"),
    Attribute("sglang.srt.models.qwen2.Qwen2DecoderLayer", ("attn_boundary",), "runtime.taps (shallow tap)"),
    Attribute("sglang.srt.models.llama.LlamaForCausalLM", ("model", "lm_head", "logits_processor", "config"),
              "runtime.taps / runtime.esamp_runtime: layers, LM-head weight, final-norm tap"),
    Attribute("sglang.srt.models.llama.LlamaModel", ("layers",), "runtime.taps"),
    Attribute("sglang.srt.models.qwen2.Qwen2ForCausalLM", ("model", "lm_head", "logits_processor", "config"),
              "runtime.taps / runtime.esamp_runtime"),
    Attribute("sglang.srt.models.qwen2.Qwen2Model", ("layers",), "runtime.taps"),
    Attribute("sglang.srt.models.qwen3.Qwen3DecoderLayer", ("attn_boundary",), "runtime.taps (shallow tap)"),
    Attribute("sglang.srt.models.gemma3_causal.Gemma3DecoderLayer", ("input_layernorm",),
              "runtime.taps: the input-norm form of the shallow tap (no attn_boundary)"),
    Attribute("sglang.srt.models.gemma3_causal.Gemma3ForCausalLM", ("model", "lm_head", "logits_processor"),
              "runtime.taps / runtime.esamp_runtime"),
    Attribute("sglang.srt.layers.logits_processor.LogitsProcessor", ("final_logit_softcapping", "logit_scale"),
              "runtime.taps.check_logits_processor: models whose logits ESamp's W . h_hat would not match"),
    Attribute("sglang.srt.layers.logits_processor.LogitsProcessor",
              ("use_fp32_lm_head", "use_fp32_lm_head_output", "rl_on_policy_target"),
              "runtime.cpu_gemm: the LM-head branches it leaves to SGLang"),
    Attribute("sglang.srt.model_executor.forward_batch_info.ForwardBatch",
              ("rids", "forward_mode", "sampling_info", "seq_lens"),
              "runtime.step / runtime.taps; seq_lens: the position of the token a seeded row draws"),
    Attribute("sglang.srt.sampling.sampling_batch_info.SamplingBatchInfo",
              ("temperatures", "top_ks", "top_ps", "min_ps"), "runtime.sampler: the rows' own filters"),
    Attribute("sglang.srt.managers.schedule_batch.ScheduleBatch", ("reqs", "forward_mode"), "runtime.step"),
    Attribute("sglang.srt.managers.schedule_batch.Req", ("rid", "sampling_params", "origin_input_ids"),
              "runtime.members (origin_input_ids: a seeded member's prompt length and stream key)"),
    Attribute("sglang.srt.sampling.sampling_params.SamplingParams", ("custom_params", "n", "sampling_seed"),
              "where esamp travels (wire.request); sampling_seed: seeded ESamp rows (algo.rule.seeded_noise)"),
    Attribute(_WU, ("get_model_runner",), "runtime.shims: is this the served model's updater"),
    Attribute("sglang.srt.layers.vocab_parallel_embedding.VocabParallelEmbedding",
              ("tp_size", "tp_group", "shard_indices"), "runtime.esamp_runtime: the LM head's vocabulary slice under TP"),
    Attribute("sglang.srt.layers.vocab_parallel_embedding.VocabParallelEmbeddingShardIndices",
              ("org_vocab_start_index", "org_vocab_end_index"), "algo.rule.vocab_shard: which token ids a rank holds"),
    Attribute(_MR, ("model", "model_config", "is_draft_worker", "server_args"), "runtime.esamp_runtime.attach"),
    Attribute(_MR, ("pre_model_load_memory", "mem_fraction_static"),
              "runtime.bank_budget: SGLang's memory reservation, for --esamp-bank-slots auto"),
    Attribute("sglang.srt.server_args.ServerArgs",
              ("max_running_requests", "max_total_tokens", "mem_fraction_static", "kv_cache_dtype", "tp_size",
               "enable_dp_attention"), "runtime.bank_budget: the bounds of --esamp-bank-slots auto"),
    Attribute("sglang.srt.configs.model_config.ModelConfig",
              ("num_hidden_layers", "num_attention_layers", "get_num_kv_heads", "head_dim", "v_head_dim", "dtype"),
              "runtime.bank_budget: one token's KV bytes (the pool --max-total-tokens caps)"),
    Attribute("sglang.srt.server_args.ServerArgs",
              ("disable_cuda_graph", "disable_decode_cuda_graph", "cuda_graph_backend_decode", "cuda_graph_config",
               "device", "enable_torch_compile", "speculative_algorithm", "enable_deterministic_inference",
               "enable_mixed_chunk", "pp_size", "dp_size"), "wire.modes: modes refused at startup; dp_size: wire.placement"),
    Attribute("sglang.srt.plugins.hook_registry.HookRegistry", ("_patched",), "check_hooks_applied"),
    Attribute(_TM, ("server_args",), "serve.tokenizer_hooks: --dp-size for the group's placement"),
    Attribute("sglang.srt.managers.io_struct.TokenizedGenerateReqInput", ("rid", "sampling_params", "routed_dp_rank"),
              "serve.tokenizer_hooks: stamp the group, route it to its DP rank"),
    Attribute("sglang.srt.configs.model_config.ModelConfig", ("model_path",), "warm-start fingerprint"),
    Attribute("sglang.srt.entrypoints.http_server", ("app",), "serve.http_routes.install_routes"),
)


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
        HookRegistry.register(t.path, t.fn, getattr(HookType, t.kind))


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


# the one list: every hook body of the scheduler and server sides, with the SGLang function it hooks; the opt-in
# CPU GEMM hooks only where asked for (they sit on every linear call), and the contract test checks them always
OPTIONAL_HOOKS = tuple(hooks_of(cpu_gemm))
HOOKS = tuple(hooks_of(importlib.import_module(__name__), scheduler_shims, tokenizer_hooks, http_routes)) + \
    (OPTIONAL_HOOKS if cpu_gemm.enabled() else ())
