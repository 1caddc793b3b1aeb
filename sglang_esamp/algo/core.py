"""``ESampCore``: the one object the SGLang runtime adapter holds; per decode step it does
``predict`` -> ``sample`` -> ``train``.

Contract with the caller (the runtime):
  * Only decode rows are passed in. Prefill rows are never trained on or reweighted, so the first generated
    token of a request is sampled without ESamp (its logits come from the prefill forward).
  * Rows are addressed by slot id; rows whose group has no slot (ESamp off, bank full) carry slot -1 and beta 0:
    ``predict`` returns zeros for them, ``sample`` leaves them unmodified, ``train`` ignores them.
  * ``train`` is called once per decode step with that step's rows, after ``sample``.

Staleness (DESIGN §1): the prediction at step t uses the weights after the update of step t-1. The update is
handed to an ``UpdateRunner``; every reader or writer of the bank (``predict``, ``acquire``, ``release``) first
calls ``join()``, the single point where a pending update must have finished. Today the runner is synchronous
(the update runs inside ``train``); a worker thread or a CUDA side stream with an event can replace it without
touching the callers, and ``join`` is then the wait.
"""
from __future__ import annotations

import time
from typing import Callable, Hashable, Optional

import torch

from .bank import DistillerBank, OptimizerSpec, TrainResult
from .config import ESampConfig
from .counters import ESampCounters
from .sampling import SampleOutput, esamp_sample
from .slots import SlotLifecycle
from .warm_start import load_warm_start


class SyncUpdateRunner:
    """Runs an update when submitted; ``join`` has nothing to wait for."""

    def __init__(self):
        self.last_result = None

    def submit(self, fn: Callable[[], TrainResult]) -> None:
        self.last_result = fn()

    def join(self) -> None:
        return None


class ESampCore:
    def __init__(self, config: ESampConfig, hidden_size: int, lm_head_weight: torch.Tensor,
                 lm_head_bias: Optional[torch.Tensor] = None, device=None, *, warm_start_state=None,
                 model_fingerprint=None, clock: Callable[[], float] = time.monotonic):
        """``warm_start_state``: an already-loaded warm start (export_state layout) that overrides
        ``config.warm_start``; otherwise that file is loaded and checked against the distiller shape, the taps and
        -- when ``model_fingerprint`` (the served model's HF dir or ``model_fingerprint`` dict) is given -- the
        model. The server should pass it (or load with ``warm_start.load_for_server`` itself)."""
        self.config = config
        self.device = torch.device(device) if device is not None else lm_head_weight.device
        self.shape = config.distiller_shape(hidden_size)
        if lm_head_weight.shape[1] != hidden_size:
            raise ValueError(f"lm_head_weight is {tuple(lm_head_weight.shape)}, expected [V, {hidden_size}]")
        self.lm_head_weight = lm_head_weight
        self.lm_head_bias = lm_head_bias
        if warm_start_state is None and config.warm_start is not None:
            warm_start_state = load_warm_start(config.warm_start, self.shape,
                                               model_dir_or_fingerprint=model_fingerprint, taps=config.taps)
        opt = OptimizerSpec(kind=config.optimizer, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                            grad_clip=config.grad_clip)
        self.bank = DistillerBank(self.shape, config.bank_slots, opt, dtype=config.torch_param_dtype,
                                  device=self.device, seed=config.seed, warm_start=warm_start_state)
        self.counters = ESampCounters(config.bank_slots)
        self.slots = SlotLifecycle(self.bank, self.counters, config.session_ttl_s, config.session_max, clock)
        self.runner = SyncUpdateRunner()

    # -- lifecycle ------------------------------------------------------------------------------------------
    def acquire(self, group_key: Hashable, session: Optional[str] = None) -> Optional[int]:
        """Slot for a group (first member admitted); None = bank full, sample this group without ESamp."""
        self.join()
        return self.slots.acquire(group_key, session)

    def release(self, group_key: Hashable) -> None:
        """The group's last member finished or was aborted."""
        self.join()
        self.slots.release(group_key)

    def slot_of(self, group_key: Hashable) -> Optional[int]:
        return self.slots.slot_of(group_key)

    def group_stats(self, group_key: Hashable) -> Optional[dict]:
        """Per-group stats for ``meta_info.esamp`` (call before ``release``); None if the group had no slot."""
        slot = self.slots.slot_of(group_key)
        return None if slot is None else self.counters.slot_stats(slot)

    # -- per step -------------------------------------------------------------------------------------------
    def join(self) -> None:
        """The one synchronisation point with a pending update (see module docstring)."""
        self.runner.join()

    def predict(self, h_src: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """h_hat [R, H] for decode rows (no grad, weights after the previous update); zeros where slot < 0."""
        self.join()
        slot_ids = slot_ids.to(device=h_src.device, dtype=torch.int64)
        has = slot_ids >= 0
        if bool(has.all()):
            return self.bank.predict(h_src, slot_ids)
        out = torch.zeros_like(h_src)
        rows = has.nonzero(as_tuple=True)[0]
        if rows.numel():
            out[rows] = self.bank.predict(h_src.index_select(0, rows), slot_ids.index_select(0, rows))
        return out

    def sample(self, logits: torch.Tensor, temperatures: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor,
               min_ps: torch.Tensor, betas: torch.Tensor, h_hat: Optional[torch.Tensor], *,
               noise: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> SampleOutput:
        """The ESamp rule (``algo.sampling``) with this server's cap, greedy mode and temperature form."""
        out = esamp_sample(logits, temperatures, top_ks, top_ps, min_ps, betas, h_hat, self.lm_head_weight,
                           self.lm_head_bias, candidate_cap=self.config.candidate_cap,
                           greedy_mode=self.config.greedy, temperature_form=self.config.temperature_form,
                           noise=noise, generator=generator)
        self.counters.record_sample(out)
        return out

    def train(self, h_src: torch.Tensor, h_tgt: torch.Tensor, slot_ids: torch.Tensor) -> None:
        """Submit this step's update (one per decode step); rows with slot < 0 are ignored.

        With ``train_rows="first_per_group"`` only the first row of each slot is used. The result is available
        as ``last_train_result`` after ``join()``.
        """
        slot_ids = slot_ids.to(device=h_src.device, dtype=torch.int64)
        keep = slot_ids >= 0
        if self.config.train_rows == "first_per_group":
            keep &= first_row_per_slot(slot_ids)
        rows = keep.nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return
        src, tgt, sid = h_src.index_select(0, rows), h_tgt.index_select(0, rows), slot_ids.index_select(0, rows)

        def update():
            result = self.bank.train_step(src, tgt, sid)
            self.counters.record_train(result)
            return result
        self.runner.submit(update)

    @property
    def last_train_result(self) -> Optional[TrainResult]:
        return self.runner.last_result

    # -- reporting ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        return self.counters.snapshot()

    def describe(self) -> str:
        return self.config.describe(self.shape.hidden, self.bank.describe_memory())


def first_row_per_slot(slot_ids: torch.Tensor) -> torch.Tensor:
    """Mask of the first row of each distinct slot id."""
    r = slot_ids.numel()
    if r == 0:
        return torch.zeros(0, dtype=torch.bool, device=slot_ids.device)
    order = torch.arange(r, device=slot_ids.device)
    first = torch.full((int(slot_ids.max().item()) + 2,), r, dtype=torch.int64, device=slot_ids.device)
    first.scatter_reduce_(0, slot_ids + 1, order, reduce="amin")
    return first.index_select(0, slot_ids + 1) == order
