"""``esamp`` as a sampling parameter of the SGLang frontend: ``sgl.gen(..., esamp=True | False | {...})``.

How the value travels (SGLang 0.5.23's frontend has fixed parameter lists at every hop, so each hop gets a patch):
  1. ``sgl.gen``  (``sglang.gen`` and ``sglang.lang.api.gen``) is wrapped to take a keyword-only ``esamp``. The
     value is validated at once, in the client, with ``wire.request.ESampRequest.parse`` (a bad value raises
     ``ESampParamError``, a ValueError naming the field) and stored on the SglGen's ``SglSamplingParams``.
  2. ``SglSamplingParams.esamp`` is a plain attribute with class default None -- not a dataclass field, so SGLang's
     own constructors and ``copy.deepcopy`` are unaffected; ``clone()`` is wrapped to carry it.
  3. ``StreamExecutor._resolve_sampling_params`` (which copies a fixed list of names onto the program defaults) is
     wrapped to carry ``esamp`` too, adding the fork group for gens inside ``s.fork(n)`` branches (forks.py).
  4. ``SglSamplingParams.to_srt_kwargs`` emits ``"custom_params": {"esamp": value}`` when set, so it lands in the
     ``sampling_params`` of the /generate body (RuntimeEndpoint) or of ``Engine.async_generate`` (EngineBackend),
     where SGLang carries it to the scheduler as it is. ``custom_params`` rather than ``sampling_params.esamp``:
     the SGLang gateway re-parses ``sampling_params`` into its own schema and drops unknown keys, but forwards
     ``custom_params`` (routing.py adds the gateway's routing key for groups and sessions).
A gen without ``esamp`` sends nothing new: the request is byte-for-byte what stock SGLang sends.
``esamp`` with ``choices=`` is rejected: select scores fixed continuations and never samples. When ``run_batch``
traces a program to pre-cache its prefix, arguments are placeholders (``SglArgument``); an ``esamp`` placeholder is
ignored there (tracing stops before any gen is sent), and the real value is validated when the program runs.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping

from ..algo.config import ESampParamError
from ..wire.request import ESAMP_KEY, ESampRequest
from . import forks

ATTR = "esamp"


def normalize(value: Any) -> Any:
    """A validated private copy of a user ``esamp`` value (None stays None = ESamp off, nothing sent)."""
    if value is None:
        return None
    ESampRequest.parse(value)
    return dict(value) if isinstance(value, Mapping) else value


def _wrap_gen(original):
    from sglang.lang.ir import SglArgument, SglGen

    @functools.wraps(original)
    def gen(*args, esamp: Any = None, **kwargs):
        if isinstance(esamp, SglArgument):   # a placeholder of run_batch's prefix tracing: nothing is sent
            return original(*args, **kwargs)
        value = normalize(esamp)
        expr = original(*args, **kwargs)
        if value is not None:
            if not isinstance(expr, SglGen):
                raise ESampParamError("esamp", "applies to sampled generation only; sgl.gen(choices=...) scores "
                                               "fixed choices and cannot use it")
            setattr(expr.sampling_params, ATTR, value)
        return expr

    sig = inspect.signature(original)
    gen.__signature__ = sig.replace(parameters=[*sig.parameters.values(), inspect.Parameter(
        "esamp", inspect.Parameter.KEYWORD_ONLY, default=None)])
    return gen


def _wrap_to_srt_kwargs(original):
    @functools.wraps(original)
    def to_srt_kwargs(self):
        out = original(self)
        value = getattr(self, ATTR, None)
        if value is not None:
            custom = dict(out.get("custom_params") or {})
            custom[ESAMP_KEY] = dict(value) if isinstance(value, Mapping) else value
            out["custom_params"] = custom
        return out

    return to_srt_kwargs


def _wrap_clone(original):
    @functools.wraps(original)
    def clone(self):
        out = original(self)
        value = getattr(self, ATTR, None)
        if value is not None:
            setattr(out, ATTR, value)
        return out

    return clone


def _wrap_resolve(original):
    @functools.wraps(original)
    def _resolve_sampling_params(self, sampling_params):
        resolved = original(self, sampling_params)
        value = getattr(sampling_params, ATTR, None)
        if value is not None:
            setattr(resolved, ATTR, forks.with_fork_group(self, value, resolved.n))
        return resolved

    return _resolve_sampling_params


def patches():
    import sglang
    import sglang.lang.api as api
    from sglang.lang.interpreter import StreamExecutor
    from sglang.lang.ir import SglSamplingParams

    return [
        (api, "gen", _wrap_gen),
        (sglang, "gen", lambda _original: api.gen),   # the same wrapper under the package name
        (SglSamplingParams, ATTR, lambda _missing: None),
        (SglSamplingParams, "to_srt_kwargs", _wrap_to_srt_kwargs),
        (SglSamplingParams, "clone", _wrap_clone),
        (StreamExecutor, "_resolve_sampling_params", _wrap_resolve),
    ]
