"""Reference predictors for the held-out loss, all in the training loss's units (per-row ‖h_tgt − ĥ‖², mean).

identity   ĥ = h_src: where a fresh (random-init) distiller starts, DESIGN §1.
mean       ĥ = mean of h_tgt over the training rows: the best constant.
affine     ĥ = [h_src, 1] W, least squares on (a sample of) the training rows: what a closed-form linear map gets,
           so a distiller that does not beat it has not learned anything a matrix could not.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch


def row_sq_err(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Per-row squared L2 error summed over H (fp32)."""
    return (pred.float() - tgt.float()).pow(2).sum(-1)


def mean_loss(predict: Callable[[torch.Tensor], torch.Tensor], src: torch.Tensor, tgt: torch.Tensor,
              chunk: int = 8192) -> float:
    total = 0.0
    for i in range(0, len(src), chunk):
        total += float(row_sq_err(predict(src[i:i + chunk].float()), tgt[i:i + chunk]).double().sum())
    return total / len(src)


def fit_affine(src: torch.Tensor, tgt: torch.Tensor, ridge: float = 1e-4, max_rows: int = 50_000) -> torch.Tensor:
    """[H+1, H] least-squares map (fp64 normal equations with a tiny ridge for conditioning)."""
    x = torch.cat([src[:max_rows].double(), torch.ones(min(len(src), max_rows), 1, dtype=torch.float64)], 1)
    y = tgt[:max_rows].double()
    gram = x.T @ x
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ y)


def baseline_losses(train_src, train_tgt, val_src, val_tgt) -> Dict[str, float]:
    mu = train_tgt.double().mean(0).float()
    w = fit_affine(train_src, train_tgt).float()
    return {
        "identity": mean_loss(lambda x: x, val_src, val_tgt),
        "mean": mean_loss(lambda x: mu.expand_as(x), val_src, val_tgt),
        "affine": mean_loss(lambda x: x @ w[:-1] + w[-1], val_src, val_tgt),
    }
