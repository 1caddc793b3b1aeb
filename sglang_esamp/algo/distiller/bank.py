"""A bank of S distillers stored as ``[S, ...]`` tensors, with per-slot optimizer state and slot lifecycle.

Decisions recorded here (DESIGN §1 gives the loss, the optimizer and the lifecycle):
  * Training gathers the active slots' parameters into fresh leaf tensors ``[A, ...]`` (A = active slots this
    step), runs forward/backward/clip/update on those and writes them back with ``index_copy_``: gradients and
    optimizer math exist only for active slots, so an idle slot is bit-identical before and after a step. The
    forward, loss and backward of all A slots are one batched pass over the rows laid out ``[A, P, H]`` (P = the
    largest slot's row count; padding masked out): a loop over slots cost ~550 kernel launches and a host sync per
    slot per step, host-bound at ~19 ms/step on an H200 (8 slots x 8 rows) while the GPU worked ~3 ms. A step reads
    the host three times: the slots and row counts, the per-slot stats, the grad norms.
  * Adam is torch.optim.Adam's arithmetic (bias corrections from a per-slot step count), without weight decay;
    with fp32 parameters it runs torch's fused Adam kernel over per-(parameter, slot) views (one pass, ~8x faster
    on CPU than the explicit ops, which remain for other dtypes and as the tested reference). SGD is
    ``p -= lr * g`` (no momentum). Moments are fp32 whatever the parameter dtype.
  * Per-slot clipping follows ``clip_grad_norm_``: scale by ``min(1, clip / (norm + 1e-6))``.
  * A row whose src or tgt holds a NaN/inf is dropped from the update (``TrainResult.dropped_rows``); its slot trains
    on its remaining rows, and a slot left with none is simply not updated this step (no reset).
  * A slot whose loss or grad norm (computed from finite rows) is non-finite is reset: re-initialised the way it was
    first initialised (random with a fresh seed, or the warm start), zeroed optimizer state, not updated this step,
    listed in ``reset_slots``.
  * Divergence guard (``DivergenceGuard``; 0 disables a check): each slot keeps a baseline of its own loss, a
    bias-corrected EMA (decay ``BASELINE_DECAY``) of the losses of the steps it was updated on since it was last
    (re)initialised, compared as at least ``ENERGY_FLOOR`` x the same EMA of its target energy (mean
    ||h_tgt||^2), so a slot that fitted a repetition is not reset by the token that ends it. Once it has
    ``min_steps`` of them, a step whose loss exceeds ``factor`` x baseline, or whose mean prediction norm exceeds
    ``norm_factor`` x the mean target norm of its rows, resets the slot the same way (listed in ``diverged_slots``,
    not in ``reset_slots``); that step enters no baseline (they start afresh with the re-initialised slot). A finite
    divergence otherwise keeps steering with a distiller whose predictions are far off (losses 30-6000x normal
    were measured at a too-high lr). ``ESampConfig`` gives the measurements behind the defaults. Cost: three row
    reductions per slot on the device; the baselines are device tensors (``divergence_guard.py``, shared with the
    sync-free step) and the verdict comes back with the per-slot stats in one ``tolist()``.
  * Random init of the k-th slot initialisation draws from a CPU generator seeded ``seed + k``, so a bank run is
    reproducible and slots do not share draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from esamp_kernels import ops
from esamp_kernels.grouped_forward_torch import distiller_forward_slots_torch

from .distiller import DistillerShape, check_state_matches, init_params_
from ..update.divergence_guard import SEEN, WEIGHT, DivergenceGuard, observed
from ..update.slot_optimizer import AdamCoefficients, OptimizerSpec, clip_coefficients, slot_update
from ..update.slot_rows import SlotRows

@dataclass
class TrainResult:
    """What one training step did, per active slot (lists aligned with ``slots``)."""
    slots: List[int] = field(default_factory=list)
    rows: List[int] = field(default_factory=list)               # finite rows the loss was computed on
    dropped_rows: List[int] = field(default_factory=list)       # rows dropped for a non-finite src or tgt
    losses: List[float] = field(default_factory=list)          # per-slot loss (NaN/inf where it was non-finite,
                                                               # NaN where no finite row was left)
    novelty_sums: List[float] = field(default_factory=list)    # sum over the slot's rows of ||h_tgt - h_hat||
    grad_norms: List[float] = field(default_factory=list)      # before clipping (0 where no backward ran)
    updated: List[bool] = field(default_factory=list)
    reset_slots: List[int] = field(default_factory=list)        # re-initialised because of non-finite values
    diverged_slots: List[int] = field(default_factory=list)     # re-initialised by the divergence guard


@dataclass(frozen=True)
class BankMemory:
    """Bytes of a bank: ``resident`` (parameters, fp32 Adam moments, step counters) is held for the life of the
    server; a training step adds fp32 leaf copies and gradients of the slots it trains, at most ``peak_extra``."""
    slots: int
    per_slot: int
    peak_extra_per_slot: int

    @property
    def resident(self) -> int:
        return self.per_slot * self.slots

    @property
    def peak(self) -> int:
        return (self.per_slot + self.peak_extra_per_slot) * self.slots

    def describe(self, dtype, optimizer: str) -> str:
        return (f"{self.slots} slots x {self.per_slot / 2**20:.2f} MiB (params {dtype} + {optimizer} state) = "
                f"{self.resident / 2**20:.1f} MiB resident, {self.peak / 2**20:.1f} MiB peak while training")


def bank_memory(shape: DistillerShape, slots: int, dtype: torch.dtype, optimizer: str) -> BankMemory:
    """The one place bank memory is computed (the startup check and the startup print use it)."""
    n = shape.num_params()
    elem = torch.empty((), dtype=dtype).element_size()
    per_slot = n * elem + (2 * n * 4 if optimizer == "adam" else 0) + 8 + 16   # + the step count and the device baselines
    return BankMemory(slots=slots, per_slot=per_slot, peak_extra_per_slot=2 * n * 4)


class DistillerBank:
    def __init__(self, shape: DistillerShape, slots: int, optimizer: OptimizerSpec = OptimizerSpec(),
                 dtype: torch.dtype = torch.float32, device=None, seed: int = 0,
                 warm_start: Optional[Dict[str, torch.Tensor]] = None, fused_adam: bool = True,
                 guard: DivergenceGuard = DivergenceGuard()):
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"a bank needs a number of slots >= 1, got {slots!r} (bank_slots 'auto' is resolved by "
                             "the server at startup; elsewhere use ESampConfig.with_bank_slots(n))")
        self.shape = shape
        self.num_slots = slots
        self.opt = optimizer
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.seed = seed
        self.warm_start = None
        if warm_start is not None:
            check_state_matches(warm_start, shape)
            self.warm_start = {k: v.detach().float().cpu() for k, v in warm_start.items()}
        self.params: Dict[str, torch.Tensor] = {
            name: torch.zeros((slots, *s), dtype=dtype, device=self.device) for name, s in shape.param_shapes().items()}
        self.exp_avg: Dict[str, torch.Tensor] = {}
        self.exp_avg_sq: Dict[str, torch.Tensor] = {}
        if optimizer.kind == "adam":
            for name, t in self.params.items():
                self.exp_avg[name] = torch.zeros(t.shape, dtype=torch.float32, device=self.device)
                self.exp_avg_sq[name] = torch.zeros(t.shape, dtype=torch.float32, device=self.device)
        self.steps = torch.zeros(slots, dtype=torch.int64, device=self.device)
        self.active = [False] * slots
        self.slot_warm = [False] * slots   # initialised from the warm start (a reset re-initialises the same way)
        self.slot_seed: list = [None] * slots   # the random init's seed, when a seeded request chose it
        self._inits = 0           # number of slot initialisations so far (seeds the next random init)
        self.guard = guard
        # the divergence guard's per-slot baselines since (re)init (divergence_guard.py: loss and energy EMA sums,
        # EMA weight, updates), device tensors both update paths read and write
        self.device_baseline = torch.zeros(slots, 4, dtype=torch.float32, device=self.device)
        # torch's fused Adam kernel needs fp32 params (same dtype as the fp32 moments); else the explicit path
        self.fused_adam = fused_adam and dtype == torch.float32 and hasattr(torch, "_fused_adam_")

    # -- lifecycle ------------------------------------------------------------------------------------------
    def acquire(self, warm: bool = True, init_seed: Optional[int] = None) -> Optional[int]:
        """The lowest free slot, initialised (from the warm start when the bank has one and ``warm``, else random:
        from ``init_seed`` when given -- a seeded request's group -- else from the bank's running seed) and marked
        active; None when the bank is full (never raises)."""
        for s in range(self.num_slots):
            if not self.active[s]:
                self.active[s] = True
                self.init_slot(s, warm=warm, init_seed=init_seed)
                self.slot_warm[s] = warm and self.warm_start is not None
                self.slot_seed[s] = init_seed
                return s
        return None

    def release(self, slot: int):
        self._check_slot(slot)
        self.active[slot] = False

    def init_slot(self, slot: int, state: Optional[Dict[str, torch.Tensor]] = None, warm: bool = True,
                  init_seed: Optional[int] = None):
        """(Re)initialise one slot: from ``state`` (export_state layout), the bank's warm start (``warm``), or
        random (from ``init_seed``, else the bank's seed plus a running count)."""
        self._check_slot(slot)
        if state is None and warm:
            state = self.warm_start
        with torch.no_grad():
            if state is not None:
                check_state_matches(state, self.shape)
                for name, t in self.params.items():
                    t[slot].copy_(state[name])
            else:
                seed = self.seed + self._inits if init_seed is None else init_seed
                gen = torch.Generator(device="cpu").manual_seed(seed & 0xFFFFFFFFFFFFFFFF)
                init_params_({name: t[slot] for name, t in self.params.items()}, self.shape, gen)
            for d in (self.exp_avg, self.exp_avg_sq):
                for t in d.values():
                    t[slot].zero_()
            self.steps[slot] = 0
        self.device_baseline[slot].zero_()
        self._inits += 1

    def reset_slot(self, slot: int):
        """Re-initialise after non-finite values or a divergence, the way the slot was first initialised (counted
        by the caller from ``TrainResult.reset_slots`` / ``diverged_slots``)."""
        self.init_slot(slot, warm=self.slot_warm[slot], init_seed=self.slot_seed[slot])

    def loss_baseline(self, slot: int) -> Optional[float]:
        """The slot's loss baseline (None before its first update since (re)initialisation; reads the device)."""
        b = self.device_baseline[slot].tolist()
        return b[0] / b[WEIGHT] if b[WEIGHT] > 0 else None

    def energy_baseline(self, slot: int) -> Optional[float]:
        """The slot's baseline of the target energy mean ||h_tgt||^2 (None like ``loss_baseline``)."""
        b = self.device_baseline[slot].tolist()
        return b[1] / b[WEIGHT] if b[WEIGHT] > 0 else None

    def baseline_steps(self, slot: int) -> int:
        """Updates the slot's baselines have seen since (re)initialisation."""
        return int(self.device_baseline[slot, SEEN])

    @property
    def occupancy(self) -> int:
        return sum(self.active)

    def slot_state(self, slot: int) -> Dict[str, torch.Tensor]:
        """A copy of one slot's parameters in the ``Distiller.export_state()`` layout."""
        return {name: t[slot].detach().float().cpu().clone() for name, t in self.params.items()}

    # -- memory ---------------------------------------------------------------------------------------------
    def memory(self) -> "BankMemory":
        return bank_memory(self.shape, self.num_slots, self.dtype, self.opt.kind)

    def describe_memory(self) -> str:
        return self.memory().describe(self.dtype, self.opt.kind)

    # -- compute --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor, slot_ids: torch.Tensor, sync_free: bool = False) -> torch.Tensor:
        """h_hat [R, H] for rows ``x`` [R, H] with a slot per row, one batched no-grad forward (``sync_free``: no
        tensor value read back to the host on any device)."""
        return ops.grouped_distiller_forward(x, slot_ids.to(torch.int64), self.params, self.shape.blocks,
                                             self.shape.out_ln, sync_free=sync_free)

    def train_step(self, src: torch.Tensor, tgt: torch.Tensor, slot_ids: torch.Tensor) -> TrainResult:
        """One update of every slot that has rows: loss = sum over slots of mean over rows of ||tgt - f(src)||^2,
        over the rows whose src and tgt are finite (see the module docstring for drops, resets and the guard)."""
        res = TrainResult()
        slot_ids = slot_ids.to(torch.int64)
        if slot_ids.numel() == 0:
            return res
        row_finite = torch.isfinite(src).all(dim=1) & torch.isfinite(tgt).all(dim=1)
        # 1. the distinct slots, their row counts and non-finite row counts, in one host read
        uniq_t, inverse, counts_t = torch.unique(slot_ids, return_inverse=True, return_counts=True)
        bad = torch.zeros_like(uniq_t).index_add_(0, inverse, (~row_finite).to(torch.int64))
        head = torch.cat([uniq_t, bad, counts_t]).tolist()
        n = len(head) // 3
        uniq, dropped, counts = head[:n], head[n:2 * n], head[2 * n:]
        for s in uniq:
            self._check_slot(s)
            if not self.active[s]:
                raise ValueError(f"slot {s} is not allocated")
        kept = [c - d for c, d in zip(counts, dropped)]
        res.slots, res.rows, res.dropped_rows = list(uniq), kept, dropped

        # 2. forward and loss of every slot in one batched pass over leaf copies of its parameters (local a <-> uniq[a])
        idx = uniq_t
        leaves = {name: t.index_select(0, idx).float().requires_grad_(True) for name, t in self.params.items()}
        base = self.device_baseline.index_select(0, idx)
        fate = ["skipped"] * n            # skipped (no finite row) | update | nonfinite | diverged
        res.losses = [float("nan")] * n
        res.novelty_sums = [float("nan")] * n
        if any(kept):                     # a slot whose every row was dropped learns nothing
            rows = SlotRows(inverse, row_finite, n, max(counts))
            y = rows(tgt)
            pred = distiller_forward_slots_torch(rows(src), leaves, self.shape.blocks, self.shape.out_ln)
            sq = (y - pred).pow(2).sum(dim=2) * rows.mask
            loss = sq.sum(dim=1) / rows.rows_f
            energy = rows.mean(y.square().sum(dim=2))
            st = [loss.detach(), sq.detach().sqrt().sum(dim=1)]
            if self.guard.enabled:
                pn = rows.mean(torch.linalg.vector_norm(pred.detach(), dim=2))
                tn = rows.mean(torch.linalg.vector_norm(y, dim=2))
                st.append(self.guard.diverges(base, loss.detach(), pn, tn).float())
            stats = torch.stack(st, dim=1).tolist()                  # the one read of the stats
            # 3. fates
            for a in range(n):
                if not kept[a]:
                    continue
                res.losses[a], res.novelty_sums[a] = stats[a][0], stats[a][1]
                if not math.isfinite(stats[a][0]):
                    fate[a] = "nonfinite"
                elif self.guard.enabled and stats[a][2]:
                    fate[a] = "diverged"
                else:
                    fate[a] = "update"

        # 4. backward of the slots to update; only they carry a gradient (a skipped slot's backward can hold 0 * inf):
        # when every slot is updated (the usual step) the grads are used as they are, no extra pass over them
        trained = [a for a in range(n) if fate[a] == "update"]
        if trained:
            picked = torch.zeros(n, dtype=torch.bool)
            picked[trained] = True
            picked = picked.to(self.device)
            torch.where(picked, loss, 0.0).sum().backward()
        grads = {k: (torch.zeros_like(p) if not trained or p.grad is None else p.grad if len(trained) == n
                     else torch.where(picked.view((-1,) + (1,) * (p.dim() - 1)), p.grad, 0.0))
                 for k, p in leaves.items()}
        norms = torch.zeros(n, dtype=torch.float32, device=self.device)
        for g in grads.values():
            norms += torch.linalg.vector_norm(g.reshape(n, -1), dim=1).square()
        norms = norms.sqrt()
        res.grad_norms = norms.tolist()
        for a in range(n):
            if fate[a] == "update" and not math.isfinite(res.grad_norms[a]):
                fate[a] = "nonfinite"
        res.updated = [f == "update" for f in fate]

        # 5. clip + optimizer, baselines, resets
        upd = [a for a in range(n) if fate[a] == "update"]
        if upd:
            self._apply_update(idx, uniq, leaves, grads, norms, upd)
            updated = torch.tensor(res.updated, device=self.device)
            self.device_baseline.index_copy_(0, idx, observed(base, updated, loss.detach(), energy))
        for a, s in enumerate(uniq):
            if fate[a] == "nonfinite":
                self.reset_slot(s)
                res.reset_slots.append(s)
            elif fate[a] == "diverged":
                self.reset_slot(s)
                res.diverged_slots.append(s)
        return res

    @torch.no_grad()
    def _apply_update(self, idx, idx_list: List[int], leaves, grads, norms, upd: List[int]):
        every = len(upd) == idx.numel()
        a_idx = torch.tensor(upd, dtype=torch.int64, device=self.device)
        slots = idx if every else idx.index_select(0, a_idx)
        slot_list = [idx_list[a] for a in upd]
        # slots s0..s0+k-1 (the usual case after allocations in order): read and write the bank through views
        run = slot_list == list(range(slot_list[0], slot_list[0] + len(slot_list)))

        def state(t):
            return t.narrow(0, slot_list[0], len(slot_list)) if run else t.index_select(0, slots)

        def store(t, value):
            if run:
                t.narrow(0, slot_list[0], len(slot_list)).copy_(value)
            else:
                t.index_copy_(0, slots, value)

        coef = clip_coefficients(self.opt, norms if every else norms.index_select(0, a_idx))
        self.steps.index_add_(0, slots, torch.ones_like(slots))
        if self.opt.kind == "adam" and self.fused_adam:
            self._fused_adam(slot_list, slots, {n: (grads[n] if every else grads[n].index_select(0, a_idx))
                                                for n in leaves}, coef)
            return
        adam = AdamCoefficients(self.opt, self.steps.index_select(0, slots)) if self.opt.kind == "adam" else None
        for name, leaf in leaves.items():
            p = leaf.detach() if every else leaf.detach().index_select(0, a_idx)
            g = grads[name] if every else grads[name].index_select(0, a_idx)
            moments = (state(self.exp_avg[name]), state(self.exp_avg_sq[name])) if adam else None
            out = slot_update(self.opt, p, g, coef, moments, adam)
            store(self.params[name], out[0].to(self.dtype))
            if adam:
                store(self.exp_avg[name], out[1])
                store(self.exp_avg_sq[name], out[2])

    def _fused_adam(self, slot_list: List[int], slots, grads, coef):
        """torch's fused Adam kernel (the one behind ``Adam(fused=True)``), one pass over the bank in place;
        every (parameter, slot) is its own tensor so each slot keeps its own step count."""
        step_f = self.steps.index_select(0, slots).to(torch.float32)
        ps, gs, ms, vs, st = [], [], [], [], []
        for name, g in grads.items():
            g = g * coef.view((-1,) + (1,) * (g.dim() - 1))
            for j, s in enumerate(slot_list):
                ps.append(self.params[name][s])
                gs.append(g[j])
                ms.append(self.exp_avg[name][s])
                vs.append(self.exp_avg_sq[name][s])
                st.append(step_f[j])
        b1, b2 = self.opt.betas
        torch._fused_adam_(ps, gs, ms, vs, [], st, amsgrad=False, lr=self.opt.lr, beta1=b1, beta2=b2,
                           weight_decay=0.0, eps=self.opt.eps, maximize=False)

    def _check_slot(self, slot: int):
        if not 0 <= slot < self.num_slots:
            raise IndexError(f"slot {slot} out of range [0, {self.num_slots})")
