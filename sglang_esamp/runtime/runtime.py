"""``ESampRuntime``: ESamp attached to one SGLang ModelRunner (the served model, never a draft model).

Built after ``ModelRunner.load_model``: checks the architecture, installs the taps, builds the ``ESampCore`` with
the model's own LM-head weight, and prints the configuration with the bank's memory. A bank that does not fit the
memory left on its device is refused at startup with the numbers.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import torch

from ..algo.config import ESampConfig
from ..algo.core import ESampCore
from ..algo.taps import tap_spec
from .groups import GroupRegistry
from .metrics import PrometheusSink
from .taps import TapSet, UnsupportedModelError

logger = logging.getLogger("sglang_esamp")
_RUNTIME: Optional["ESampRuntime"] = None
MEMORY_HEADROOM = 0.5  # the bank may take at most this share of the memory available at startup


def current_runtime() -> Optional["ESampRuntime"]:
    return _RUNTIME


def _lm_head(model):
    head = getattr(model, "lm_head", None)
    weight = getattr(head, "weight", None)
    if weight is None:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__}.lm_head has no weight")
    bias = getattr(head, "bias", None)
    return weight, (bias if isinstance(bias, torch.Tensor) else None)


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def _bank_bytes(config: ESampConfig, hidden: int) -> int:
    """Parameters + gradients in the bank dtype, plus fp32 Adam moments."""
    n = config.distiller_shape(hidden).num_params() * config.bank_slots
    elem = torch.finfo(config.torch_param_dtype).bits // 8
    return n * (2 * elem + (8 if config.optimizer == "adam" else 0))


class ESampRuntime:
    def __init__(self, model_runner, config: ESampConfig):
        model = model_runner.model
        hidden = int(model.config.hidden_size)
        weight, bias = _lm_head(model)
        device = weight.device
        need = _bank_bytes(config, hidden)
        have = _available_bytes(device)
        if need > MEMORY_HEADROOM * have:
            raise RuntimeError(f"ESamp bank of {config.bank_slots} slots needs {need / 2**20:.0f} MiB but only "
                               f"{have / 2**20:.0f} MiB are available on {device} (limit {MEMORY_HEADROOM:.0%}); "
                               f"lower --esamp-bank-slots")
        self.config = config
        self.model_runner = model_runner
        self.taps = TapSet(model, tap_spec(config.taps))
        self.core = ESampCore(config, hidden, weight, bias, device=device, **self._warm_start_kwargs(model_runner))
        self.groups = GroupRegistry(self.core, config)
        self.tap_misses = 0
        self.mixed_batches_skipped = 0
        self.decode_steps = 0
        self.esamp_steps = 0
        self.metrics = PrometheusSink()
        print(self.core.describe(), file=sys.stderr, flush=True)

    def _warm_start_kwargs(self, model_runner) -> dict:
        if self.config.warm_start is None:
            return {}
        from ..algo import warm_start
        from ..models import model_fingerprint
        from ..warm_starts import SHIPPED, shipped_path

        model_dir = model_runner.model_config.model_path
        path = self.config.warm_start
        if path == SHIPPED:
            path = shipped_path(model_fingerprint(model_dir)["model_id"], self.config.distiller, self.config.taps)
        shape = self.config.distiller_shape(int(model_runner.model.config.hidden_size))
        state = warm_start.load_for_server(path, model_dir=model_dir, shape=shape, taps=tap_spec(self.config.taps))
        print(f"[esamp] warm start: {path}", file=sys.stderr, flush=True)
        return {"warm_start_state": state}

    def snapshot(self) -> dict:
        counters = dict(self.core.stats())
        counters.update(self.groups.snapshot())
        counters.update(tap_misses=self.tap_misses, mixed_batches_skipped=self.mixed_batches_skipped,
                        decode_steps=self.decode_steps, esamp_steps=self.esamp_steps)
        return {"pid": os.getpid(), "config": self.config.to_dict(), "counters": counters}


def attach(model_runner, config: ESampConfig, strict: bool) -> Optional[ESampRuntime]:
    """Create the process's runtime for this model runner; unsupported models fail (strict) or serve without ESamp."""
    global _RUNTIME
    if getattr(model_runner, "is_draft_worker", False):
        return None
    try:
        _RUNTIME = ESampRuntime(model_runner, config)
    except UnsupportedModelError as e:
        if strict:
            raise
        logger.warning("%s -- serving without ESamp", e)
        _RUNTIME = None
    return _RUNTIME
