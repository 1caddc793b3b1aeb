"""ESamp's counters: one registry in which every counter declares how it combines across ranks, plus per-slot
stats (what a request reports as ``meta_info.esamp``).

A run with zero updates is a bug, not a fast run: these counters prove work happened and are checked in tests.
``CounterRegistry`` holds named numbers under one lock; each is declared once with its combine mode
(``wire.stats``: ``sum`` for counts and occupancy, ``max`` for maxima, ``per_rank`` for means and last values), and
``snapshot()`` / ``combine()`` are what ``/esamp/stats`` and ``/metrics`` read -- nothing is guessed from a name.
``ESampCounters`` declares the algorithm's counters and records them; the runtime declares its own (tap misses,
decode steps, groups) on the same registry. Per-slot stats are reset when a slot is (re)assigned to a group, so
they describe that group (or session) only. Means are over all events since start.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Optional

COMBINE_MODES = ("sum", "max", "per_rank")
# wall seconds of a step's ESamp phases: plan (rows -> members -> slots, before the forward), taps (reading them
# back), update_wait (any wait for the update in flight, wherever it happens), predict, candidates / reweight / draw
# (the rule), submit (handing the update over) -- all on the scheduler thread -- and update (the update itself, on
# the worker thread in async mode). ``time_step_s`` / ``steps_timed`` (the runtime's) is the whole step they sit in.
PHASES = ("plan", "taps", "update_wait", "predict", "candidates", "reweight", "draw", "submit", "update")
SCHEDULER_PHASES = PHASES[:-1]   # the phases a step waits for (update runs beside it, unless serial)


class CounterRegistry:
    def __init__(self):
        self.lock = threading.RLock()
        self._values: Dict[str, float] = {}
        self._combine: Dict[str, str] = {}
        self._derived: Dict[str, Callable[[Dict[str, float]], Optional[float]]] = {}
        self._on_device: Dict[str, object] = {}   # name -> a device tensor summed since the last fold

    def declare(self, name: str, combine: str = "sum", initial=0) -> None:
        if combine not in COMBINE_MODES:
            raise ValueError(f"counter {name}: combine must be one of {COMBINE_MODES}, got {combine!r}")
        with self.lock:
            if name in self._combine:
                raise ValueError(f"counter {name} declared twice")
            self._values[name] = initial
            self._combine[name] = combine

    def derive(self, name: str, fn: Callable[[Dict[str, float]], Optional[float]], combine: str = "per_rank"):
        """A value computed from the others at snapshot time (e.g. a mean = sum / count)."""
        self.declare(name, combine, None)
        self._derived[name] = fn

    def add(self, name: str, n=1) -> None:
        with self.lock:
            self._values[name] += n

    @contextmanager
    def timed(self, phase: str):
        """Add the wall seconds of the ``with`` body to ``time_<phase>_s``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(f"time_{phase}_s", time.perf_counter() - t0)

    def add_device(self, name: str, n) -> None:
        """Add a device tensor (a count the step computed) without reading it: a sync-free step may not read a
        tensor back to the host. Folded into the value when it is read (``get`` / ``snapshot``: stats time)."""
        with self.lock:
            if name not in self._combine:
                raise KeyError(name)
            t = n.detach() if n.is_floating_point() else n.detach().long()
            pending = self._on_device.get(name)
            self._on_device[name] = t if pending is None else pending + t

    def _fold(self) -> None:
        for name, t in self._on_device.items():
            self._values[name] += t.item()
        self._on_device.clear()

    def set(self, name: str, value) -> None:
        with self.lock:
            self._values[name] = value

    def raise_to(self, name: str, value) -> None:
        with self.lock:
            self._values[name] = max(self._values[name], value)

    def get(self, name: str):
        with self.lock:
            self._fold()
            return self.snapshot()[name] if name in self._derived else self._values[name]

    def snapshot(self) -> Dict[str, Optional[float]]:
        with self.lock:
            self._fold()
            out = dict(self._values)
            for name, fn in self._derived.items():
                out[name] = fn(out)
            return out

    def combine(self) -> Dict[str, str]:
        with self.lock:
            return dict(self._combine)


def _ratio(num: str, den: str):
    return lambda v: v[num] / v[den] if v[den] else None


@dataclass
class SlotStats:
    steps: int = 0              # updates this slot took part in
    rows_trained: int = 0
    novelty_sum: float = 0.0
    last_loss: Optional[float] = None
    nan_resets: int = 0
    divergence_resets: int = 0
    rows_dropped_nonfinite: int = 0

    def to_dict(self) -> dict:
        mean = self.novelty_sum / self.rows_trained if self.rows_trained else None
        return {"steps": self.steps, "rows_trained": self.rows_trained, "mean_novelty": mean,
                "last_loss": self.last_loss, "nan_resets": self.nan_resets,
                "divergence_resets": self.divergence_resets, "rows_dropped_nonfinite": self.rows_dropped_nonfinite}


class ESampCounters(CounterRegistry):
    def __init__(self, bank_slots: int):
        super().__init__()
        for name in ("updates", "rows_trained", "finite_losses", "nonfinite_losses", "loss_sum", "novelty_sum",
                     "sampled_rows", "candidate_rows_reweighted", "candidate_sum", "candidate_cap_truncations",
                     "bank_occupancy", "bank_full_fallbacks", "nan_resets", "error_resets", "groups_acquired", "sessions_evicted",
                     "session_overflows", "rows_dropped_nonfinite", "divergence_resets"):
            self.declare(name)
        self.declare("bank_slots", initial=bank_slots)
        for phase in PHASES:   # wall seconds spent per phase of the ESamp step (see ESampCore)
            self.declare(f"time_{phase}_s", initial=0.0)
        self.declare("candidates_per_row_max", "max")
        self.declare("last_loss", "per_rank", None)
        self.derive("mean_loss", _ratio("loss_sum", "finite_losses"))
        self.derive("mean_novelty", _ratio("novelty_sum", "rows_trained"))
        self.derive("candidates_per_row_mean", _ratio("candidate_sum", "candidate_rows_reweighted"))
        self._slots: Dict[int, SlotStats] = {}

    # -- recorders (called by ESampCore and GroupTable) --------------------------------------------------
    def record_train(self, result):
        """Rows with a non-finite src/tgt were dropped (``rows_dropped_nonfinite``); a slot left with no row has no
        loss and is not counted further. A step the divergence guard rejected is counted in ``divergence_resets``
        only: its (finite, huge) loss stays out of ``loss_sum``/``finite_losses``/``last_loss``, so ``mean_loss``
        describes the steps that trained."""
        with self.lock:
            trained_any = False
            diverged = set(result.diverged_slots)
            for s, rows, dropped, loss, nov, upd in zip(result.slots, result.rows, result.dropped_rows, result.losses,
                                                         result.novelty_sums, result.updated):
                st = self._slots.setdefault(s, SlotStats())
                if dropped:
                    self.add("rows_dropped_nonfinite", dropped)
                    st.rows_dropped_nonfinite += dropped
                if rows == 0 or s in diverged:
                    continue
                if math.isfinite(loss):
                    self.add("finite_losses")
                    self.add("loss_sum", loss)
                    self.set("last_loss", loss)
                    st.last_loss = loss
                else:
                    self.add("nonfinite_losses")
                if upd:
                    trained_any = True
                    self.add("rows_trained", rows)
                    self.add("novelty_sum", nov)
                    st.steps += 1
                    st.rows_trained += rows
                    st.novelty_sum += nov
            for s in result.reset_slots:
                self.add("nan_resets")
                self._slots.setdefault(s, SlotStats()).nan_resets += 1
            for s in result.diverged_slots:
                self.add("divergence_resets")
                self._slots.setdefault(s, SlotStats()).divergence_resets += 1
            if trained_any:
                self.add("updates")

    def record_sample(self, out):
        """``out``: a ``sampling.SampleOutput``; candidate stats are over the reweighted rows."""
        n_rw = int(out.reweighted.sum())
        if n_rw:
            counts = out.counts[out.reweighted]
            c_sum, c_max = int(counts.sum()), int(counts.max())
        else:
            c_sum = c_max = 0
        with self.lock:
            self.add("sampled_rows", int(out.tokens.numel()))
            self.add("candidate_rows_reweighted", n_rw)
            self.add("candidate_sum", c_sum)
            self.raise_to("candidates_per_row_max", c_max)
            self.add("candidate_cap_truncations", int(out.truncated.sum()))

    def record_acquire(self, slot: Optional[int], occupancy: int, fresh: bool):
        with self.lock:
            if slot is None:
                self.add("bank_full_fallbacks")
            else:
                self.add("groups_acquired")
                if fresh:
                    self._slots[slot] = SlotStats()
            self.set("bank_occupancy", occupancy)

    def record_occupancy(self, occupancy: int):
        self.set("bank_occupancy", occupancy)

    # -- readers --------------------------------------------------------------------------------------------
    def slot_stats(self, slot: int) -> dict:
        with self.lock:
            return (self._slots.get(slot) or SlotStats()).to_dict()
