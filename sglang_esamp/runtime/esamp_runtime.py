"""``ESampRuntime``: ESamp attached to one SGLang ModelRunner (the served model, never a draft model): the state
every step function receives (core, group table, members, taps, counters, faults, metrics).

Built after ``ModelRunner.load_model``: checks the architecture, installs the taps, builds the ``ESampCore`` with
the model's own LM-head weight and the ``GroupTable`` over it, and prints the configuration with the bank's memory.
``--esamp-bank-slots auto`` is resolved to a number first (``bank_budget``; printed with the bound that decided).
A bank that does not fit the memory left on its device is refused at startup with the numbers.
``current_runtime()`` is read only by the hook shims (``shims.py``); everything below them gets the runtime passed.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import torch

from ..algo.distiller.bank import bank_memory
from ..algo.config import ESampConfig
from .digest import tensor_digest
from ..algo.core import ESampCore
from ..algo.faults import FaultInjector
from ..algo.group_table import GroupTable
from ..algo.reference.tap_spec import tap_spec
from ..algo.rule.vocab_shard import VocabShard
from ..wire.modes import UnsupportedModeError, check_server_mode
from . import cpu_gemm
from .bank_budget import cgroup_free_bytes, resolve_bank_slots
from .members import Members
from .step_clock import StepClock
from .metrics import PrometheusSink
from .tap_buffers import DEFAULT_ROWS, TapBuffers
from .taps import TapSet, UnsupportedModelError

logger = logging.getLogger("sglang_esamp")
_RUNTIME: Optional["ESampRuntime"] = None


def current_runtime() -> Optional["ESampRuntime"]:
    return _RUNTIME


# what the runtime counts beside the core's counters (the step fixture of the tests declares the same list)
RUNTIME_COUNTERS = ("tap_misses", "mixed_batches_skipped", "decode_steps", "esamp_steps", "step_errors",
                    "prefill_rows_sampled", "weight_updates", "warm_starts_dropped", "stock_draws_skipped",
                    "steps_timed")


def declare_runtime_counters(counters) -> None:
    for name in RUNTIME_COUNTERS:
        counters.declare(name)
    counters.declare("time_step_s", initial=0.0)


def lm_head_of(model):
    head = getattr(model, "lm_head", None)
    weight = getattr(head, "weight", None)
    if weight is None:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__}.lm_head has no weight")
    bias = getattr(head, "bias", None)
    return weight, (bias if isinstance(bias, torch.Tensor) else None)


def _vocab_shard(model) -> Optional[VocabShard]:
    """The LM head's vocabulary slice under tensor parallelism (SGLang's vocab-parallel head), else None."""
    head = model.lm_head
    if int(getattr(head, "tp_size", 1) or 1) <= 1:
        return None
    idx = head.shard_indices
    return VocabShard(start=int(idx.org_vocab_start_index), end=int(idx.org_vocab_end_index),
                      all_reduce=head.tp_group.all_reduce, tp_size=int(head.tp_size))


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    free, limited = psutil.virtual_memory().available, cgroup_free_bytes()
    return free if limited is None else min(free, limited)


def _max_decode_rows(model_runner) -> int:
    """Rows the tap buffers hold from the start: the largest batch a graph could be captured for (they grow
    for larger eager batches)."""
    args = getattr(model_runner, "server_args", None)
    decode = (getattr(args, "cuda_graph_config", None) or {}).get("decode") or {}
    graph_bs = getattr(args, "cuda_graph_max_bs_decode", None) or decode.get("max_bs") or 0
    return max(DEFAULT_ROWS, int(graph_bs))


def _dp_rank(server_args) -> int:
    """This scheduler's data-parallel rank (0 without --dp-size)."""
    if int(getattr(server_args, "dp_size", 1) or 1) <= 1:
        return 0
    from sglang.srt.runtime_context import get_parallel

    return int(getattr(get_parallel(), "dp_rank", 0) or 0)


class ESampRuntime:
    def __init__(self, model_runner, config: ESampConfig):
        check_server_mode(getattr(model_runner, "server_args", None))
        model = model_runner.model
        hidden = int(model.config.hidden_size)
        weight, bias = lm_head_of(model)
        device = weight.device
        have = _available_bytes(device)
        # bank_slots "auto" becomes a number here (runtime.bank_budget); every reader below sees the int
        config, self.bank_sizing = resolve_bank_slots(config, model_runner, hidden, device, have)
        need = bank_memory(config.distiller_shape(hidden), config.bank_slots, config.torch_param_dtype,
                           config.optimizer).peak
        if need > config.memory_headroom * have:
            raise RuntimeError(f"ESamp bank of {config.bank_slots} slots needs {need / 2**20:.0f} MiB but only "
                               f"{have / 2**20:.0f} MiB are available on {device} (--esamp-memory-headroom "
                               f"{config.memory_headroom:g}); lower --esamp-bank-slots")
        self.config = config
        self.model_runner = model_runner
        shard = _vocab_shard(model)
        self.core = ESampCore(config, hidden, weight, bias, device=device, vocab_shard=shard,
                              **self._warm_start_kwargs(model_runner))
        # a sync-free core reads no tap back to the host: its stale rows are masked, not a whole-step miss
        self.tap_buffers = TapBuffers(hidden, weight.dtype, device, rows=_max_decode_rows(model_runner),
                                      masked=self.core.sync_free)
        self.taps = TapSet(model, tap_spec(config.taps), self.tap_buffers)
        self.counters = self.core.counters     # the one registry: the runtime declares its own counters on it
        declare_runtime_counters(self.counters)
        self.clock = StepClock()
        self.dp_rank = _dp_rank(getattr(model_runner, "server_args", None))
        self.table = GroupTable(self.core, self.counters, linger_s=config.group_linger_s,
                                session_ttl_s=config.session_ttl_s, session_max=config.session_max)
        self.members = Members(self.core, self.table, config, dp_rank=self.dp_rank)
        self.faults = FaultInjector(config.debug_faults, seed=config.seed, counters=self.counters)
        if self.faults.probs.get("skip_taps"):
            self.taps.drop_write = lambda role: role == "source" and self.faults.fires("skip_taps")
        self.metrics = PrometheusSink()
        self._lm_head_digest: Optional[str] = None   # computed on the first stats read after a (re)load
        print(self.core.describe(), file=sys.stderr, flush=True)
        print(f"[esamp] bank slots = {self.bank_sizing.describe()}", file=sys.stderr, flush=True)
        if shard is not None:
            print(f"[esamp]   tensor parallel   = {shard.tp_size} ranks; this rank's LM head holds token ids "
                  f"[{shard.start}, {shard.end}); each rank keeps its own replica of the bank above",
                  file=sys.stderr, flush=True)

    def _warm_start_kwargs(self, model_runner) -> dict:
        self.warm_start_model = None   # the fingerprint of the weights the loaded warm start was made for
        if self.config.warm_start is None:
            return {}
        from ..algo.distiller import warm_start
        from ..models import model_fingerprint
        from ..warm_starts import SHIPPED, shipped_path

        model_dir = model_runner.model_config.model_path
        path = self.config.warm_start
        if path == SHIPPED:
            path = shipped_path(model_fingerprint(model_dir)["model_id"], self.config.distiller, self.config.taps)
        shape = self.config.distiller_shape(int(model_runner.model.config.hidden_size))
        state = warm_start.load_for_server(path, model_dir=model_dir, shape=shape, taps=tap_spec(self.config.taps))
        self.warm_start_model = warm_start.read_warm_start_metadata(path)["model"]
        print(f"[esamp] warm start: {path}", file=sys.stderr, flush=True)
        return {"warm_start_state": state}

    def forget_lm_head_digest(self) -> None:
        """The head was read again (``weights.refresh_lm_head``): hash it anew when next asked."""
        self._lm_head_digest = None

    @property
    def lm_head_digest(self) -> str:
        """Identity of the head ESamp reads; hashing it copies the whole head to the host, so it is done when
        asked (stats) and kept until the next weight update, never at startup or on a forward step."""
        if self._lm_head_digest is None:
            self._lm_head_digest = tensor_digest(self.core.head.weight)
        return self._lm_head_digest

    def snapshot(self) -> dict:
        """What /esamp/stats shows per rank: the counters and how each combines across ranks (wire.stats)."""
        config = dict(self.config.to_dict(), bank_slots_rule=self.bank_sizing.describe(),
                      bank_sizing=self.bank_sizing.to_dict())
        return {"pid": os.getpid(), "dp_rank": self.dp_rank, "config": config,
                "lm_head_digest": self.lm_head_digest, "lm_head_dtype": str(self.core.head.weight.dtype),
                "warm_start_active": self.core.bank.warm_start is not None,
                "cpu_fp32_gemm": dict(cpu_gemm.calls) if cpu_gemm.enabled() else None,
                "counters": self.counters.snapshot(),
                "combine": self.counters.combine()}


def attach(model_runner, config: ESampConfig, strict: bool) -> Optional[ESampRuntime]:
    """Create the process's runtime for this model runner. An unsupported model or mode fails at startup when ESamp
    was asked for (strict: our launcher or Engine exported a config); under stock SGLang with the plugin merely
    installed it serves without ESamp and logs why."""
    global _RUNTIME
    if getattr(model_runner, "is_draft_worker", False):
        return None
    try:
        _RUNTIME = ESampRuntime(model_runner, config)
    except (UnsupportedModelError, UnsupportedModeError) as e:
        if strict:
            raise
        logger.warning("%s -- serving without ESamp", e)
        _RUNTIME = None
    return _RUNTIME
