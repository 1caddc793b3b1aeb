"""``tensor_digest``: a short, dtype-aware identity of a tensor's values (which LM head ESamp reads)."""
from __future__ import annotations

import hashlib

import torch


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of the shape, the dtype and the raw bytes; 16 hex digits."""
    x = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{tuple(x.shape)}:{x.dtype}".encode())
    h.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()[:16]
