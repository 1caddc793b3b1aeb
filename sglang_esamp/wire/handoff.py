"""The server's ``ESampConfig`` travels from the launching process to SGLang's children (tokenizer manager,
schedulers, DP controller) in one environment variable: spawned children inherit it, nothing else is needed."""
from __future__ import annotations

import dataclasses
import json
import os

from ..algo.config import ESampConfig
from .identity import ensure_secret

ENV_CONFIG = "SGLANG_ESAMP_CONFIG"
_cache = (None, None)   # (raw env value, parsed config): the tokenizer hook reads it for every request


def export_config(config: ESampConfig) -> None:
    """Also creates the per-server secret that session ids and client tags are signed with (``identity``)."""
    os.environ[ENV_CONFIG] = json.dumps(dataclasses.asdict(config))
    ensure_secret()


def config_from_env() -> ESampConfig:
    global _cache
    raw = os.environ.get(ENV_CONFIG)
    if _cache[0] != raw or _cache[1] is None:
        _cache = (raw, ESampConfig(**json.loads(raw)) if raw else ESampConfig())
    return _cache[1]


def config_given() -> bool:
    """True when a launcher exported a config (then a model ESamp cannot serve is an error, not a warning)."""
    return ENV_CONFIG in os.environ
