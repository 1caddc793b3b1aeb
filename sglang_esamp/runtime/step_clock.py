"""``StepClock``: the wall time of ESamp's decode steps, the whole against which its phases are read."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class StepClock:
    """Wall time from one ESamp decode step's plan to the next one's: a whole scheduler iteration (SGLang's
    forward, sampling, output processing and scheduling, with ESamp's phases inside it), so the per-phase
    breakdown is read against the step it belongs to and a wait nobody timed shows up as unexplained time."""
    last: Optional[float] = None

    def tick(self, counters, timed: bool) -> None:
        now = time.perf_counter()
        if timed and self.last is not None:
            counters.add("time_step_s", now - self.last)
            counters.add("steps_timed")
        self.last = now if timed else None
