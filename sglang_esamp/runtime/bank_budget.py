"""Resolve ``--esamp-bank-slots auto`` on a loaded SGLang ModelRunner: read the numbers the rule needs
(``algo.distiller.bank_sizing``) where ESamp builds its bank -- right after ``ModelRunner.load_model``, before SGLang sizes its
KV pool and resolves ``max_running_requests`` -- and apply it.

What SGLang has decided at that point (every read is listed in ``hooks.ATTRIBUTES``):
  * ``ModelRunner.pre_model_load_memory`` (GiB free before the weights loaded) and ``mem_fraction_static``: SGLang
    keeps ``(1 - mem_fraction_static) x pre_model_load_memory`` outside its static pool, and gives the KV pool the
    rest of what is free, capped by ``--max-total-tokens`` x the bytes of one token's K and V (estimated from the
    model config: layers x KV heads per rank x (head_dim + v_head_dim) x the KV dtype's size);
  * ``--max-running-requests`` if given (SGLang later lowers it to at most half the pool's tokens); when unset
    SGLang resolves at least ``min(2048, max_total_tokens // 2)``, and that lower bound is the cap used here.
Tensor-parallel ranks take the smallest of their results (their banks must match).
On CUDA SGLang sizes the KV pool after the bank exists, from the memory then free, so the bank's bytes come out of
the KV cache (at most ``memory_headroom`` x SGLang's runtime reserve), never out of that reserve. On CPU the ranks of
one server (``--dp-size`` x ``--tp-size``) share the host's memory: their KV pools all come off it, and the budget
is split among them.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import torch

from ..algo.distiller.bank import bank_memory
from ..algo.distiller.bank_sizing import (AUTO, HARD_CAP, HARD_CAP_CPU, BankSizing, auto_bank_slots, explicit_bank_slots,
                                memory_left_after_sglang, with_inputs)
from ..algo.config import ESampConfig

TP_MIN = "the smallest of the tensor-parallel ranks"
SGLANG_MIN_RUNNING_REQUESTS = 2048   # kv_cache_configurator.resolve_max_num_reqs: max(min(estimate, 4096), 2048)
SGLANG_DEFAULT_MEM_FRACTION = 0.95   # memory_hook: SGLang's own fallback when it cannot read the device's memory


def cgroup_free_bytes() -> Optional[int]:
    """Memory this container may still take (cgroup v2 ``memory.max - memory.current``; SGLang's CPU figure is
    capped the same way), or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return None if limit == "max" else max(0, int(limit) - int(used))
    except (OSError, ValueError):
        return None


def _int_arg(args, name: str) -> Optional[int]:
    v = getattr(args, name, None)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def _kv_elem_size(kv_cache_dtype, model_dtype) -> float:
    text = str(kv_cache_dtype or "auto").lower()
    if "fp8" in text:
        return 1.0
    if "fp4" in text:
        return 0.5
    if text in ("bf16", "bfloat16", "fp16", "float16", "half"):
        return 2.0
    if text in ("fp32", "float32", "float"):
        return 4.0
    return float(torch.empty((), dtype=model_dtype).element_size()) if isinstance(model_dtype, torch.dtype) else 2.0


def kv_bytes_per_token(model_runner) -> Optional[int]:
    """Bytes of one token's K and V over all layers of this rank (a standard attention layout: the model families
    ESamp taps); None when the model config does not say."""
    try:
        mc = model_runner.model_config
        args = model_runner.server_args
        tp = int(getattr(args, "tp_size", 1) or 1)
        layers = int(getattr(mc, "num_attention_layers", None) or mc.num_hidden_layers)
        heads = int(mc.get_num_kv_heads(tp))
        head_dim = int(mc.head_dim)
        v_head_dim = int(getattr(mc, "v_head_dim", None) or head_dim)
        elem = _kv_elem_size(getattr(args, "kv_cache_dtype", "auto"), getattr(mc, "dtype", None))
    except (AttributeError, TypeError, ValueError):
        return None
    return int(layers * heads * (head_dim + v_head_dim) * elem) or None


def running_requests_cap(server_args) -> int:
    """The most requests this rank will run at once, as far as it is known before SGLang resolves it."""
    mrr = _int_arg(server_args, "max_running_requests")
    tokens = _int_arg(server_args, "max_total_tokens")
    if mrr is not None:
        if getattr(server_args, "enable_dp_attention", False):
            mrr = max(1, mrr // int(getattr(server_args, "dp_size", 1) or 1))
        cap = mrr
    else:
        cap = SGLANG_MIN_RUNNING_REQUESTS
    if tokens is not None:
        cap = min(cap, tokens // 2)
    return max(1, cap)


def ranks_sharing_memory(server_args, device: torch.device) -> int:
    if device.type != "cpu":
        return 1   # a rank per accelerator
    return max(1, int(getattr(server_args, "dp_size", 1) or 1) * int(getattr(server_args, "tp_size", 1) or 1))


def resolve_bank_slots(config: ESampConfig, model_runner, hidden: int, device: torch.device,
                       free_bytes: int) -> Tuple[ESampConfig, BankSizing]:
    """(the config with ``bank_slots`` an int, how it was decided). ``free_bytes``: the memory free on ``device``
    now (the startup check's figure)."""
    per_slot = bank_memory(config.distiller_shape(hidden), 1, config.torch_param_dtype, config.optimizer).peak
    if config.bank_slots != AUTO:
        return config, explicit_bank_slots(config.bank_slots, per_slot)
    args = getattr(model_runner, "server_args", None)
    pre_gib = getattr(model_runner, "pre_model_load_memory", None)
    pre = float(pre_gib) * 2**30 if isinstance(pre_gib, (int, float)) else float(free_bytes)
    mfs = getattr(model_runner, "mem_fraction_static", None) or getattr(args, "mem_fraction_static", None)
    mfs = float(mfs) if isinstance(mfs, (int, float)) else SGLANG_DEFAULT_MEM_FRACTION
    tokens = _int_arg(args, "max_total_tokens")
    cell = kv_bytes_per_token(model_runner) if tokens is not None else None
    ranks = ranks_sharing_memory(args, device)
    inputs = dict(free_bytes=int(free_bytes), pre_load_bytes=int(pre), mem_fraction_static=mfs,
                  kv_cap_bytes=tokens * cell * ranks if cell else None)   # every rank sharing the memory has a pool
    sizing = auto_bank_slots(per_slot_bytes=per_slot, left_bytes=memory_left_after_sglang(**inputs),
                             headroom=config.memory_headroom, running_cap=running_requests_cap(args),
                             hard_cap=HARD_CAP_CPU if device.type == "cpu" else HARD_CAP, ranks=ranks)
    sizing = with_inputs(sizing, **inputs)
    agreed = min_across_tp_ranks(sizing.slots, args)
    if agreed != sizing.slots:
        sizing = replace(sizing, slots=agreed, decided_by=TP_MIN)
    return config.with_bank_slots(sizing.slots), sizing


def min_across_tp_ranks(slots: int, server_args, group=None) -> int:
    """Under ``--tp-size`` every rank keeps a replica of the bank and acquires slots in the same order, so all must
    have the same number of slots (a bank full on one rank only would split the ranks' sampling): the smallest of
    the ranks' results (their free memory is measured at slightly different moments)."""
    if group is None:
        if int(getattr(server_args, "tp_size", 1) or 1) <= 1:
            return slots
        from sglang.srt.runtime_context import get_parallel

        group = get_parallel().tp_group.cpu_group
    t = torch.tensor([int(slots)], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN, group=group)
    return int(t.item())
