"""HTTP client of the product's server (native ``/generate``), and a server the harness starts itself.

Requests go to ``/generate`` with ``input_ids`` (the prompt rendered with the served model's own chat template,
client side, by its tokenizer) and ``sampling_params`` carrying ``n`` and ``esamp``; the n outputs of one request
share one distiller on the server. Perplexity uses the same route: ``input_ids = prompt + completion``,
``max_new_tokens = 0``, ``return_logprob`` with ``logprob_start_len = len(prompt) - 1``, so the server returns the
log-probability of every completion token under the served model (raw logits, T = 1, no filter, no ESamp).
The scoring prefill materialises a vocabulary-wide row of logits (and its log-softmax) per scored token -- 1.2 MB per
token for Qwen's 152k vocabulary -- so one request with a problem's n = 16 HumanEval completions needs ~7 GB in the
scheduler, and schedulers serving those runs were OOM-killed on a 24 GB machine. Completions are scored in requests of
at most ``SCORE_TOKENS_PER_REQUEST`` tokens (prompt included), one after another.

``started_server`` runs ``python -m sglang_esamp.launch_server`` on a free port (log in ``OUTPUT/server.log``)
with ``--esamp-warm-start shipped`` when a warm start is shipped for the model, and kills its process group at exit.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import requests

from ...serve.local_server import local_server
from ...serve.server_probe import ServerProbe

# tokens of one scoring request (prompt + completions): bounds the scheduler's logits at ~2.5 GB for a 152k vocab
SCORE_TOKENS_PER_REQUEST = 2048


def scoring_batches(prompt_len: int, lengths: Sequence[int], budget: int = SCORE_TOKENS_PER_REQUEST) -> List[List[int]]:
    """The completions (indices, in order, empty ones left out) grouped into requests of at most ``budget`` tokens
    each (prompt + completion per item); an item over the budget alone goes in a request of its own."""
    batches: List[List[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if n <= 0:
            continue
        cost = prompt_len + n
        if not batches or used + cost > budget:
            batches.append([])
            used = 0
        batches[-1].append(i)
        used += cost
    return batches


class RequestRejected(RuntimeError):
    """HTTP 4xx from the server: the request (e.g. an esamp option the server lacks) is not acceptable."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class ServerClient:
    def __init__(self, base_url: str, timeout_s: float = 14400.0, retries: int = 2):
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self._session = requests.Session()
        self.probe = ServerProbe(self.base)     # /health, /esamp/stats, /model_info

    # -------------------------------------------------------------- plumbing
    def _post(self, path: str, body: dict):
        last: Optional[Exception] = None
        for attempt in range(self.retries + 1):
            try:
                r = self._session.post(self.base + path, json=body, timeout=self.timeout_s)
            except requests.ReadTimeout as e:
                # never resubmit a request that timed out: the server may still be generating it, and a copy
                # would only double its batch (a 512-token request at 80 rows takes ~1 h on one CPU core)
                raise RuntimeError(f"POST {self.base}{path}: no answer in {self.timeout_s:.0f} s "
                                   "(--request-timeout); not resubmitted") from e
            except requests.RequestException as e:   # connection reset etc.: retry, then give up
                last = e
                time.sleep(1.0 + attempt)
                continue
            if 400 <= r.status_code < 500:
                raise RequestRejected(r.status_code, r.text)
            if r.status_code != 200:
                last = RuntimeError(f"POST {path}: HTTP {r.status_code}: {r.text[:500]}")
                time.sleep(1.0 + attempt)
                continue
            return r.json()
        raise RuntimeError(f"POST {self.base}{path} failed after {self.retries + 1} tries: {last}")

    # -------------------------------------------------------------- generation and scoring
    def generate(self, input_ids: List[int], sampling_params: dict) -> List[dict]:
        """One request with ``n = sampling_params["n"]`` parallel samples -> the n outputs."""
        out = self._post("/generate", {"input_ids": list(input_ids), "sampling_params": dict(sampling_params)})
        return out if isinstance(out, list) else [out]

    def completion_logprobs(self, prompt_ids: List[int], completions: Sequence[List[int]],
                            top_logprobs: int = 2) -> List[dict]:
        """Per completion: the log-prob of each of its tokens given prompt + previous tokens (served model, T=1).

        Returns ``[{"logprobs": [...], "top2_gap": [...]}]`` where ``top2_gap`` is log p(2nd) - log p(1st) at each
        completion position (the model's own uncertainty there; None where unavailable).
        """
        results: List[dict] = [{"logprobs": [], "top2_gap": []} for _ in completions]
        for batch in scoring_batches(len(prompt_ids), [len(c) for c in completions]):
            self._score(prompt_ids, [(i, completions[i]) for i in batch], top_logprobs, results)
        return results

    def _score(self, prompt_ids, items, top_logprobs: int, results: List[dict]) -> None:
        # SGLang gives no logprob for the first position of the range: start one before the completion
        start = max(0, len(prompt_ids) - 1)
        body = {"input_ids": [list(prompt_ids) + list(c) for _, c in items],
                "sampling_params": {"max_new_tokens": 0, "temperature": 1.0},
                "return_logprob": True, "logprob_start_len": start, "top_logprobs_num": top_logprobs}
        outs = self._post("/generate", body)
        outs = outs if isinstance(outs, list) else [outs]
        for (i, comp), out in zip(items, outs):
            meta = out.get("meta_info", {})
            lps = meta.get("input_token_logprobs") or []
            tops = meta.get("input_top_logprobs") or []
            # entries cover positions start .. end; the one for position p is log P(token_p | tokens_<p)
            lps = lps[-len(comp):] if len(lps) >= len(comp) else lps
            tops = tops[-len(comp):] if len(tops) >= len(comp) else tops
            values = [None if e is None or e[0] is None else float(e[0]) for e in lps]
            ids = [None if e is None else e[1] for e in lps]
            if ids and ids != list(comp)[-len(ids):]:
                raise RuntimeError("logprob response does not line up with the completion tokens")
            gaps = []
            for t in tops:
                vals = sorted((float(x[0]) for x in (t or []) if x and x[0] is not None), reverse=True)
                gaps.append(vals[1] - vals[0] if len(vals) >= 2 else None)
            results[i] = {"logprobs": values, "top2_gap": gaps}


# ------------------------------------------------------------------ self-started server

def shipped_warm_start_exists(model: str) -> Optional[bool]:
    """Whether ``--esamp-warm-start shipped`` has a file for this model (paper preset/taps); None if unknown."""
    try:
        from ...models import MODELS, model_fingerprint
        from ...warm_starts import shipped_path

        model_id = model if model in MODELS else model_fingerprint(model)["model_id"]   # offline names are ids
        shipped_path(model_id, "paper", "paper")
        return True
    except FileNotFoundError:
        return False
    except Exception:
        return None


@contextmanager
def started_server(model: str, server_args: Sequence[str], log_path: Path,
                   start_timeout_s: float = 900.0) -> Iterator[str]:
    """Start ``python -m sglang_esamp.launch_server`` and yield its base URL; stop it (process group) at exit."""
    args = list(server_args)
    flags = {a.split("=", 1)[0] for a in args}
    if "--esamp-warm-start" not in flags and not flags & {"--esamp-distiller", "--esamp-taps"}:
        has = shipped_warm_start_exists(model)
        if has:
            args += ["--esamp-warm-start", "shipped"]
        else:
            why = "no warm start is shipped for" if has is False else "could not check for a shipped warm start of"
            print(f"[bench_quality] {why} {model!r}: starting without one; the warm-start arms (esamp_*_warm*) "
                  f"will be skipped", file=sys.stderr, flush=True)
    print(f"[bench_quality] starting server for {model} (log: {log_path})", file=sys.stderr, flush=True)
    with local_server(["--model-path", model, *args], log_path, start_timeout_s=start_timeout_s) as base:
        yield base
