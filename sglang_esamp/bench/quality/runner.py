"""Generation: every (task, method) block of requests against the server, scored and cached as it finishes.

One request = one problem x one method with ``n`` parallel samples (one distiller group on the server). Blocks run
one (task, method) at a time with ``--concurrency`` requests in flight, so the server counters read before and
after a block (``GET /esamp/stats``) belong to that method alone, and its tokens/s is the block's generated
tokens over its wall time. Each finished request is scored at once (perplexity by the server in the worker
thread; correctness in the main thread) and appended to the cache. Methods the server refuses (HTTP 4xx on their
first request, e.g. ``esamp.init = "warm"`` on a server without a warm start) are skipped from then on, with the
server's reason; warm-start arms are skipped up front when ``/esamp/stats`` shows no warm start.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Callable, Dict, List, Optional, Sequence

from ...serve.server_probe import config_of
from .cache import SampleCache, sample_key, settings_hash
from .client import RequestRejected, ServerClient
from .methods import Method
from .tasks import PROMPT_VERSION, Problem, Task

UNCERTAIN_LOG_RATIO = math.log(0.1)   # 2nd token within 10x of the top one = min-p 0.1 keeps > 1 candidate (T=1)


def log(msg: str):
    print(f"[bench_quality] {msg}", file=sys.stderr, flush=True)


def numeric_counters(stats: Optional[dict]) -> Dict[str, float]:
    total = (stats or {}).get("total") or {}
    return {k: v for k, v in total.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def counter_delta(before: Optional[dict], after: Optional[dict]) -> Dict[str, float]:
    b, a = numeric_counters(before), numeric_counters(after)
    return {k: a[k] - b.get(k, 0) for k in a}


class MainThreadCalls:
    """Runs functions handed over by other threads on the thread that serves it. Scoring must run on the main
    thread (math-verify's parse timeout uses ``signal.alarm``); with ``--workers`` each server's runner is a thread
    of its own, so its scoring is handed to the main thread, which serves the calls until the runners end."""

    def __init__(self):
        self._calls: "queue.Queue" = queue.Queue()

    def call(self, fn: Callable, *args):
        if threading.current_thread() is threading.main_thread():
            return fn(*args)
        fut: Future = Future()
        self._calls.put((fn, args, fut))
        return fut.result()

    def serve(self, done: Callable[[], bool]):
        while not done() or not self._calls.empty():
            try:
                fn, args, fut = self._calls.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:     # noqa: BLE001 -- raised in the calling thread
                fut.set_exception(e)


class Runner:
    def __init__(self, client: ServerClient, cache: SampleCache, tokenizer, model_name: str, *, n: int,
                 max_tokens: int, concurrency: int, progress: bool = True, on_block=None,
                 main_calls: Optional[MainThreadCalls] = None):
        self.client = client
        self.cache = cache
        self.tok = tokenizer
        self.model_name = model_name
        self.n = n
        self.max_tokens = max_tokens
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.on_block = on_block       # called with each finished block that sent requests (saved at once)
        self.main_calls = main_calls or MainThreadCalls()     # scoring runs on the main thread
        self.skipped: Dict[str, str] = {}
        self.blocks: List[dict] = []
        self.errors: List[dict] = []

    # -------------------------------------------------------------- keys and prompts
    def settings(self, task: Task, method: Method) -> dict:
        return {"model": self.model_name, "task": task.name, "prompt_version": PROMPT_VERSION,
                "method": method.settings(), "max_tokens": self.max_tokens, "n": self.n}

    def prompt_ids(self, problem: Problem) -> List[int]:
        text = self.tok.apply_chat_template([{"role": "user", "content": problem.user}], add_generation_prompt=True,
                                            tokenize=False)
        return list(self.tok.encode(text, add_special_tokens=False))

    # -------------------------------------------------------------- what the server supports
    def precheck(self, methods: Sequence[Method]) -> List[Method]:
        """Methods worth trying on this server; the others go to ``self.skipped`` with the reason. A method the
        server refuses later (HTTP 4xx on its first request) is skipped then, with the server's message."""
        stats = self.client.probe.esamp_stats_or_none()
        config = config_of(stats)
        ok = []
        for m in methods:
            if m.uses_esamp_path and stats is None:
                self.skipped[m.name] = "the server has no /esamp/stats (not an ESamp server)"
            elif m.init == "warm" and "warm_start" in config and not config["warm_start"]:
                self.skipped[m.name] = ("the server has no warm start (start it with --esamp-warm-start shipped or "
                                        "a path; warm starts are shipped for some models only, SmolLM2 today): "
                                        "warm-start arms are skipped")
            if m.name in self.skipped:
                log(f"skipping {m.name}: {self.skipped[m.name]}")
            else:
                ok.append(m)
        return ok

    def concurrency_for(self, method: Method) -> int:
        """Never more ESamp groups in flight than the bank has slots (a full bank falls back to plain sampling)."""
        if not method.trains_distiller:
            return self.concurrency
        slots = self.client.probe.esamp_config().get("bank_slots")
        return max(1, min(self.concurrency, int(slots))) if slots else self.concurrency

    # -------------------------------------------------------------- generation
    def _request(self, problem: Problem, method: Method, prompt: List[int]):
        t0 = time.time()
        outs = self.client.generate(prompt, method.sampling_params(self.max_tokens, self.n))
        latency = time.time() - t0
        if len(outs) != self.n:
            raise RuntimeError(f"asked for n={self.n} samples, got {len(outs)}")
        comps = [list(o.get("output_ids") or []) for o in outs]
        scored = self.client.completion_logprobs(prompt, comps)
        return outs, comps, scored, latency

    def _records(self, task: Task, problem: Problem, method: Method, shash: str, settings: dict, prompt, result):
        outs, comps, scored, latency = result
        recs = []
        for i, (o, comp, sc) in enumerate(zip(outs, comps, scored)):
            meta = o.get("meta_info") or {}
            text = o.get("text") or ""
            lps = [x for x in sc["logprobs"] if x is not None]
            gaps = [g for g in sc["top2_gap"] if g is not None]
            finish = meta.get("finish_reason")
            recs.append({
                "key": sample_key(task.name, problem.id, method.name, i, shash),
                "task": task.name, "problem": problem.id, "method": method.name, "index": i,
                "settings_hash": shash, "settings": settings,
                "text": text, "output_ids": comp, "prompt_tokens": len(prompt),
                "completion_tokens": meta.get("completion_tokens", len(comp)),
                "finish_reason": finish.get("type") if isinstance(finish, dict) else finish,
                "esamp": meta.get("esamp"),
                "request_latency_s": latency,
                "logprob_sum": float(sum(lps)) if lps else None, "scored_tokens": len(lps),
                "uncertain_positions": sum(g >= UNCERTAIN_LOG_RATIO for g in gaps), "gap_positions": len(gaps),
                "score": self.main_calls.call(task.score, problem, text),
            })
        return recs

    def run_block(self, task: Task, method: Method, problems: Sequence[Problem]) -> dict:
        settings = self.settings(task, method)
        shash = settings_hash(settings)
        todo = [p for p in problems if self.cache.group(task.name, p.id, method.name, self.n, shash) is None]
        block = {"task": task.name, "method": method.name, "settings_hash": shash, "problems": len(problems),
                 "cached": len(problems) - len(todo), "requests": 0, "failed": 0, "completion_tokens": 0,
                 "wall_s": 0.0, "counters_delta": {}}
        if not todo:
            return block
        conc = self.concurrency_for(method)
        before = self.client.probe.esamp_stats_or_none()
        t0 = time.time()
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"{task.name} {method.name}", unit="req", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True)
        with ThreadPoolExecutor(max_workers=conc) as pool:
            futures = {}
            for p in todo:
                prompt = self.prompt_ids(p)
                futures[pool.submit(self._request, p, method, prompt)] = (p, prompt)
            for fut in as_completed(futures):
                p, prompt = futures[fut]
                if method.name in self.skipped:
                    bar.update(1)
                    continue
                try:
                    recs = self._records(task, p, method, shash, settings, prompt, fut.result())
                except RequestRejected as e:   # the server does not accept this method: skip it everywhere
                    self.skipped[method.name] = f"the server rejects its request ({method.esamp_value()}): {e}"
                    log(f"skipping {method.name}: {self.skipped[method.name]}")
                    for f in futures:
                        f.cancel()
                except Exception as e:   # keep going; the request is retried by the next run
                    block["failed"] += 1
                    self.errors.append({"task": task.name, "method": method.name, "problem": p.id,
                                        "error": f"{type(e).__name__}: {e}"[:1000]})
                    log(f"{task.name} {method.name} {p.id}: {type(e).__name__}: {str(e)[:300]}")
                else:
                    self.cache.add(recs)
                    block["requests"] += 1
                    block["completion_tokens"] += sum(r["completion_tokens"] or 0 for r in recs)
                bar.update(1)
        bar.close()
        block["wall_s"] = time.time() - t0
        block["concurrency"] = conc
        block["counters_delta"] = counter_delta(before, self.client.probe.esamp_stats_or_none())
        return block

    def run(self, tasks: Sequence[Task], problems: Dict[str, List[Problem]], methods: Sequence[Method]):
        for task in tasks:
            for method in methods:
                if method.name not in self.skipped:
                    block = self.run_block(task, method, problems[task.name])
                    self.blocks.append(block)
                    if block.get("requests") and self.on_block is not None:
                        self.on_block(block)
        return self.blocks
