"""How per-request ESamp parameters travel through SGLang (no SGLang import here; pure dict plumbing).

Wire format: SGLang carries arbitrary per-request values in ``sampling_params.custom_params`` from every entry
point (HTTP /generate, OpenAI routes, the Engine) to the scheduler without server changes. We use two keys:
  ``custom_params["esamp"]``        the user's value: ``true`` / ``false`` / ``{"beta", "enabled", "session",
                                    "group", "group_size"}`` (validated by ``algo.config.ESampRequest``)
  ``custom_params["esamp_group"]``  stamped by the tokenizer manager: ``{"key": str, "size": int}``, the
                                    request group that shares one distiller (``n`` parallel samples share the
                                    original request id; a user ``group`` key lets separate requests share).
Users may write ``sampling_params.esamp`` (moved here before SGLang's own parsing, which rejects unknown keys),
``custom_params.esamp``, or for OpenAI routes a top-level ``esamp`` body field.
"""
from __future__ import annotations

from typing import Any, Mapping, MutableMapping, Optional

from ..algo.config import ESampParamError, ESampRequest

ESAMP_KEY = "esamp"
GROUP_KEY = "esamp_group"
_GROUP_FIELDS = ("group", "group_size")
GROUP_KEY_MAX = 256


def parse_request(value: Any) -> Optional[ESampRequest]:
    """Validate a user ``esamp`` value (None = ESamp off). Group fields are checked here, the rest by ESampRequest."""
    if isinstance(value, Mapping):
        rest = {k: v for k, v in value.items() if k not in _GROUP_FIELDS}
        group = value.get("group")
        if group is not None and (not isinstance(group, str) or not group or len(group) > GROUP_KEY_MAX):
            raise ESampParamError("esamp.group", f"must be a non-empty string of at most {GROUP_KEY_MAX} "
                                                 f"characters, got {group!r}")
        size = value.get("group_size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096):
            raise ESampParamError("esamp.group_size", f"must be an integer in [1, 4096], got {size!r}")
        return ESampRequest.parse(rest)
    return ESampRequest.parse(value)


def move_esamp_into_custom_params(sampling_params: MutableMapping, value: Any = None, *, from_key: bool = True):
    """In place: ``sampling_params["esamp"]`` (or ``value``) -> ``custom_params["esamp"]``, validated.

    Raises ESampParamError (a ValueError naming the field) for a bad value.
    """
    if from_key:
        if ESAMP_KEY not in sampling_params:
            return
        value = sampling_params.pop(ESAMP_KEY)
    if value is None:
        return
    parse_request(value)
    custom = dict(sampling_params.get("custom_params") or {})
    custom[ESAMP_KEY] = dict(value) if isinstance(value, Mapping) else value
    sampling_params["custom_params"] = custom


def validate_custom_params(custom_params: Optional[Mapping]) -> Optional[ESampRequest]:
    if not custom_params or ESAMP_KEY not in custom_params:
        return None
    return parse_request(custom_params[ESAMP_KEY])


def stamp_group(custom_params: Optional[Mapping], default_key: str, default_size: int) -> Optional[dict]:
    """A copy of custom_params with the group stamp, or None when the request does not use ESamp."""
    if not custom_params or ESAMP_KEY not in custom_params:
        return None
    req = parse_request(custom_params[ESAMP_KEY])
    if req is None or not req.enabled:
        return None
    value = custom_params[ESAMP_KEY]
    user_group = value.get("group") if isinstance(value, Mapping) else None
    user_size = value.get("group_size") if isinstance(value, Mapping) else None
    out = dict(custom_params)
    if user_group is not None:
        out[GROUP_KEY] = {"key": f"user:{user_group}", "size": int(user_size or default_size)}
    else:
        out[GROUP_KEY] = {"key": f"req:{default_key}", "size": int(user_size or default_size)}
    return out
