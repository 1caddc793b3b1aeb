"""Combining the counters of several schedulers (one per DP rank) for ``/esamp/stats``.

Every scheduler's snapshot carries its counters and, next to them, how each one combines (``combine``): declared
once where the counter is declared (``algo.counters``), never guessed from its name. ``sum`` adds (counts,
occupancy), ``max`` keeps the largest, ``per_rank`` (means, last values) has no meaningful total and stays in
the per-rank entries only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

def merge_counters(per_rank: List[Optional[Dict]]) -> Dict[str, Any]:
    total: Dict[str, Any] = {}
    for snap in per_rank:
        if not snap:
            continue
        combine = snap.get("combine", {})
        for name, value in snap.get("counters", {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            how = combine.get(name)
            if how == "sum":
                total[name] = total.get(name, 0) + value
            elif how == "max":
                total[name] = max(total.get(name, value), value)
    return total
