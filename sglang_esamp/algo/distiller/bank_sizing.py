"""How many distiller slots the bank gets when ``bank_slots`` is ``"auto"`` (the default): a pure rule, no SGLang
and no device, so it is unit-tested on its own. ``runtime/bank_budget.py`` reads the numbers from SGLang at
startup and calls it.

The rule (docs/scale.md, "Sizing the bank")::

    per_slot = bank_memory(shape, 1, dtype, optimizer).peak      parameters + Adam moments + step counter, plus
                                                                the fp32 leaf copies and gradients of a training step
    left     = memory_left_after_sglang(...)                      what SGLang's own reservation leaves on the device
    budget   = memory_headroom x left / ranks                     ranks: bank replicas sharing that memory
    slots    = min(floor(budget / per_slot), running_cap, hard_cap), at least 1

``running_cap`` is the most requests SGLang runs at once on this rank: a group (the n samples of a request, or an
explicit group) holds one slot however many members it has, so a rank never has more groups decoding than running
requests. ``hard_cap`` keeps a huge device from allocating gigabytes of slots nobody uses: ``HARD_CAP`` on an
accelerator, ``HARD_CAP_CPU`` on the host (a CPU server decodes a few dozen rows at a time). The smallest bound
decides (ties: the first of memory, max_running_requests, hard cap); an explicit ``bank_slots`` number skips the
rule (and is still checked against the memory free at startup, ``runtime.esamp_runtime``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

AUTO = "auto"
HARD_CAP = 1024        # slots on an accelerator
HARD_CAP_CPU = 64      # slots on the host

MEMORY = "memory"
RUNNING = "max_running_requests"
HARD = "hard_cap"
EXPLICIT = "explicit"


def memory_left_after_sglang(free_bytes: int, pre_load_bytes: float, mem_fraction_static: float,
                             kv_cap_bytes: Optional[int] = None) -> int:
    """Bytes SGLang leaves on the device once its KV pool is sized, measured where ESamp builds its bank (right
    after the model loaded, before SGLang sizes the pool).

    SGLang keeps ``(1 - mem_fraction_static) x pre_load`` outside its static pool (activations, graph buffers;
    ``pre_load``: the memory free before the model loaded) and gives the KV pool everything free above that, unless
    ``--max-total-tokens`` caps the pool (``kv_cap_bytes``: that many tokens x the bytes of one token's K and V,
    our CPU default). So ``left`` is that reserve when the pool is uncapped (a GPU server) and the free memory
    minus the capped pool otherwise (a CPU server: host RAM minus the pool)."""
    free = max(0, int(free_bytes))
    reserve = max(0.0, (1.0 - float(mem_fraction_static)) * float(pre_load_bytes))
    kv = max(0, free - int(reserve))
    if kv_cap_bytes is not None:
        kv = min(kv, max(0, int(kv_cap_bytes)))
    return free - kv


@dataclass(frozen=True)
class BankSizing:
    """The resolved slot count and why (printed at startup, reported in /esamp/stats ``config.bank_sizing``)."""
    slots: int
    decided_by: str                       # memory | max_running_requests | hard_cap | explicit
    per_slot_bytes: int
    requested: object = AUTO              # "auto" or the explicit number
    headroom: Optional[float] = None      # the share of ``left`` the bank may take (--esamp-memory-headroom)
    left_bytes: Optional[int] = None      # memory_left_after_sglang(...)
    ranks: int = 1                        # bank replicas sharing ``left`` (CPU ranks share the host's memory)
    budget_bytes: Optional[int] = None    # headroom x left / ranks
    by_memory: Optional[int] = None       # floor(budget / per_slot)
    running_cap: Optional[int] = None
    hard_cap: Optional[int] = None
    inputs: Optional[dict] = None         # what ``left`` was computed from (memory_left_after_sglang's arguments)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: the number, the per-slot memory, and the bound that decided."""
        mib = self.per_slot_bytes / 2**20
        if self.decided_by == EXPLICIT:
            return (f"{self.slots} (explicit --esamp-bank-slots) x {mib:.2f} MiB per slot "
                    f"= {self.slots * self.per_slot_bytes / 2**20:.0f} MiB peak")
        shared = f" / {self.ranks} ranks" if self.ranks > 1 else ""
        return (f"{self.slots} (auto, decided by {self.decided_by}): memory budget {self.budget_bytes / 2**20:.0f} MiB "
                f"= {self.headroom:g} x {self.left_bytes / 2**20:.0f} MiB left after SGLang's reservation{shared}, "
                f"/ {mib:.2f} MiB per slot (peak) = {self.by_memory} slots; max_running_requests {self.running_cap}; "
                f"hard cap {self.hard_cap}")


def auto_bank_slots(*, per_slot_bytes: int, left_bytes: int, headroom: float, running_cap: int, hard_cap: int,
                    ranks: int = 1) -> BankSizing:
    """The rule of the module docstring."""
    if per_slot_bytes <= 0:
        raise ValueError(f"per_slot_bytes must be positive, got {per_slot_bytes}")
    if running_cap < 1 or hard_cap < 1 or ranks < 1:
        raise ValueError(f"running_cap, hard_cap and ranks must be >= 1, got {running_cap}, {hard_cap}, {ranks}")
    if not 0.0 < headroom <= 1.0:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    budget = int(headroom * max(0, int(left_bytes)) / ranks)
    by_memory = budget // int(per_slot_bytes)
    bounds = ((MEMORY, by_memory), (RUNNING, int(running_cap)), (HARD, int(hard_cap)))
    decided_by, slots = min(bounds, key=lambda b: b[1])   # min keeps the first of equal bounds
    return BankSizing(slots=max(1, slots), decided_by=decided_by, per_slot_bytes=int(per_slot_bytes),
                      headroom=float(headroom), left_bytes=int(left_bytes), ranks=int(ranks), budget_bytes=budget,
                      by_memory=by_memory, running_cap=int(running_cap), hard_cap=int(hard_cap))


def with_inputs(sizing: BankSizing, **inputs) -> BankSizing:
    return replace(sizing, inputs=dict(inputs))


def explicit_bank_slots(slots: int, per_slot_bytes: int) -> BankSizing:
    return BankSizing(slots=int(slots), decided_by=EXPLICIT, per_slot_bytes=int(per_slot_bytes), requested=int(slots))
