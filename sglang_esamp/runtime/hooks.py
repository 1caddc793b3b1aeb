"""Every SGLang symbol ESamp touches, in one place (sglang==0.5.23). ``tests/runtime/test_hooks_contract.py``
fails loudly if one of them moves or changes its signature.

Each entry: dotted target, hook type, our function (as "module:attr" under sglang_esamp.runtime, imported lazily
so this module stays import-light), and the leading parameter names the hook relies on.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Callable, Tuple

logger = logging.getLogger("sglang_esamp")


@dataclass(frozen=True)
class Target:
    path: str                 # sglang dotted path
    kind: str                 # BEFORE | AFTER | AROUND
    hook: str                 # "module:function" inside sglang_esamp.runtime
    params: Tuple[str, ...]   # leading parameter names of the SGLang function we rely on
    why: str


TARGETS = (
    Target("sglang.srt.model_executor.model_runner.ModelRunner.load_model", "AFTER", "hooks:_after_load_model",
           ("self",), "build ESampRuntime (taps, bank) once the served model is loaded"),
    Target("sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new", "AFTER", "hooks:_after_init_new",
           ("cls", "batch", "model_runner"), "map decode rows to requests and their group slots"),
    Target("sglang.srt.model_executor.model_runner.ModelRunner.sample", "AROUND", "hooks:_around_sample",
           ("self", "logits_output", "forward_batch"), "predict -> reweighted sampling -> train, per decode step"),
    Target("sglang.srt.layers.sampler.create_sampler", "AROUND", "hooks:_around_create_sampler",
           ("backend",), "serve ESampSampler for whatever sampling backend SGLang resolved"),
    Target("sglang.srt.mem_cache.common.release_kv_cache", "AFTER", "hooks:_after_release_kv_cache",
           ("req", "tree_cache"), "a finished or aborted request leaves its group (slot freed with the last)"),
    Target("sglang.srt.managers.scheduler.Scheduler.get_output_streamer_class", "AFTER",
           "output:output_streamer_class", ("self",), "attach meta_info.esamp to responses"),
    Target("sglang.srt.managers.scheduler.Scheduler.get_internal_state", "AFTER", "hooks:_after_internal_state",
           ("self", "recv_req"), "expose ESamp counters through SGLang's internal-state RPC (/esamp/stats)"),
    Target("sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object", "BEFORE",
           "tokenizer_hooks:before_tokenize", ("self", "obj"), "accept sampling_params.esamp; validate"),
    Target("sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object", "AFTER",
           "tokenizer_hooks:after_tokenize", ("self", "obj"), "stamp the request group shared by n siblings"),
    Target("sglang.srt.managers.tokenizer_manager.TokenizerManager.update_request_meta_info", "AROUND",
           "output:set_meta_info", ("self", "meta_info", "state", "customized_info", "index", "finish_reason"),
           "meta_info.esamp is a dict, not an accumulated list"),
    Target("sglang.srt.entrypoints.http_server.launch_server", "BEFORE", "hooks:_before_launch_http",
           ("server_args",), "add /esamp/stats and the esamp body middleware to SGLang's app"),
)


def resolve_hook(spec: str) -> Callable:
    module, attr = spec.split(":")
    return getattr(importlib.import_module(f"sglang_esamp.runtime.{module}"), attr)


def target_signature_params(path: str) -> Tuple[str, ...]:
    """The parameter names of an SGLang target (raises if it moved)."""
    import pkgutil

    obj_path, attr = path.rsplit(".", 1)
    owner = pkgutil.resolve_name(obj_path)
    fn = inspect.getattr_static(owner, attr) if isinstance(owner, type) else getattr(owner, attr)
    if isinstance(fn, (classmethod, staticmethod)):
        fn = fn.__func__
    fn = inspect.unwrap(fn)
    return tuple(inspect.signature(fn).parameters)


def install():
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for t in TARGETS:
        HookRegistry.register(t.path, _lazy(t.hook), getattr(HookType, t.kind))


def _lazy(spec: str) -> Callable:
    fn = None

    def call(*args, **kwargs):
        nonlocal fn
        if fn is None:
            fn = resolve_hook(spec)
        return fn(*args, **kwargs)
    call.__name__ = spec.replace(":", ".")
    return call


# -- small hook bodies (the logic lives in the modules they call) -------------------------------------------------
def _after_load_model(result, self, *args, **kwargs):
    from ..serve.esamp_args import ENV_CONFIG, config_from_env
    from .runtime import attach

    attach(self, config_from_env(), strict=ENV_CONFIG in os.environ)
    return result


def _after_init_new(result, *args, **kwargs):
    from .step import plan_rows

    batch = kwargs.get("batch", args[1] if len(args) > 1 else None)
    plan_rows(result, batch)
    return result


def _around_sample(original, *args, **kwargs):
    from .step import sample_step

    return sample_step(original, *args, **kwargs)


def _around_create_sampler(original, *args, **kwargs):
    from sglang.srt.layers.sampler import Sampler

    from .sampler import ESampSampler

    sampler = original(*args, **kwargs)
    return ESampSampler() if type(sampler) is Sampler else sampler


def _after_release_kv_cache(result, req, *args, **kwargs):
    from .step import request_left

    request_left(req)
    return result


def _after_internal_state(result, self, *args, **kwargs):
    from .runtime import current_runtime

    rt = current_runtime()
    state = getattr(result, "internal_state", None)
    if rt is not None and isinstance(state, dict):
        state["esamp"] = rt.snapshot()
    return result


def _before_launch_http(*args, **kwargs):
    from sglang.srt.entrypoints.http_server import app

    from ..serve.http_routes import install_routes

    install_routes(app)
    return None
