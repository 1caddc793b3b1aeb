"""The per-request ``esamp`` value, from the client to the scheduler: parsed and validated here, and only here.

Users write ``sampling_params.esamp`` (``/generate``, the Engine, ``sgl.gen``), ``custom_params.esamp``, or a
top-level ``esamp`` field on the OpenAI routes: ``true`` / ``false`` / an object with the fields of
``ESampRequest``. SGLang carries arbitrary per-request values in ``sampling_params.custom_params`` from every entry
point to the scheduler, so that is where the value travels, under two keys:
  ``custom_params["esamp"]``        the canonical form of the user's value (``ESampRequest.to_wire``)
  ``custom_params["esamp_group"]``  stamped by the tokenizer manager: ``{"key": str, "size": int}``, the request
                                    group that shares one distiller (the ``n`` parallel samples of one request share
                                    its id; a user ``group`` key lets separate requests of one client share)
  ``custom_params["esamp_client"]`` the client's namespace, signed by the server (``identity``)
Both stamps are the server's: a client that sends one gets a 400.
Hops: ``accept`` (HTTP middleware and the tokenizer hook: move + validate, a bad value raises ``ESampParamError``
naming the field -> HTTP 400 / a ValueError from the Engine), ``stamp_group`` (tokenizer hook, after SGLang made
its request object), ``read_scheduled`` (scheduler: the canonical value and its stamp back).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, MutableMapping, Optional, Tuple

from ..algo.config import BETA_MAX, ESampConfig, ESampParamError, check_real
from . import identity
from .placement import placement_rank, routing_key

ESAMP_KEY = "esamp"
GROUP_KEY = "esamp_group"
META_KEY = "esamp"           # responses: meta_info.esamp
KEY_MAX_CHARS = 256          # session and group keys (protocol limit, not a tuning knob)
INITS = ("warm", "random")
LOGPROBS = ("llm", "sampled")


def _check_key(field: str, value: Any):
    if not isinstance(value, str) or not value:
        raise ESampParamError(field, f"must be a non-empty string, got {value!r}")
    if len(value) > KEY_MAX_CHARS:
        raise ESampParamError(field, f"must be at most {KEY_MAX_CHARS} characters, got {len(value)}")


@dataclass(frozen=True)
class ESampRequest:
    """One request's ESamp parameters."""
    enabled: bool = True
    beta: Optional[float] = None           # None = the server's default_beta
    session: Optional[str] = None          # keep the distiller across requests (bounded by TTL / LRU): "new" starts
                                           # one, a server-issued id (meta_info.esamp.session) continues it
    group: Optional[str] = None            # let separate requests of one client share one distiller
    group_size: Optional[int] = None       # members to wait for before the group's distiller is freed
    sharpen_only: bool = False             # the control: (1+beta)*l/T on the same candidates, no distiller term
    sharpen: bool = True                   # False: sample from the rule's logits / (1+beta) = l/T - c/(1+beta)*l_d,
                                           # a pure novelty penalty (no (1+beta) sharpening; docs/quality.md)
    init: Optional[str] = None             # "warm" | "random"; None = warm when the server has a warm start
    logprobs: str = "llm"                  # "llm": SGLang's own logprobs of the LLM; "sampled": those of the
                                           # distribution the token was drawn from (the reweighted candidates)
    return_tokens: bool = False            # per-token signals in meta_info.esamp.tokens (novelty, shift, ...)

    def __post_init__(self):
        f = "esamp."
        for name in ("enabled", "sharpen_only", "sharpen", "return_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise ESampParamError(f + name, f"must be true or false, got {getattr(self, name)!r}")
        if self.beta is not None:
            check_real(f + "beta", self.beta, 0.0, BETA_MAX)
            object.__setattr__(self, "beta", float(self.beta))
        if self.session is not None:
            _check_key(f + "session", self.session)
        if self.group is not None:
            _check_key(f + "group", self.group)
        if self.group_size is not None and (not isinstance(self.group_size, int) or isinstance(self.group_size, bool)
                                            or self.group_size < 1):
            raise ESampParamError(f + "group_size", f"must be a positive integer, got {self.group_size!r}")
        if self.init is not None and self.init not in INITS:
            raise ESampParamError(f + "init", f"must be one of {list(INITS)}, got {self.init!r}")
        if self.logprobs not in LOGPROBS:
            raise ESampParamError(f + "logprobs", f"must be one of {list(LOGPROBS)}, got {self.logprobs!r}")
        if self.sharpen_only and not self.sharpen:
            raise ESampParamError(f + "sharpen", "false cannot be combined with sharpen_only (the sharpening "
                                                 "control is the sharpening alone)")

    @classmethod
    def parse(cls, value: Any) -> Optional["ESampRequest"]:
        """``None`` -> None (ESamp off); ``true``/``false``; or an object of the fields above."""
        if value is None:
            return None
        if isinstance(value, bool):
            return cls(enabled=value)
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise ESampParamError("esamp", f"has unknown keys {unknown}; allowed: {sorted(known)}")
            return cls(**dict(value))
        raise ESampParamError("esamp", f"must be true, false or an object, got {type(value).__name__}")

    def check_server(self, config: ESampConfig) -> "ESampRequest":
        """The checks that depend on the server's configuration."""
        if self.group_size is not None and self.group_size > config.max_group_size:
            raise ESampParamError("esamp.group_size", f"must be in [1, {config.max_group_size}] "
                                                      f"(--esamp-max-group-size), got {self.group_size}")
        if self.init == "warm" and config.warm_start is None:
            raise ESampParamError("esamp.init", "is 'warm' but this server has no warm start "
                                                "(start it with --esamp-warm-start)")
        return self

    def effective_beta(self, config: ESampConfig) -> float:
        """0 when disabled, else the request's beta or the server default."""
        if not self.enabled:
            return 0.0
        return config.default_beta if self.beta is None else self.beta

    def uses_distiller(self) -> bool:
        return self.enabled and not self.sharpen_only

    def uses_sampler(self) -> bool:
        """Asks for something only ESamp's own sampler gives, even with no reweighting (beta 0 / disabled)."""
        return self.logprobs == "sampled" or self.return_tokens

    def to_wire(self) -> dict:
        """Canonical form carried in ``custom_params`` (fields that differ from their defaults)."""
        default = ESampRequest()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


_NOT_HTTP = object()


def accept(holder: MutableMapping, value: Any = None, config: Optional[ESampConfig] = None, *,
           pop_key: bool = True, authorization: Any = _NOT_HTTP) -> Optional[ESampRequest]:
    """In place: the user's value (``holder["esamp"]``, or ``value``) -> ``holder["custom_params"]["esamp"]`` in
    canonical form, validated; a value already in ``custom_params.esamp`` is validated and canonicalised too.
    ``authorization``: the HTTP middleware passes the request's Authorization header (None without one); the
    request is then tagged with its client namespace (``identity``). Without it (the tokenizer hook, the Engine)
    the tag the middleware set is verified, or the request is ``local``. ``"session": "new"`` is replaced by a
    minted id, any other session id is checked. Returns the parsed request (None = ESamp off). Raises
    ESampParamError naming the field."""
    custom = holder.get("custom_params")
    if custom is not None and not isinstance(custom, Mapping):
        raise ESampParamError("custom_params", f"must be an object, got {type(custom).__name__}")
    if custom is not None and GROUP_KEY in custom:
        raise ESampParamError("custom_params." + GROUP_KEY, "is set by the server; do not send it")
    if authorization is _NOT_HTTP:
        namespace = identity.verified_client((custom or {}).get(identity.CLIENT_KEY))
    elif custom is not None and identity.CLIENT_KEY in custom:
        raise ESampParamError("custom_params." + identity.CLIENT_KEY, "is set by the server; do not send it")
    else:
        namespace = identity.client_namespace(authorization)
    if pop_key:
        value = holder.pop(ESAMP_KEY, None)
    if value is None and custom is not None:
        value = custom.get(ESAMP_KEY)
    if value is None:
        return None
    req = ESampRequest.parse(value)
    if config is not None:
        req.check_server(config)
    if req.session == identity.NEW_SESSION:
        req = dataclasses.replace(req, session=identity.mint_session(namespace))
    elif req.session is not None:
        identity.check_session(req.session, namespace)
    out = dict(custom or {})
    out[ESAMP_KEY] = req.to_wire()
    out[identity.CLIENT_KEY] = identity.client_tag(namespace)
    holder["custom_params"] = out
    return req


def stamp_group(custom_params: Optional[Mapping], default_key: str, default_size: int,
                dp_size: int = 1) -> Optional[dict]:
    """A copy of ``custom_params`` with the group stamp, or None when the request does not train a distiller.
    ``custom_params["esamp"]`` must already be canonical (``accept``). The stamp's ``rank`` is the DP rank that
    holds the group's distiller (``placement``)."""
    if not custom_params or ESAMP_KEY not in custom_params:
        return None
    req = ESampRequest.parse(custom_params[ESAMP_KEY])
    if req is None or not req.uses_distiller():
        return None
    if req.group is not None:
        key = identity.group_key(req.group, identity.verified_client(custom_params.get(identity.CLIENT_KEY)))
    else:
        key = f"req:{default_key}"
    rank = placement_rank(routing_key(key, req.session), dp_size)
    return {**custom_params, GROUP_KEY: {"key": key, "size": int(req.group_size or default_size), "rank": rank}}


def read_scheduled(custom_params: Optional[Mapping]) -> Tuple[Optional[ESampRequest], Optional[dict]]:
    """Scheduler side: (the request's ESamp parameters or None, its group stamp or None)."""
    if not isinstance(custom_params, Mapping) or ESAMP_KEY not in custom_params:
        return None, None
    return ESampRequest.parse(custom_params[ESAMP_KEY]), custom_params.get(GROUP_KEY)
