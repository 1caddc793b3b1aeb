"""What the benchmarks ask a running server: is it healthy (``/health``), what ESamp has done (``/esamp/stats``)
and which model it serves (``/model_info``). One client for bench_quality, bench_soak, bench_throughput and
``local_server``'s start-up wait, so every tool reads the same answers the same way.

Only GETs live here; each tool keeps its own request path (``/generate``, the OpenAI routes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import httpx


class ProbeError(RuntimeError):
    """The server did not answer a probe with JSON (not reachable, HTTP error, or not an ESamp server)."""


@dataclass(frozen=True)
class Health:
    status: Optional[int]          # the HTTP status of GET /health; None when nothing answered
    error: Optional[str]           # why nothing answered

    @property
    def ok(self) -> bool:
        return self.status == 200


def _rank0(stats: Optional[dict]) -> dict:
    return (((stats or {}).get("ranks") or [{}])[0] or {})


def config_of(stats: Optional[dict]) -> dict:
    """The ESamp configuration inside an ``/esamp/stats`` answer (rank 0's; every rank runs the same)."""
    return dict(_rank0(stats).get("config") or {})


def cpu_fp32_gemm_of(stats: Optional[dict]) -> bool:
    """Whether the server computes its bf16 CPU GEMMs in fp32 (runtime.cpu_gemm; the same numbers up to summation
    order), inside an ``/esamp/stats`` answer."""
    return _rank0(stats).get("cpu_fp32_gemm") is not None


def total_of(stats: Optional[dict]) -> dict:
    """The counters summed over ranks inside an ``/esamp/stats`` answer."""
    return dict((stats or {}).get("total") or {})


class ServerProbe:
    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.Client(base_url=self.base, timeout=timeout_s)

    def close(self):
        self._http.close()

    def __enter__(self) -> "ServerProbe":
        return self

    def __exit__(self, *exc):
        self.close()

    def _json(self, path: str):
        try:
            r = self._http.get(path)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise ProbeError(f"GET {self.base}{path}: {type(e).__name__}: {e}") from None

    # ------------------------------------------------------------------ the questions
    def health(self, timeout_s: float = 5.0) -> Health:
        try:
            return Health(self._http.get("/health", timeout=timeout_s).status_code, None)
        except httpx.HTTPError as e:
            return Health(None, f"{type(e).__name__}: {e}")

    def esamp_stats(self) -> dict:
        """``GET /esamp/stats``: ``{"total": {...}, "ranks": [{"config": ..., ...}]}``; ProbeError without it."""
        return self._json("/esamp/stats")

    def esamp_stats_or_none(self) -> Optional[dict]:
        try:
            return self.esamp_stats()
        except ProbeError:
            return None

    def esamp_total(self) -> dict:
        """The counters summed over ranks (how each combines: ``algo/counters.py``)."""
        return total_of(self.esamp_stats())

    def esamp_config(self) -> dict:
        """The ESamp configuration the server reports; {} when it reports none."""
        return config_of(self.esamp_stats_or_none())

    def model_info(self) -> dict:
        """``/model_info`` (SGLang's newer name) or ``/get_model_info``; {} when neither answers."""
        for path in ("/model_info", "/get_model_info"):
            try:
                return self._json(path)
            except ProbeError:
                continue
        return {}
