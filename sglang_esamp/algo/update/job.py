"""One decode step's distiller update as a plain value: what ``ESampCore.train`` is handed (``Update``) and what
comes back through ``ESampCore.take_updates`` (``UpdateDone``).

The update runs off the caller's path (``update.runner``), so everything it needs travels in the value, and
everything it produced -- the training result, the caller's measurement of the step, or the error it raised --
comes back in one, with the caller's ``tag`` (the runtime's step). Nothing is found in shared state afterwards: a
failed update is contained against the step it belonged to because that step comes back with the error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch


@dataclass
class Update:
    h_src: torch.Tensor                       # [R, H] shallow taps of the step's rows
    h_tgt: torch.Tensor                       # [R, H] their LM-head inputs (the distiller's target)
    slots: torch.Tensor                       # [R] int64 slot per row; -1 = not trained (no slot, a stale tap)
    host_slots: Optional[Sequence[int]] = None   # the same slots as the host planned them (no device read);
                                                 # a sync-free core trains through its update graphs with them
    sample: Optional[object] = None           # the step's rule.sampling.SampleOutput, counted off the caller's path
    measure: Optional[Callable[[], object]] = None   # the caller's host reads of the step (run with the update)
    tag: object = None                        # handed back untouched in UpdateDone (the runtime: its step)


@dataclass
class UpdateDone:
    tag: object
    train: Optional[object] = None            # distiller.bank.TrainResult; None = no row to train
    measured: object = None                   # what ``Update.measure`` returned
    error: Optional[BaseException] = None     # the update (or the measurement) raised: nothing above is valid


def first_row_per_slot(host_slots: Sequence[int]) -> List[int]:
    """``train_rows="first_per_group"``: each slot keeps its first row; the others get slot -1 (not trained)."""
    seen, out = set(), []
    for s in host_slots:
        out.append(s if s >= 0 and s not in seen else -1)
        if s >= 0:
            seen.add(s)
    return out
