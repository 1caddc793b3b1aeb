"""ESamp counters as Prometheus metrics on SGLang's own ``/metrics`` when the server runs with --enable-metrics.

SGLang runs prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set before the schedulers
start), and ``/metrics`` in the server process merges every process's samples. So the scheduler only has to set
gauges: ``sglang_esamp_<counter>`` for every numeric counter of ``ESampRuntime.snapshot()``, combined over the live
schedulers as each counter declares (``algo.counters``: sums for counts, max for maxima, one series per process for
means and last values; per-rank values are also in /esamp/stats). Updates are throttled to one per ``PERIOD_S``.
"""
from __future__ import annotations

import os
import time

PERIOD_S = 0.5
PREFIX = "sglang_esamp_"


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
        combine = snap["combine"]
        for name, value in snap["counters"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            g = self._gauges.get(name)
            if g is None:
                g = self._gauges[name] = Gauge(PREFIX + name, f"ESamp {name.replace('_', ' ')}",
                                               multiprocess_mode=_PROMETHEUS_MODE[combine[name]])
            g.set(value)


def _metrics_enabled() -> bool:
    try:
        from sglang.srt.runtime_context import get_server_args

        return bool(getattr(get_server_args(), "enable_metrics", False))
    except Exception:
        return False
