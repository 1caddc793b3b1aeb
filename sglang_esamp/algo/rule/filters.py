"""The LLM's own candidate filter, with SGLang's torch-sampler semantics, on a top-C prefix.

SGLang (pytorch backend) does, per row: ``logits.div_(T)`` in the logits dtype, ``softmax`` over V, sort the probs
descending, ``cumsum``; zero ranks ``>= top_k``; zero where ``cumsum - p > top_p``; with min-p zero where
``p < p_max * min_p``; sample from what is left. Greedy requests arrive normalized as T = 1, top_k = 1.

Here: one ``topk`` by scaled logit plus the same softmax over V. Every filter is a prefix of the sorted
order (top-k trivially; top-p because ``cumsum - p`` is non-decreasing; min-p and ``p > 0`` because the probs are
non-increasing), so the candidate set is the prefix of length ``count`` = the number of ranks passing all masks.
``p > 0`` is part of the rule: a token whose prob underflowed to 0 is never sampled by SGLang, so it is no
candidate here either (the candidate set is exactly the support of SGLang's filtered distribution).
The extra (C+1)-th column tells whether the filter wanted more than C tokens (``truncated``).
Width of the ``topk``: ``C + 1`` in general, but a filter bounds it exactly before any sort: with min-p the kept
set is a prefix of ``{p >= p_max * min_p}`` (one comparison pass over the probs already computed), with top-k it
is at most k. The batch's width is the largest bound + 1, so with a filter set the cost stays flat in C (and the
partial sort is over a handful of columns, not 1025), and the result is the same as with ``C + 1``. When every
row has a filter, a first ``topk`` of FIRST_WIDTH columns is tried before that counting pass: if each row's kept
prefix ends inside it, that is the exact answer and the pass over the vocabulary is skipped.
Ties (equal scaled logits at a filter boundary) may be ordered differently than SGLang's sort; any order is valid.
Sync-free form (``width`` given, what a CUDA step runs: ``ESampCore.sync_free``): the width is a bucket chosen on
the host from the requests' sampling params (``width_bucket``), never from tensor values, so no step reads a tensor
back -- each read is a device sync on CUDA and a graph capture cannot contain one. Same candidates, wider padding.
Cost on CPU (``candidates``, what the sampler calls): the full-vocabulary work (the division by T, the softmax,
the ``topk``) runs in row chunks whose ``[rows, V]`` temporaries stay cache-sized -- one fp32 [64, 151,936] buffer
is 39 MB, above glibc's mmap threshold, so it was mapped and page-faulted afresh at every step -- and T = 1 rows
are not divided at all (``x / 1`` is ``x``). A wide ``topk`` (no filter: C + 1 = 1025 columns) selects exactly
through a threshold (``_wide_topk``): the k-th best of a strided sample bounds the row, the few columns at or above
it are compacted and sorted; a row with fewer than k such columns takes the plain ``topk``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Candidates:
    ids: torch.Tensor          # [R, K] int64 token ids, sorted by scaled logit descending (K = max count)
    scaled: torch.Tensor       # [R, K] fp32 temperature-scaled LLM logits of those ids (padding: -inf)
    counts: torch.Tensor       # [R] int64 valid candidates per row (>= 1)
    truncated: torch.Tensor    # [R] bool: the filter kept more than the cap; the set was cut to the cap


NO_TOP_K = torch.iinfo(torch.int64).max  # our own "no top-k" for callers without SGLang (any k >= V works)


def scale_logits(logits: torch.Tensor, temperatures: torch.Tensor, sync_free: bool = False) -> torch.Tensor:
    """``logits / T`` rounded to the logits dtype, bit-equal to SGLang's in-place ``logits.div_(T)``."""
    temps = temperatures.reshape(-1, 1).to(torch.float32)
    if not sync_free and logits.device.type == "cpu" and bool((temps == 1).all()):
        return logits   # x / 1 == x exactly; skips a full pass and a [R, V] buffer (a host read: CPU only)
    return logits.div(temps).to(logits.dtype)


# Elements of one row chunk of the full-vocabulary work (see the module docstring). CUDA: no chunking.
_VOCAB_CHUNK_ELEMS = {"cpu": 1 << 21}


def width_bucket(top_ks, cap: int, vocab: int) -> int:
    """The ``topk`` width of a sync-free step, from the rows' top-k on the host (SGLang's normalized values, any
    k >= V = none): the cap + 1 unless every row has a top-k within the cap, then the next power of two above the
    largest (at least 8). Only top-k bounds the width before the logits are seen (top-p and min-p keep a number of
    tokens that depends on the distribution); powers of two keep the shapes -- and the CUDA graphs -- few."""
    full = min(cap + 1, vocab)
    ks = [int(k) for k in top_ks]
    if not ks or max(ks) > cap:
        return full
    width = 8
    while width < max(ks) + 1:
        width *= 2
    return min(width, full)


def candidates(logits: torch.Tensor, temperatures: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor,
               min_ps: torch.Tensor, cap: int, width: Optional[int] = None) -> Candidates:
    """``filter_candidates(scale_logits(logits, T), ...)``, in cache-sized row chunks on CPU (same result).
    ``width``: the sync-free form (module docstring), a ``width_bucket``."""
    r, v = logits.shape
    budget = _VOCAB_CHUNK_ELEMS.get(logits.device.type)
    step = r if budget is None else max(1, budget // max(1, v))
    temps = temperatures.reshape(-1)
    top_ks, top_ps, min_ps = top_ks.reshape(-1), top_ps.reshape(-1), min_ps.reshape(-1)

    def chunk(lo: int, hi: int) -> Candidates:
        args = (top_ks[lo:hi], top_ps[lo:hi], min_ps[lo:hi], cap)
        if width is None:
            return filter_candidates(scale_logits(logits[lo:hi], temps[lo:hi]), *args)
        return fixed_width_candidates(scale_logits(logits[lo:hi], temps[lo:hi], sync_free=True), *args, width)

    if r <= step:
        return chunk(0, r)
    parts = [chunk(lo, lo + step) for lo in range(0, r, step)]
    k = max(c.ids.shape[1] for c in parts)   # adaptive widths differ per chunk; a fixed width pads nothing
    pad = lambda t, value: torch.nn.functional.pad(t, (0, k - t.shape[1]), value=value)   # noqa: E731
    return Candidates(ids=torch.cat([pad(c.ids, 0) for c in parts]),
                      scaled=torch.cat([pad(c.scaled, float("-inf")) for c in parts]),
                      counts=torch.cat([c.counts for c in parts]), truncated=torch.cat([c.truncated for c in parts]))


# A topk this wide (or wider) selects through a threshold on CPU; the sample takes every WIDE_STRIDE-th column
# and its k_s-th best value, k_s = k / WIDE_STRIDE * WIDE_MARGIN, leaves ~WIDE_MARGIN * k columns at or above it.
WIDE_TOPK = 256
WIDE_STRIDE = 16
WIDE_MARGIN = 1.5


def _wide_topk(x: torch.Tensor, k: int):
    """``torch.topk(x, k, sorted=True)`` by value for a wide k on CPU, exactly: every column at or above the
    threshold is kept, so the k best are among them (ties at the k-th value may pick other ids of equal value)."""
    r, v = x.shape
    if x.device.type != "cpu" or r == 0 or k < WIDE_TOPK or v < 8 * k:
        return torch.topk(x, k, dim=-1, sorted=True)
    sample = x[:, ::WIDE_STRIDE]
    ks = min(sample.shape[1], -(-k * WIDE_MARGIN // WIDE_STRIDE))
    t = torch.topk(sample, int(ks), dim=-1, sorted=False).values.amin(dim=1, keepdim=True)
    rows, cols = (x >= t).nonzero(as_tuple=True)   # a NaN is never kept (topk ranks it first; its row is NaN)
    count = torch.bincount(rows, minlength=r)
    if bool((count < k).any()):
        return torch.topk(x, k, dim=-1, sorted=True)
    w = int(count.max())
    pos = torch.arange(rows.numel(), device=x.device) - (count.cumsum(0) - count).index_select(0, rows)
    vals = torch.full((r, w), float("-inf"), dtype=x.dtype, device=x.device)
    ids = torch.zeros((r, w), dtype=torch.int64, device=x.device)
    vals[rows, pos] = x[rows, cols]
    ids[rows, pos] = cols
    top, at = torch.topk(vals, k, dim=-1, sorted=True)
    return top, ids.gather(1, at)


def _topk_width(probs: torch.Tensor, top_ks: torch.Tensor, min_ps: torch.Tensor, cap: int) -> int:
    """Columns the filter can keep at most, + 1 (to detect a cap truncation), over the batch; at most C + 1."""
    r, v = probs.shape
    if r == 0:
        return min(cap + 1, v)
    min_ps = min_ps.reshape(-1, 1).to(torch.float32)
    bound = top_ks.reshape(-1).to(torch.int64).clamp(max=v)
    with_min_p = min_ps.reshape(-1) > 0
    if bool(with_min_p.any()):
        p_max = probs.max(dim=1, keepdim=True).values
        kept = torch.count_nonzero(probs >= p_max * min_ps, dim=1)   # the filter's min-p comparison, same probs
        bound = torch.where(with_min_p, torch.minimum(bound, kept), bound)
    return int(min(cap + 1, v, int(bound.max()) + 1))


# First try of a filtered batch: a topk this wide. A filter that keeps fewer tokens in every row is then seen to
# end inside it, which is exact and skips the counting pass over the vocabulary (measured on Qwen's 151,936
# tokens x 64 rows: that pass cost more than the topk itself).
FIRST_WIDTH = 64


def _keep_prefix(top_probs: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor,
                 min_ps: torch.Tensor) -> torch.Tensor:
    """[R] how many of the sorted top columns pass every mask (the filter's kept prefix, capped by the width)."""
    width = top_probs.shape[1]
    csum = torch.cumsum(top_probs, dim=-1)
    rank = torch.arange(width, device=top_probs.device).unsqueeze(0)
    keep = rank < top_ks.reshape(-1, 1).to(torch.int64)
    # compare against fp32 top_p / min_p thresholds, as SGLang does (its tensors are fp32; bf16 probs promote)
    keep &= (csum - top_probs) <= top_ps.reshape(-1, 1).to(torch.float32)
    keep &= top_probs >= top_probs[:, :1] * min_ps.reshape(-1, 1).to(torch.float32)
    keep &= top_probs > 0
    keep[:, 0] = True  # the argmax always survives (SGLang: rank 0 passes every mask)
    # all masks are prefixes of the sorted order; cummin makes that exact even for pathological inputs
    return keep.to(torch.int8).cummin(dim=1).values.sum(dim=1)


def filter_candidates(scaled: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor, min_ps: torch.Tensor,
                      cap: int) -> Candidates:
    """Candidates of each row of temperature-scaled logits ``scaled`` [R, V] (fp32 or bf16).

    top_ks: int [R] (any k >= V = no limit, e.g. SGLang's TOP_K_ALL); top_ps, min_ps: float [R] (1.0 / 0.0 = off).
    Width of the ``topk``: FIRST_WIDTH when every row has a filter that may end before it (min-p, top-p or a
    top-k under it) and it does end there in every row; else the exact bound of ``_topk_width``.
    """
    r, v = scaled.shape
    probs = torch.softmax(scaled, dim=-1)
    top_ks, top_ps, min_ps = top_ks.reshape(-1), top_ps.reshape(-1), min_ps.reshape(-1)
    width = min(FIRST_WIDTH, cap + 1, v)
    filtered = (min_ps > 0) | (top_ps < 1) | (top_ks < width)
    wanted = None
    def sorted_prefix(w: int):
        top_scaled, top_ids = _wide_topk(scaled, w)
        return top_scaled, top_ids, _keep_prefix(probs.gather(1, top_ids), top_ks, top_ps, min_ps)

    if r and width < min(cap + 1, v) and bool(filtered.all()):
        top_scaled, top_ids, wanted = sorted_prefix(width)
        if bool((wanted >= width).any()):   # some row's filter keeps the whole first try: size it exactly
            wanted = None
    if wanted is None:
        width = _topk_width(probs, top_ks, min_ps, cap)
        top_scaled, top_ids, wanted = sorted_prefix(width)
    rank = torch.arange(width, device=scaled.device).unsqueeze(0)
    counts = wanted.clamp(max=cap)
    truncated = wanted > cap

    k = int(counts.max().item()) if r else 0
    ids = top_ids[:, :k]
    cand = top_scaled[:, :k].float()
    valid = rank[:, :k] < counts.unsqueeze(1)
    return Candidates(ids=ids, scaled=cand.masked_fill(~valid, float("-inf")), counts=counts, truncated=truncated)


def fixed_width_candidates(scaled: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor, min_ps: torch.Tensor,
                           cap: int, width: int) -> Candidates:
    """``filter_candidates`` with the ``topk`` width given (a ``width_bucket``) and no host read: [R, min(width, cap)]
    columns whatever the rows keep. Exact when the width bounds every row's filter (a top-k below it) or is the
    cap + 1 (then ``truncated`` says which rows the cap cut)."""
    r, v = scaled.shape
    width = min(width, v)
    probs = torch.softmax(scaled, dim=-1)
    top_scaled, top_ids = torch.topk(scaled, width, dim=-1, sorted=True)
    wanted = _keep_prefix(probs.gather(1, top_ids), top_ks, top_ps, min_ps)
    k = min(width, cap)
    counts = wanted.clamp(max=cap)
    valid = torch.arange(k, device=scaled.device).unsqueeze(0) < counts.unsqueeze(1)
    return Candidates(ids=top_ids[:, :k], scaled=top_scaled[:, :k].float().masked_fill(~valid, float("-inf")),
                      counts=counts, truncated=wanted > cap)
