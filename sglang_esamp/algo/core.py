"""``ESampCore``: the one object the SGLang runtime adapter holds; per decode step it does
``predict`` -> ``sample`` -> ``train``.

Contract with the caller (the runtime):
  * Only decode rows are passed in. Prefill rows are never trained on or reweighted, so the first generated
    token of a request is sampled without ESamp (its logits come from the prefill forward).
  * Rows are addressed by slot id; rows whose group has no slot (ESamp off, bank full) carry slot -1 and beta 0:
    ``predict`` returns zeros for them, ``sample`` leaves them unmodified, ``train`` ignores them.
  * ``train`` is called once per decode step with that step's rows, after ``sample``.

Staleness (DESIGN §1): the prediction at step t uses the weights after the update of step t-1. The update is
handed to an update runner (``algo.update_runner``: serial, or a worker thread / CUDA side stream with
``config.update_mode = "async"``); every reader or writer of the bank (``predict``, ``acquire``, ``release``)
first calls ``join()``, the single point where a pending update must have finished.
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
from .update_runner import make_update_runner
from .warm_start import load_warm_start


class ESampCore:
    def __init__(self, config: ESampConfig, hidden_size: int, lm_head_weight: torch.Tensor,
                 lm_head_bias: Optional[torch.Tensor] = None, device=None, *, warm_start_state=None,
                 model_fingerprint=None, clock: Callable[[], float] = time.monotonic, vocab_shard=None):
        """``warm_start_state``: an already-loaded warm start (export_state layout) that overrides
        ``config.warm_start``; otherwise that file is loaded and checked against the distiller shape, the taps and
        -- when ``model_fingerprint`` (the served model's HF dir or ``model_fingerprint`` dict) is given -- the
        model. The server should pass it (or load with ``warm_start.load_for_server`` itself). ``vocab_shard``
        (``algo.vocab_shard``): the LM head holds only part of the vocabulary (tensor parallel)."""
        self.config = config
        self.device = torch.device(device) if device is not None else lm_head_weight.device
        self.shape = config.distiller_shape(hidden_size)
        if lm_head_weight.shape[1] != hidden_size:
            raise ValueError(f"lm_head_weight is {tuple(lm_head_weight.shape)}, expected [V, {hidden_size}]")
        self.lm_head_weight = lm_head_weight
        self.lm_head_bias = lm_head_bias
        self.vocab_shard = vocab_shard
        if warm_start_state is None and config.warm_start is not None:
            warm_start_state = load_warm_start(config.warm_start, self.shape,
                                               model_dir_or_fingerprint=model_fingerprint, taps=config.taps)
        opt = OptimizerSpec(kind=config.optimizer, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                            grad_clip=config.grad_clip)
        self.bank = DistillerBank(self.shape, config.bank_slots, opt, dtype=config.torch_param_dtype,
                                  device=self.device, seed=config.seed, warm_start=warm_start_state,
                                  guard=config.divergence_guard())
        self.counters = ESampCounters(config.bank_slots)
        self.slots = SlotLifecycle(self.bank, self.counters, config.session_ttl_s, config.session_max, clock)
        self.runner = make_update_runner(config.update_mode, self.device)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def acquire(self, group_key: Hashable, session: Optional[str] = None, warm: bool = True,
                init_seed: Optional[int] = None) -> Optional[int]:
        """Slot for a group (its first member joined); None = bank full, sample this group without ESamp.
        ``warm``: initialise from the warm start (when there is one), else random (from ``init_seed`` if given)."""
        self.join()
        return self.slots.acquire(group_key, session, warm, init_seed)

    def release(self, group_key: Hashable) -> None:
        """The group's last member left (finished or aborted)."""
        self.join()
        self.slots.release(group_key)

    def reset_slots(self, slots) -> None:
        """Re-initialise slots after a failed step (the way each was first initialised), counted as
        ``error_resets``; a pending update is waited for (its error, if any, is the one being handled)."""
        try:
            self.join()
        except Exception:
            pass
        for s in slots:
            if self.bank.active[s]:
                self.bank.reset_slot(s)
                self.counters.add("error_resets")

    def slot_of(self, group_key: Hashable) -> Optional[int]:
        return self.slots.slot_of(group_key)

    def group_stats(self, group_key: Hashable) -> Optional[dict]:
        """Per-group stats for ``meta_info.esamp`` (call before ``release``); None if the group had no slot.
        Joins a pending update first, so a finishing request reports all of its steps."""
        self.join()
        slot = self.slots.slot_of(group_key)
        return None if slot is None else self.counters.slot_stats(slot)

    # -- per step -------------------------------------------------------------------------------------------
    def join(self) -> None:
        """The one synchronisation point with a pending update (see module docstring)."""
        self.runner.join()

    def predict(self, h_src: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """h_hat [R, H] for decode rows (no grad, weights after the previous update); zeros where slot < 0."""
        t0 = time.perf_counter()
        self.join()
        t1 = time.perf_counter()
        out = self._predict(h_src, slot_ids)
        self.counters.add("time_join_wait_s", t1 - t0)
        self.counters.add("time_predict_s", time.perf_counter() - t1)
        return out

    def _predict(self, h_src: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
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
               novelty: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None, seeded=None, record: bool = True) -> SampleOutput:
        """The ESamp rule (``algo.sampling``) with this server's cap, greedy mode and temperature form (timed).
        ``novelty`` [R] (1/0): 0 rows get the sharpening control (no distiller term). ``record=False`` leaves
        the sample counters to ``train(..., sample=out)``, which reads them off the caller's path. ``seeded``
        (``seeded_noise.SeededRows``): rows that draw counter-based noise from their request's seed."""
        phase_s = {}
        out = esamp_sample(logits, temperatures, top_ks, top_ps, min_ps, betas, h_hat, self.lm_head_weight,
                           self.lm_head_bias, candidate_cap=self.config.candidate_cap,
                           greedy_mode=self.config.greedy, temperature_form=self.config.temperature_form,
                           novelty=novelty, noise=noise, generator=generator, seeded=seeded,
                           vocab_shard=self.vocab_shard, phase_s=phase_s)
        if record:
            self.counters.record_sample(out)
        for name, dt in phase_s.items():
            self.counters.add(f"time_{name}_s", dt)
        return out

    def train(self, h_src: torch.Tensor, h_tgt: torch.Tensor, slot_ids: torch.Tensor, *,
              sample: Optional[SampleOutput] = None, after: Optional[Callable[[], None]] = None) -> None:
        """Submit this step's update (one per decode step); rows with slot < 0 are ignored.

        With ``train_rows="first_per_group"`` only the first row of each slot is used. The caller hands over the
        tensors (they must not change until the next ``join``); row selection and every host read happen inside
        the update, off the caller's path. ``sample`` (a ``sample(..., record=False)`` output) is counted there
        too, and ``after`` runs there last. The result is ``last_train_result``.
        """
        first_only = self.config.train_rows == "first_per_group"

        def update():
            if sample is not None:
                self.counters.record_sample(sample)
            if after is not None:
                after()
            sid = slot_ids.to(device=h_src.device, dtype=torch.int64)
            keep = sid >= 0
            if first_only:
                keep &= first_row_per_slot(sid)
            rows = keep.nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                return None
            t0 = time.perf_counter()
            result = self.bank.train_step(h_src.index_select(0, rows), h_tgt.index_select(0, rows),
                                          sid.index_select(0, rows))
            self.counters.record_train(result)
            self.counters.add("time_update_s", time.perf_counter() - t0)
            return result
        t0 = time.perf_counter()
        self.runner.submit(update)
        self.counters.add("time_submit_s", time.perf_counter() - t0)

    @property
    def last_train_result(self) -> Optional[TrainResult]:
        self.join()
        return self.runner.last_result

    # -- served weights -------------------------------------------------------------------------------------
    def set_lm_head(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
        """Use this LM head from the next step on (after a weight update)."""
        if weight.shape[1] != self.shape.hidden:
            raise ValueError(f"lm_head_weight is {tuple(weight.shape)}, expected [V, {self.shape.hidden}]")
        self.join()
        self.lm_head_weight = weight
        self.lm_head_bias = bias

    def drop_warm_start(self) -> bool:
        """Slots acquired from now on start from random init; True if there was a warm start to drop."""
        self.join()
        had = self.bank.warm_start is not None
        self.bank.warm_start = None
        return had

    # -- reporting ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """The counters after any pending update (the scheduler's periodic snapshot reads ``counters`` directly,
        without waiting)."""
        self.join()
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
