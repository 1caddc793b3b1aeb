"""From cached samples to per-(task, method) figures with paired bootstrap standard errors.

Only problems with all n samples of a method are used; for each task every method is evaluated on the same
problem list (the first ``--limit``), and every bootstrap replicate resamples the same problem indices for all
methods, so differences against ``--baseline`` are paired.
Per method: pass@1..n (correctness tasks; for GSM8K also ``strict_pass@1`` / ``strict_pass@n`` under the strict
scorer of strict_math.py and ``strict_differs``, the share of samples where it and math-verify disagree), vendi,
cosine, distinct-2/3 and distinct2_pair, measured as ``--diversity`` says (DIVERSITY below), nll and ppl (= exp of the mean over
problems of the group-mean NLL per token), mean completion tokens, share truncated at --max-tokens, the share of
ESamp rows with more than one candidate (server, ``meta_info.esamp.multi_candidate_rows / rows``), the share of
completion positions where the model's 2nd token is within 10x of its 1st (client side, from the perplexity
call: where min-p 0.1 at T=1 keeps more than one candidate; comparable across all methods), ESamp group stats
(steps, mean_novelty, last_loss, bank-full fallbacks), tokens/s of the blocks that generated the samples (those
run with one server on the machine where there are any: ``--workers`` blocks share the cores), and the server
counter deltas over those blocks. Per task, ``frontier``: each other method's distance above the
temperature sweep at its own quality, against the straight line through its points (``gaps``) and against a
monotone concave fit (``gaps_concave``; frontier.py).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import metrics as M
from .cache import SampleCache, settings_hash
from .frontier import axis_pairs, frontier_gaps
from .generated import DIVERSITY, generated_text
from .methods import Method
from .tasks import Problem, Task

MAIN_METRICS = ("pass@1", "vendi", "cosine", "distinct2", "distinct3", "distinct2_pair", "nll")


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _share(num, den) -> Optional[float]:
    return float(num) / float(den) if den else None


def problem_values(task: Task, group: List[dict], emb: Optional[np.ndarray], texts: Optional[List[str]] = None,
                   strict: Optional[List[Optional[bool]]] = None, pairs: bool = False) -> Dict[str, Optional[float]]:
    """One problem's figures from its n samples; diversity on ``texts`` (default: the replies), the strict verdicts
    (``strict``, None where the task has none) beside the task's own."""
    texts = [r["text"] for r in group] if texts is None else texts
    v: Dict[str, Optional[float]] = {}
    if task.has_correctness:
        correct = [bool((r.get("score") or {}).get("correct")) for r in group]
        for k, p in M.pass_at_ks(correct).items():
            v[f"pass@{k}"] = p
        if strict is not None and all(x is not None for x in strict):
            n = len(group)
            for k in sorted({1, n}):
                v[f"strict_pass@{k}"] = M.pass_at_k(n, sum(strict), k)
            v["strict_differs"] = _mean([float(a != b) for a, b in zip(correct, strict)])
    if emb is not None:
        v["vendi"] = M.vendi(emb)
        v["cosine"] = M.mean_pairwise_cosine(emb)
    v["distinct2"] = M.distinct_n(texts, 2)
    v["distinct3"] = M.distinct_n(texts, 3)
    if pairs:
        v["distinct2_pair"] = M.distinct_n_pairs(texts, 2)
    nlls = [-r["logprob_sum"] / r["scored_tokens"] for r in group if r.get("scored_tokens") and
            r.get("logprob_sum") is not None]
    v["nll"] = M.finite_or_none(_mean(nlls))
    v["completion_tokens"] = _mean([r.get("completion_tokens") for r in group])
    v["truncated"] = _mean([1.0 if r.get("finish_reason") == "length" else 0.0 for r in group])
    v["uncertain_share"] = _share(sum(r.get("uncertain_positions") or 0 for r in group),
                                  sum(r.get("gap_positions") or 0 for r in group))
    metas = [r.get("esamp") for r in group if isinstance(r.get("esamp"), dict)]
    v["esamp_samples"] = float(len(metas))
    if metas:
        rows = sum(m.get("rows") or 0 for m in metas)
        v["multi_candidate_share"] = _share(sum(m.get("multi_candidate_rows") or 0 for m in metas), rows) \
            if any("multi_candidate_rows" in m for m in metas) else None
        v["esamp_steps"] = _mean([m.get("steps") for m in metas])
        v["mean_novelty"] = _mean([m.get("mean_novelty") for m in metas])
        v["last_loss"] = M.finite_or_none(_mean([m.get("last_loss") for m in metas]))
        v["fallback"] = _mean([1.0 if m.get("fallback") else 0.0 for m in metas])
    return v


def summarize(tasks: Sequence[Task], problems: Dict[str, List[Problem]], methods: Sequence[Method],
              cache: SampleCache, settings_of, n: int, blocks: Sequence[dict], *, baseline: Optional[str],
              embedder=None, reps: int = 1000, seed: int = 0, diversity: str = "generated") -> dict:
    """``settings_of(task, method)`` -> the settings dict of the cache key; ``diversity``: a key of DIVERSITY."""
    if diversity not in DIVERSITY:
        raise ValueError(f"diversity {diversity!r}: one of {', '.join(DIVERSITY)}")
    out = {}
    for task in tasks:
        probs = problems[task.name]
        idx = M.bootstrap_indices(len(probs), reps, seed) if probs else np.zeros((0, 0), dtype=int)
        per_method: Dict[str, Dict[str, List[Optional[float]]]] = {}
        task_out = {"problems": [p.id for p in probs], "methods": {}}
        for m in sorted(methods, key=lambda m: m.sort_key()):
            shash = settings_hash(settings_of(task, m))
            groups = [cache.group(task.name, p.id, m.name, n, shash) for p in probs]
            have = [g for g in groups if g is not None]
            if not have:
                continue
            generated = diversity == "generated"
            pgroups = [(p, g) for p, g in zip(probs, groups) if g is not None]
            texts = [[generated_text(task.name, p.data, r["text"]) if generated else r["text"] for r in g]
                     for p, g in pgroups]
            stricts = [[task.strict_correct(p, r["text"]) for r in g] for p, g in pgroups]
            embs = None
            if embedder is not None:
                flat = embedder.encode([t for ts in texts for t in ts], chunked=generated)
                embs = flat.reshape(len(have), n, -1)
            per = iter(range(len(have)))
            rows = []
            for g in groups:
                if not g:
                    rows.append({})
                    continue
                i = next(per)
                rows.append(problem_values(task, g, embs[i] if embs is not None else None, texts[i], stricts[i],
                                           pairs=generated))
            keys = sorted({k for r in rows for k in r})
            cols: Dict[str, List[Optional[float]]] = {k: [r.get(k) for r in rows] for k in keys}
            per_method[m.name] = cols
            figures = {k: M.mean_se(v, idx) for k, v in sorted(cols.items())}
            if figures.get("nll", {}).get("mean") is not None:
                nll = figures["nll"]
                figures["ppl"] = {"mean": math.exp(nll["mean"]),
                                  "se": math.exp(nll["mean"]) * nll["se"] if nll["se"] is not None else None,
                                  "problems": nll["problems"]}
            mine = [b for b in blocks if b.get("task") == task.name and b.get("method") == m.name
                    and b.get("settings_hash") == shash and b.get("requests")]
            tokens = sum(b["completion_tokens"] for b in mine)
            # tokens/s from blocks that had the machine to one server where there are any (--workers N blocks
            # share the cores; blocks merged from side-by-side runs carry "workers" too)
            timed = [b for b in mine if b.get("workers", 1) == 1] or mine
            timed_tokens, timed_wall = sum(b["completion_tokens"] for b in timed), sum(b["wall_s"] for b in timed)
            wall = sum(b["wall_s"] for b in mine)
            counters: Dict[str, float] = {}
            for b in mine:
                for k, val in (b.get("counters_delta") or {}).items():
                    counters[k] = counters.get(k, 0) + val
            task_out["methods"][m.name] = {
                "method": {"name": m.name, **m.settings()}, "settings_hash": shash,
                "complete_problems": len(have), "missing_problems": len(probs) - len(have),
                "figures": figures, "per_problem": cols,
                "tokens_per_s": timed_tokens / timed_wall if timed_wall > 0 else None,
                "generation": {"requests": sum(b["requests"] for b in mine), "completion_tokens": tokens,
                               "wall_s": wall, "concurrency": sorted({b.get("concurrency") for b in mine} - {None}),
                               "tokens_per_s_workers": sorted({b.get("workers", 1) for b in timed})},
                "server_counters_delta": counters,
            }
        base = baseline if baseline in per_method else (next(iter(per_method), None))
        task_out["baseline"] = base
        if base is not None:
            passes = {f"pass@{k}" for k in M.report_ks(n)} | {f"strict_pass@{k}" for k in (1, n)}
            for name, cols in per_method.items():
                if name == base:
                    continue
                task_out["methods"][name]["vs_baseline"] = {
                    k: M.paired_diff(cols[k], per_method[base][k], idx)
                    for k in cols if k in per_method[base] and (k in MAIN_METRICS or k in passes)}
        sweep = [m.name for m in sorted(methods, key=lambda m: m.sort_key())
                 if m.is_temperature_sweep and m.name in per_method]
        pairs = axis_pairs(task.has_correctness, n, pair_distinct=diversity == "generated")
        task_out["frontier"] = {"sweep": sweep, "gaps": frontier_gaps(per_method, sweep, pairs, idx),
                                "gaps_concave": frontier_gaps(per_method, sweep, pairs, idx, fit="concave")}
        out[task.name] = task_out
    return out
