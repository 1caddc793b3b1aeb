"""Tokenizer-manager side (server/engine main process): accept ``sampling_params.esamp`` and stamp the group.

``before_tokenize`` (BEFORE ``TokenizerManager._create_tokenized_object``): moves ``sampling_params.esamp`` into
``custom_params.esamp`` and validates it -- the Engine path has no HTTP middleware, and SGLang's SamplingParams
rejects unknown keys. A bad value raises ESampParamError (a ValueError naming the field): the HTTP layer answers
400, the Engine raises it to the caller; nothing reaches the scheduler.
``after_tokenize`` (AFTER it): stamps ``custom_params.esamp_group`` = the request's own rid and its ``n``. The n
parallel copies SGLang makes next are shallow copies that share this SamplingParams, so all siblings carry the
same group key (they get fresh rids and no group id otherwise).
"""
from __future__ import annotations

from .request_params import move_esamp_into_custom_params, stamp_group, validate_custom_params


def before_tokenize(self, obj, *args, **kwargs):
    sp = getattr(obj, "sampling_params", None)
    if isinstance(sp, dict):
        move_esamp_into_custom_params(sp)
        validate_custom_params(sp.get("custom_params"))
    return None


def after_tokenize(result, self, obj, *args, **kwargs):
    sp = getattr(result, "sampling_params", None)
    rid = getattr(result, "rid", None)
    if sp is None or rid is None:
        return result
    stamped = stamp_group(sp.custom_params, default_key=str(rid), default_size=int(getattr(sp, "n", 1) or 1))
    if stamped is not None:
        sp.custom_params = stamped
    return result
