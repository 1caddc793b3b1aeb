"""ESamp's functional counters (a run with zero updates is a bug, not a fast run) and per-slot stats.

One lock guards every field: the step updates them, a stats endpoint may call ``snapshot()`` at any time and gets
a consistent JSON-ready dict. Per-slot stats are what the runtime returns as ``meta_info.esamp``; they are reset
when a slot is (re)assigned to a group, so they describe that group (or session) only.
Means are running means over all events since start: ``mean_loss`` over finite per-slot losses,
``mean_novelty`` over trained rows (``||h_tgt - h_hat||`` with the weights used to predict that row).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass
class SlotStats:
    steps: int = 0              # updates this slot took part in
    rows_trained: int = 0
    novelty_sum: float = 0.0
    novelty_rows: int = 0
    last_loss: Optional[float] = None
    nan_resets: int = 0

    def to_dict(self) -> dict:
        mean = self.novelty_sum / self.novelty_rows if self.novelty_rows else None
        return {"steps": self.steps, "rows_trained": self.rows_trained, "mean_novelty": mean,
                "last_loss": self.last_loss, "nan_resets": self.nan_resets}


class ESampCounters:
    def __init__(self, bank_slots: int):
        self._lock = threading.Lock()
        self.bank_slots = bank_slots
        self.updates = 0
        self.rows_trained = 0
        self.finite_losses = 0
        self.nonfinite_losses = 0
        self.loss_sum = 0.0
        self.last_loss: Optional[float] = None
        self.novelty_sum = 0.0
        self.novelty_rows = 0
        self.sampled_rows = 0
        self.reweighted_rows = 0
        self.candidate_sum = 0
        self.candidate_max = 0
        self.truncated_rows = 0
        self.bank_occupancy = 0
        self.bank_full_fallbacks = 0
        self.nan_resets = 0
        self.groups_acquired = 0
        self.sessions_evicted = 0
        self.session_overflows = 0
        self._slots: Dict[int, SlotStats] = {}

    # -- recorders (called by ESampCore) --------------------------------------------------------------------
    def record_train(self, result):
        with self._lock:
            trained_any = False
            for s, rows, loss, nov, upd in zip(result.slots, result.rows, result.losses, result.novelty_sums,
                                                result.updated):
                st = self._slots.setdefault(s, SlotStats())
                if math.isfinite(loss):
                    self.finite_losses += 1
                    self.loss_sum += loss
                    self.last_loss = loss
                    st.last_loss = loss
                else:
                    self.nonfinite_losses += 1
                if upd:
                    trained_any = True
                    self.rows_trained += rows
                    st.steps += 1
                    st.rows_trained += rows
                    self.novelty_sum += nov
                    self.novelty_rows += rows
                    st.novelty_sum += nov
                    st.novelty_rows += rows
            for s in result.reset_slots:
                self.nan_resets += 1
                self._slots.setdefault(s, SlotStats()).nan_resets += 1
            if trained_any:
                self.updates += 1

    def record_sample(self, out):
        """``out``: a ``sampling.SampleOutput``; candidate stats are over the reweighted rows."""
        n_rw = int(out.reweighted.sum())
        if n_rw:
            counts = out.counts[out.reweighted]
            c_sum, c_max = int(counts.sum()), int(counts.max())
        else:
            c_sum = c_max = 0
        n_trunc = int(out.truncated.sum())
        with self._lock:
            self.sampled_rows += int(out.tokens.numel())
            self.reweighted_rows += n_rw
            self.candidate_sum += c_sum
            self.candidate_max = max(self.candidate_max, c_max)
            self.truncated_rows += n_trunc

    def record_acquire(self, slot: Optional[int], occupancy: int, fresh: bool):
        with self._lock:
            if slot is None:
                self.bank_full_fallbacks += 1
            else:
                self.groups_acquired += 1
                if fresh:
                    self._slots[slot] = SlotStats()
            self.bank_occupancy = occupancy

    def record_occupancy(self, occupancy: int):
        with self._lock:
            self.bank_occupancy = occupancy

    def record_session_evicted(self):
        with self._lock:
            self.sessions_evicted += 1

    def record_session_overflow(self):
        with self._lock:
            self.session_overflows += 1

    # -- readers --------------------------------------------------------------------------------------------
    def slot_stats(self, slot: int) -> dict:
        with self._lock:
            return (self._slots.get(slot) or SlotStats()).to_dict()

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "updates": self.updates,
                "rows_trained": self.rows_trained,
                "finite_losses": self.finite_losses,
                "nonfinite_losses": self.nonfinite_losses,
                "mean_loss": self.loss_sum / self.finite_losses if self.finite_losses else None,
                "last_loss": self.last_loss,
                "mean_novelty": self.novelty_sum / self.novelty_rows if self.novelty_rows else None,
                "sampled_rows": self.sampled_rows,
                "candidate_rows_reweighted": self.reweighted_rows,
                "candidates_per_row_mean": (self.candidate_sum / self.reweighted_rows
                                            if self.reweighted_rows else None),
                "candidates_per_row_max": self.candidate_max,
                "candidate_cap_truncations": self.truncated_rows,
                "bank_slots": self.bank_slots,
                "bank_occupancy": self.bank_occupancy,
                "bank_full_fallbacks": self.bank_full_fallbacks,
                "nan_resets": self.nan_resets,
                "groups_acquired": self.groups_acquired,
                "sessions_evicted": self.sessions_evicted,
                "session_overflows": self.session_overflows,
            }
