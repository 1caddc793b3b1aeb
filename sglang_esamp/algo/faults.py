"""Debug fault injection (``--esamp-debug-faults``): prove that a failing ESamp step never takes the server down.

A spec is ``point:probability`` pairs, comma separated, e.g. ``predict:0.05,update:0.05,nan_taps:0.02``. At each
injection point of an ESamp step the injector draws from its own seeded generator (never the sampling RNG), so a
run with faults is reproducible and a run without faults draws nothing. Points:
  ``predict``    raise before the distiller prediction
  ``sample``     raise inside the ESamp sampling rule
  ``update``     raise inside the distiller update (async: surfaces at the next join)
  ``nan_taps``   one row of the tapped shallow hidden states becomes NaN (the update must drop it)
  ``huge_taps``  one row of the tapped target hidden states is scaled by 1e6 (the divergence guard's case)
  ``skip_taps``  the shallow tap writes nothing this step (its buffer keeps the previous step's rows: the
                 freshness stamp must catch it as a tap miss, never train on or sample from stale states)
Each injected fault is counted in ``faults_injected``; what the server did about it shows in the other counters
(``step_errors``, ``error_resets``, dropped rows, divergence resets).
"""
from __future__ import annotations

import random
from typing import Dict, Optional

POINTS = ("predict", "sample", "update", "nan_taps", "huge_taps", "skip_taps")


class InjectedFault(RuntimeError):
    """Raised at an injection point; never raised without ``--esamp-debug-faults``."""


def parse_fault_spec(spec: Optional[str]) -> Dict[str, float]:
    """{point: probability}; raises ValueError with the reason (``ESampConfig`` names the flag)."""
    if spec is None or spec == "":
        return {}
    if not isinstance(spec, str):
        raise ValueError(f"must be a string like 'predict:0.05,update:0.05', got {spec!r}")
    out: Dict[str, float] = {}
    for part in spec.split(","):
        point, sep, prob = part.strip().partition(":")
        if point not in POINTS or not sep:
            raise ValueError(f"entry {part!r} must be POINT:PROBABILITY with POINT in {list(POINTS)}")
        try:
            p = float(prob)
        except ValueError:
            raise ValueError(f"entry {part!r}: probability {prob!r} is not a number") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"entry {part!r}: probability must be in [0, 1]")
        out[point] = p
    return out


class FaultInjector:
    def __init__(self, spec: Optional[str], seed: int = 0, counters=None):
        self.probs = parse_fault_spec(spec)
        self.rng = random.Random(seed)
        self.counters = counters
        if counters is not None:
            counters.declare("faults_injected")

    @property
    def enabled(self) -> bool:
        return bool(self.probs)

    def fires(self, point: str) -> bool:
        p = self.probs.get(point, 0.0)
        if p <= 0.0 or self.rng.random() >= p:
            return False
        if self.counters is not None:
            self.counters.add("faults_injected")
        return True

    def maybe_raise(self, point: str) -> None:
        if self.fires(point):
            raise InjectedFault(f"injected ESamp fault at '{point}' (--esamp-debug-faults)")

    def corrupt_taps(self, h_src, h_tgt) -> None:
        """In place, on the step's own copies of the tapped rows."""
        if h_src is not None and h_src.shape[0] and self.fires("nan_taps"):
            h_src[self.rng.randrange(h_src.shape[0])] = float("nan")
        if h_tgt is not None and h_tgt.shape[0] and self.fires("huge_taps"):
            h_tgt[self.rng.randrange(h_tgt.shape[0])] *= 1e6
