"""``ESampCore``: the distiller bank with its sampling rule and update runner; per decode step the runtime calls
``sample(RuleInputs)`` (predict, then the rule) -> ``train(Update)``. Which group holds which slot is not known here (``group_table.GroupTable``
owns that): the core hands out slot indices (``acquire_slot`` / ``release_slot``) and reports per slot.

Contract with the caller (the runtime):
  * Only decode rows are passed in. Prefill rows are never trained on or reweighted, so the first generated
    token of a request is sampled without ESamp (its logits come from the prefill forward).
  * Rows are addressed by slot id; rows whose group has no slot (ESamp off, bank full) carry slot -1 and beta 0:
    the prediction is zeros for them, ``sample`` leaves them unmodified, ``train`` ignores them.
  * ``train`` is called once per decode step with that step's rows, after ``sample``.

Staleness (DESIGN §1): the prediction at step t uses the weights after the update of step t-1. The update is
handed to an update runner (``update.runner``: serial, or a worker thread / CUDA side stream with
``config.update_mode = "async"``); every reader or writer of the bank (``predict``, ``acquire_slot``,
``release_slot``, ``slot_stats``) first calls ``wait_for_update()``, the single point where a pending update must
have finished. An update returns what it measured, or the error it raised (``update.job.UpdateDone``); the caller
collects it with ``take_updates()`` on its own thread, so nothing the caller owns is written by the update's thread.
"""
from __future__ import annotations

from functools import partial
from typing import List, Optional, Tuple

import torch

from .config import ESampConfig
from .counters import ESampCounters
from .distiller.bank import DistillerBank, TrainResult
from .distiller.warm_start import load_warm_start
from .rule.filters import width_bucket
from .rule.inputs import LMHead, RuleInputs, RuleOptions
from .rule.sampling import SampleOutput, esamp_sample
from .rule.step_graphs import StepGraphs
from .update.job import Update, UpdateDone, first_row_per_slot
from .update.runner import make_update_runner
from .update.slot_optimizer import OptimizerSpec
from .update.update_graphs import UpdateGraphs


class ESampCore:
    def __init__(self, config: ESampConfig, hidden_size: int, lm_head_weight: torch.Tensor,
                 lm_head_bias: Optional[torch.Tensor] = None, device=None, *, warm_start_state=None,
                 model_fingerprint=None, vocab_shard=None):
        """``warm_start_state``: an already-loaded warm start (export_state layout) that overrides
        ``config.warm_start``; otherwise that file is loaded and checked against the distiller shape, the taps and
        -- when ``model_fingerprint`` (the served model's HF dir or ``model_fingerprint`` dict) is given -- the
        model. The server should pass it (or load with ``warm_start.load_for_server`` itself). ``vocab_shard``
        (``algo.rule.vocab_shard``): the LM head holds only part of the vocabulary (tensor parallel)."""
        self.config = config
        self.device = torch.device(device) if device is not None else lm_head_weight.device
        self.shape = config.distiller_shape(hidden_size)
        if lm_head_weight.shape[1] != hidden_size:
            raise ValueError(f"lm_head_weight is {tuple(lm_head_weight.shape)}, expected [V, {hidden_size}]")
        self.head = LMHead(lm_head_weight, lm_head_bias, vocab_shard)
        self.options = RuleOptions(config.candidate_cap, config.greedy, config.temperature_form)
        if warm_start_state is None and config.warm_start is not None:
            warm_start_state = load_warm_start(config.warm_start, self.shape,
                                               model_dir_or_fingerprint=model_fingerprint, taps=config.taps)
        opt = OptimizerSpec(kind=config.optimizer, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                            grad_clip=config.grad_clip)
        self.bank = DistillerBank(self.shape, config.bank_slots, opt, dtype=config.torch_param_dtype,
                                  device=self.device, seed=config.seed, warm_start=warm_start_state,
                                  guard=config.divergence_guard())
        self.counters = ESampCounters(config.bank_slots)
        self.runner = make_update_runner(config.update_mode, self.device)
        # no host read on the step (``config.sync_free``): on CUDA each read is a device sync and no graph can
        # capture one; on CPU reads are free and the adaptive candidate widths measured faster
        self.sync_free = config.sync_free == "on" or (config.sync_free == "auto" and self.device.type == "cuda")
        # a sync-free step's rule replays per shape bucket (CUDA graphs; on CPU the same buffers, eagerly)
        self.graphs = StepGraphs(self._rule, self.device, self.counters) if self.sync_free else None
        # and its update too, when the caller gives the rows' slots on the host (``train(host_slots=...)``)
        self.update_graphs = UpdateGraphs(self.bank, self.counters) if self.sync_free else None

    # -- slots (GroupTable is the caller: it knows which group holds which) ----------------------------------
    def acquire_slot(self, warm: bool = True, init_seed: Optional[int] = None) -> Optional[int]:
        """A free slot, initialised; None = bank full. ``warm``: from the warm start (when there is one), else
        random (from ``init_seed`` if given)."""
        self.settle_updates()
        return self.bank.acquire(warm, init_seed)

    def release_slot(self, slot: int) -> None:
        self.settle_updates()
        self.bank.release(slot)

    @property
    def occupancy(self) -> int:
        return self.bank.occupancy

    def reset_slots(self, slots) -> None:
        """Re-initialise slots after a failed step (the way each was first initialised), counted as
        ``error_resets``; a pending update is waited for (its error, if any, is the one being handled)."""
        try:
            self.settle_updates()
        except Exception:
            pass
        for s in slots:
            if self.bank.active[s]:
                self.bank.reset_slot(s)
                self.counters.add("error_resets")

    def slot_stats(self, slot: int, settled: bool = True) -> dict:
        """Per-slot stats for ``meta_info.esamp`` (call before the slot is released). ``settled``: after a pending
        update, so a finishing request reports all of its steps; False: as they stand (a running request's progress
        report, which must not wait for the update beside the next forward)."""
        if settled:
            self.settle_updates()
        return self.counters.slot_stats(slot)

    # -- per step -------------------------------------------------------------------------------------------
    def wait_for_update(self) -> None:
        """The one synchronisation point with a pending update (see module docstring), timed as ``update_wait``
        wherever it happens. A failed update does not raise here: its ``UpdateDone`` carries the error."""
        with self.counters.timed("update_wait"):
            self.runner.wait()

    def settle_updates(self) -> None:
        """``wait_for_update``, then the graphed updates' stats folded in (their deferred resets applied): where
        slots change hands or counters are read (on CUDA this waits for the device)."""
        self.wait_for_update()
        if self.update_graphs is not None:
            for result in self.update_graphs.flush():
                self.counters.record_train(result)

    def take_updates(self) -> List["UpdateDone"]:
        """The updates that finished since the last call, oldest first (after ``wait_for_update``)."""
        return self.runner.take_results()

    def predict(self, h_src: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """h_hat [R, H] alone (no grad, weights after the previous update); zeros where slot < 0. The step does not
        call it: ``sample`` predicts as part of the rule."""
        self.wait_for_update()
        with self.counters.timed("predict"):
            return self._predict(h_src, slot_ids)

    def _predict(self, h_src: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        slot_ids = slot_ids.to(device=h_src.device, dtype=torch.int64)
        has = slot_ids >= 0
        if self.sync_free:   # every row predicted (slot -1 rows with slot 0's weights), then masked
            out = self.bank.predict(h_src, slot_ids.clamp(min=0), sync_free=True)
            return torch.where(has.unsqueeze(1), out, torch.zeros_like(out))
        if bool(has.all()):
            return self.bank.predict(h_src, slot_ids)
        out = torch.zeros_like(h_src)
        rows = has.nonzero(as_tuple=True)[0]
        if rows.numel():
            out[rows] = self.bank.predict(h_src.index_select(0, rows), slot_ids.index_select(0, rows))
        return out

    def candidate_width(self, top_ks) -> Optional[int]:
        """A sync-free step's candidate width (``filters.width_bucket``) from the rows' top-k as SGLang normalized
        them on the host (greedy = 1; ``greedy="apply"`` drops a greedy row's top-k; none = unbounded); None for a
        core that sizes the candidates from the logits (it may read the host)."""
        if not self.sync_free:
            return None
        cap, apply = self.config.candidate_cap, self.config.greedy == "apply"
        bound = [cap + 1 if k is None or k < 1 or (k == 1 and apply) else k for k in top_ks]
        return width_bucket(bound, cap, vocab=1 << 62)   # the filter clamps the width to the logits' vocabulary

    def sample(self, inputs: RuleInputs, *, generator: Optional[torch.Generator] = None,
               record: bool = False) -> Tuple[Optional[torch.Tensor], SampleOutput]:
        """predict -> candidates -> reweight -> draw on the step's rows, with the weights after the previous update
        (one step stale): (h_hat, the sample). A sync-free core replays the whole unit per shape bucket
        (``step_graphs``; timed as ``predict``); the other predicts, then samples eagerly, timing each phase.
        ``record``: count the sample now (the runtime leaves it to ``train(Update(sample=out))``, off its path)."""
        if self.sync_free and inputs.width is None:
            raise ValueError("a sync-free core samples with a candidate width (ESampCore.candidate_width)")
        self.wait_for_update()
        if self.graphs is not None:
            with self.counters.timed("predict"):
                h_hat, out = self.graphs.run(inputs)
        else:
            with self.counters.timed("predict"):
                h_hat = None if inputs.h_src is None else self._predict(inputs.h_src, inputs.slots)
            phase_s = {}
            out = esamp_sample(inputs, h_hat, self.head, self.options, generator=generator, phase_s=phase_s)
            for name, dt in phase_s.items():
                self.counters.add(f"time_{name}_s", dt)
        if record:
            self.counters.record_sample(out)
        return h_hat, out

    def _rule(self, inputs: RuleInputs) -> Tuple[torch.Tensor, SampleOutput]:
        """The unit ``StepGraphs`` replays."""
        h_hat = self._predict(inputs.h_src, inputs.slots)
        return h_hat, esamp_sample(inputs, h_hat, self.head, self.options)

    def train(self, update: Update) -> None:
        """Submit one decode step's update (``update.job.Update``; rows with slot < 0 are not trained). Its tensors
        must not change until it is done; what it trained, measured or raised comes back as an ``UpdateDone``
        through ``take_updates`` (kept when the update has a ``tag`` or a ``measure``). Row selection and every
        host read happen inside the update, off the caller's path. A sync-free core given ``host_slots`` trains
        through ``UpdateGraphs`` (no host read; a CUDA graph per shape bucket): its ``TrainResult`` is counted when
        its stats reach the host (this update on CPU, a later one or ``settle_updates`` on CUDA)."""
        self.wait_for_update()          # at most one update in flight; timed as a wait, not as the submit
        with self.counters.timed("submit"):
            self.runner.submit(partial(self._run_update, update),
                               keep=update.tag is not None or update.measure is not None)

    def _run_update(self, u: Update) -> UpdateDone:
        """The update's body (the runner's thread or stream): never raises -- an error comes back in the value."""
        try:
            measured = u.measure() if u.measure is not None else None
            if u.sample is not None:
                self.counters.record_sample(u.sample)
            with self.counters.timed("update"):
                graphed = self.update_graphs is not None and u.host_slots is not None
                train = self._train_graphed(u) if graphed else self._train_eager(u)
            return UpdateDone(u.tag, train, measured)
        except Exception as e:
            return UpdateDone(u.tag, error=e)

    def _host_slots(self, u: Update) -> List[int]:
        host = list(u.host_slots) if u.host_slots is not None else u.slots.tolist()
        return first_row_per_slot(host) if self.config.train_rows == "first_per_group" else host

    def _train_eager(self, u: Update) -> Optional[TrainResult]:
        """``DistillerBank.train_step`` on the rows that have a slot (it reads the host)."""
        host = self._host_slots(u)
        rows = [j for j, s in enumerate(host) if s >= 0]
        if not rows:
            return None
        dev = u.h_src.device
        idx = torch.tensor(rows, dtype=torch.int64, device=dev)
        result = self.bank.train_step(u.h_src.index_select(0, idx), u.h_tgt.index_select(0, idx),
                                      torch.tensor([host[j] for j in rows], dtype=torch.int64, device=dev))
        self.counters.record_train(result)
        return result

    def _train_graphed(self, u: Update) -> Optional[TrainResult]:
        """``UpdateGraphs`` (no host read); the newest step whose stats have landed."""
        host, slots = self._host_slots(u), u.slots
        if self.config.train_rows == "first_per_group":   # the rows it dropped are masked on the device too
            keep = torch.tensor([s >= 0 for s in host]).to(slots.device, non_blocking=True)
            slots = torch.where(keep, slots, -1)
        graphs = self.update_graphs
        results = graphs.fold_ready()          # earlier steps whose stats have landed
        graphs.run(u.h_src, u.h_tgt, slots, host)
        results += graphs.fold_ready()         # on CPU: this step's too
        for result in results:
            self.counters.record_train(result)
        return results[-1] if results else None

    @property
    def last_train_result(self) -> Optional[TrainResult]:
        self.wait_for_update()
        done = self.runner.last_result
        if done is not None and done.error is not None:
            raise done.error
        return None if done is None else done.train

    # -- served weights -------------------------------------------------------------------------------------
    def set_lm_head(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
        """Use this LM head from the next step on (after a weight update)."""
        if weight.shape[1] != self.shape.hidden:
            raise ValueError(f"lm_head_weight is {tuple(weight.shape)}, expected [V, {self.shape.hidden}]")
        self.wait_for_update()
        moved = weight is not self.head.weight or bias is not self.head.bias
        self.head = LMHead(weight, bias, self.head.shard)
        if moved and self.graphs is not None:
            self.graphs.reset()   # a captured rule reads the head it was captured with

    def drop_warm_start(self) -> bool:
        """Slots acquired from now on start from random init; True if there was a warm start to drop."""
        self.wait_for_update()
        had = self.bank.warm_start is not None
        self.bank.warm_start = None
        return had

    # -- reporting ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """The counters after any pending update (the scheduler's periodic snapshot reads ``counters`` directly,
        without waiting)."""
        self.settle_updates()
        return self.counters.snapshot()

    def describe(self) -> str:
        return self.config.describe(self.shape.hidden, self.bank.describe_memory())
