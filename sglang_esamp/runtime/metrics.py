"""ESamp counters as Prometheus metrics on SGLang's own ``/metrics`` when the server runs with --enable-metrics.

SGLang runs prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set before the schedulers
start), and ``/metrics`` in the server process merges every process's samples. So the scheduler only has to set
gauges: ``sglang_esamp_<counter>`` for every numeric counter of ``ESampRuntime.snapshot()``, combined over the live
schedulers as ``aggregation`` says (sums for counts, max for maxima, one series per process for means; per-rank
values are also in /esamp/stats). Updates are throttled to one per ``PERIOD_S``.
"""
from __future__ import annotations

import os
import time

PERIOD_S = 0.5
PREFIX = "sglang_esamp_"


def aggregation(name: str) -> str:
    """How a counter combines over schedulers (DP ranks): "max" for maxima, "per_rank" for means and last
    values (a sum of means means nothing), "sum" for everything else."""
    if name.endswith("_max"):
        return "max"
    if "mean" in name or name.startswith("last_"):
        return "per_rank"
    return "sum"


_PROMETHEUS_MODE = {"sum": "livesum", "max": "livemax", "per_rank": "liveall"}


class PrometheusSink:
    def __init__(self):
        self._gauges = {}
        self._last = 0.0
        self.active = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and _metrics_enabled()

    def maybe_update(self, snapshot_fn, force: bool = False):
        if not self.active:
            return
        now = time.monotonic()
        if not force and now - self._last < PERIOD_S:
            return
        self._last = now
        from prometheus_client import Gauge

        snap = snapshot_fn()
        for name, value in snap["counters"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            g = self._gauges.get(name)
            if g is None:
                g = self._gauges[name] = Gauge(PREFIX + name, f"ESamp {name.replace('_', ' ')}",
                                               multiprocess_mode=_PROMETHEUS_MODE[aggregation(name)])
            g.set(value)


def _metrics_enabled() -> bool:
    try:
        from sglang.srt.runtime_context import get_server_args

        return bool(getattr(get_server_args(), "enable_metrics", False))
    except Exception:
        return False
