"""Counter-based Gumbel noise for seeded requests: the draw for (seed, stream, position, rank) is a pure function.

A seeded ESamp row must give the same token whatever else is in the batch and whatever the global RNG did, so its
noise cannot come from a generator's state. Each value is a 32-bit integer hash (the murmur3 finaliser, chained over
the four coordinates) turned into a uniform u in (0, 1) and then into ``-log(-log u)``:
  seed      the request's ``sampling_seed`` (64-bit, split into two 32-bit words)
  stream    the sibling index within the request's group (so the n samples of one seeded request differ)
  position  the index in the sequence of the token being drawn (retraction-proof: a recomputed step redraws the same)
  rank      the candidate's rank in the LLM's order (as for unseeded noise, ``algo.rule.sampling``)
Plain torch int64 arithmetic, masked to 32 bits after every multiply (the product of two 32-bit words wraps in
int64 but its low 32 bits are exact), so CPU and CUDA give the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def _mix(h: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
    return _fmix32((h ^ ((word & _MASK) + _GOLDEN)) & _MASK)


def hashed_uniform(seeds: torch.Tensor, streams: torch.Tensor, positions: torch.Tensor, k: int) -> torch.Tensor:
    """[R, k] float64 uniforms strictly inside (0, 1), one per (row, rank)."""
    seeds = seeds.reshape(-1, 1).to(torch.int64)
    h = _mix(torch.zeros_like(seeds), seeds)
    h = _mix(h, seeds >> 32)
    h = _mix(h, streams.reshape(-1, 1).to(torch.int64))
    h = _mix(h, positions.reshape(-1, 1).to(torch.int64))
    ranks = torch.arange(k, dtype=torch.int64, device=seeds.device).reshape(1, -1)
    h = _mix(h.expand(-1, k), ranks.expand(h.shape[0], -1))
    return (h.to(torch.float64) + 0.5) / 4294967296.0


def seeded_gumbel(seeds: torch.Tensor, streams: torch.Tensor, positions: torch.Tensor, k: int) -> torch.Tensor:
    """[R, k] fp32 standard Gumbel draws for the rows' coordinates."""
    u = hashed_uniform(seeds, streams, positions, k)
    return u.log().neg().log().neg().to(torch.float32)


@dataclass
class SeededRows:
    """Which rows of a step draw seeded noise, and their coordinates (all [S], on the step's device)."""
    rows: torch.Tensor        # int64 indices into the step's rows
    seeds: torch.Tensor       # int64
    streams: torch.Tensor     # int64
    positions: torch.Tensor   # int64

    def overlay(self, noise: torch.Tensor) -> torch.Tensor:
        """``noise`` [R, k] with the seeded rows replaced by their hashed draws (in place)."""
        if self.rows.numel():
            noise[self.rows] = seeded_gumbel(self.seeds, self.streams, self.positions, noise.shape[1])
        return noise
