"""Training data in RAM: a held-out split by corpus document and deterministic per-rank batches.

The split is by document, not by row: rows of one answer are strongly correlated, so a row split would leak.
Batches are a function of (seed, step, rank) only, so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .shards import load_pairs


def is_val_doc(doc: torch.Tensor, val_fraction: float) -> torch.Tensor:
    # Knuth multiplicative hash: documents spread evenly whatever their order in the corpus
    return ((doc * 2654435761) % (1 << 32)).double() / (1 << 32) < val_fraction


@dataclass
class PairData:
    train_src: torch.Tensor   # [N, H] float16/bfloat16
    train_tgt: torch.Tensor
    val_src: torch.Tensor
    val_tgt: torch.Tensor
    manifest_rows: int

    @property
    def hidden(self) -> int:
        return self.train_src.shape[1]


def load_split(recording: str, val_fraction: float, max_rows=None, max_val_rows=None) -> PairData:
    d = load_pairs(recording, max_rows=max_rows)
    val = is_val_doc(d["doc"], val_fraction)
    if val.all() or not val.any():
        raise ValueError(f"--val-fraction {val_fraction}: the split leaves no {'train' if val.all() else 'val'} rows "
                         f"({int(d['doc'].unique().numel())} documents in the recording)")
    vi = val.nonzero(as_tuple=True)[0]
    if max_val_rows is not None:
        vi = vi[:max_val_rows]
    ti = (~val).nonzero(as_tuple=True)[0]
    return PairData(d["src"][ti], d["tgt"][ti], d["src"][vi], d["tgt"][vi], len(d["doc"]))


def batch_indices(n: int, batch: int, step: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Rows for one micro-batch: epoch-wise permutations; each rank takes its own slice of the global batch."""
    global_batch = batch * world
    per_epoch = max(n // global_batch, 1)
    epoch, k = divmod(step, per_epoch)
    perm = _permutation(n, seed, epoch)
    start = k * global_batch + rank * batch
    idx = perm[start:start + batch]
    if len(idx) < batch:  # fewer rows than one global batch: sample with wrap-around
        idx = perm[torch.arange(start, start + batch) % n]
    return idx


@lru_cache(maxsize=2)
def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
