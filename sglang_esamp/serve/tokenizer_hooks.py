"""Tokenizer-manager side (server/engine main process): accept ``sampling_params.esamp``, stamp the group, and
keep ``meta_info.esamp`` a dict.

``before_tokenize`` (BEFORE ``TokenizerManager._create_tokenized_object``): ``wire.request.accept`` moves
``sampling_params.esamp`` into ``custom_params.esamp`` and validates it against the server's config -- the Engine
path has no HTTP middleware, and SGLang's SamplingParams rejects unknown keys. A bad value raises ESampParamError
(a ValueError naming the field): the HTTP layer answers 400, the Engine raises it to the caller; nothing reaches
the scheduler.
``after_tokenize`` (AFTER it): stamps ``custom_params.esamp_group`` = the request's own rid and its ``n``. The n
parallel copies SGLang makes next are shallow copies that share this SamplingParams, so all siblings carry the
same group key (they get fresh rids and no group id otherwise). With ``--dp-size`` > 1 it also sets the request's
``routed_dp_rank`` to the group's rank (``wire.placement``), which the copies inherit.
``set_meta_info`` (AROUND ``TokenizerManager.update_request_meta_info``): SGLang accumulates customized values
into lists; ``meta_info.esamp`` is the latest dict instead.
"""
from __future__ import annotations

from ..wire.handoff import config_from_env
from ..wire.hookspec import AFTER, AROUND, BEFORE, hook
from ..wire.request import GROUP_KEY, META_KEY, accept, stamp_group

_TM = "sglang.srt.managers.tokenizer_manager.TokenizerManager"


@hook(f"{_TM}._create_tokenized_object", BEFORE, ("self", "obj"), "accept sampling_params.esamp; validate")
def before_tokenize(self, obj, *args, **kwargs):
    sp = getattr(obj, "sampling_params", None)
    for item in (sp if isinstance(sp, list) else [sp]):
        if isinstance(item, dict):
            accept(item, config=config_from_env())
    return None


@hook(f"{_TM}._create_tokenized_object", AFTER, ("self", "obj"), "stamp the request group shared by n siblings")
def after_tokenize(result, self, obj, *args, **kwargs):
    sp = getattr(result, "sampling_params", None)
    rid = getattr(result, "rid", None)
    if sp is None or rid is None:
        return result
    dp_size = int(getattr(getattr(self, "server_args", None), "dp_size", 1) or 1)
    stamped = stamp_group(sp.custom_params, default_key=str(rid), default_size=int(getattr(sp, "n", 1) or 1),
                          dp_size=dp_size)
    if stamped is not None:
        sp.custom_params = stamped
        if dp_size > 1 and getattr(result, "routed_dp_rank", None) is None:
            result.routed_dp_rank = stamped[GROUP_KEY]["rank"]   # SGLang's DP controller routes by it
    return result


@hook(f"{_TM}.update_request_meta_info", AROUND,
      ("self", "meta_info", "state", "customized_info", "index", "finish_reason"),
      "meta_info.esamp is a dict, not an accumulated list")
def set_meta_info(original, self, meta_info, state, customized_info, index, finish_reason, *args, **kwargs):
    if META_KEY in customized_info:
        value = customized_info[META_KEY][index]
        if value is not None:
            meta_info[META_KEY] = value
        customized_info = {k: v for k, v in customized_info.items() if k != META_KEY}
        if not customized_info:
            return None
    return original(self, meta_info, state, customized_info, index, finish_reason, *args, **kwargs)
