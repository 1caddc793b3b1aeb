"""The divergence guard both update paths share (bank.py's docstring gives the rule and its reasons): per slot a
baseline of its own loss, compared as at least ``ENERGY_FLOOR`` x its target energy, and the check of a step
against it. Device tensors only -- the sync-free step reads nothing back -- and the reference reads the verdict in
its one read of the per-slot stats.

A slot's baseline is a row of ``DistillerBank.device_baseline`` [S, 4]: the loss EMA sum, the energy EMA sum, the
EMA weight (bias correction: value = sum / weight) and the updates since (re)initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# the loss baseline's EMA decay (~20-step memory): short enough to follow a slot's loss down while it fits its group,
# long enough that one novel token barely moves it
BASELINE_DECAY = 0.95
# the loss baseline is compared as at least this share of the slot's target energy (EMA of mean ||h_tgt||^2, the
# loss of predicting 0). A slot that fits a repetition (a looping sample) drives its loss ~1000x below the energy;
# the tokens that break the loop then cost 80-260x that baseline (measured, SmolLM2), though nothing diverged: they
# cost at most ~3x the energy (a seen target is at most ~4x the energy away from a new one of the same scale), far
# below factor (100) x 0.2 = 20x. Diverged steps measured 120-1000x the energy, so the floor costs no detection.
ENERGY_FLOOR = 0.2
LOSS_SUM, ENERGY_SUM, WEIGHT, SEEN = range(4)


@dataclass(frozen=True)
class DivergenceGuard:
    """When a finite step resets its slot (bank.py's docstring); ``ESampConfig.divergence_*`` gives the server's
    values and their reasons. A factor of 0 disables that check."""
    factor: float = 100.0        # loss > factor x the slot's loss baseline
    norm_factor: float = 10.0    # mean ||h_hat|| > norm_factor x mean ||h_tgt|| over the slot's rows
    min_steps: int = 5           # updates since (re)initialisation before either check applies

    @property
    def enabled(self) -> bool:
        return self.factor > 0 or self.norm_factor > 0

    def diverges(self, base: torch.Tensor, loss: torch.Tensor, pred_norm: torch.Tensor,
                 tgt_norm: torch.Tensor) -> torch.Tensor:
        """[A] bool: the step (per-slot ``loss`` and mean row norms of h_hat / h_tgt) is over the guard of slots with
        baselines ``base`` [A, 4]."""
        out = torch.zeros_like(loss, dtype=torch.bool)
        seen = base[:, SEEN]
        if self.factor > 0:
            weight = base[:, WEIGHT].clamp(min=1e-30)
            baseline = torch.maximum(base[:, LOSS_SUM] / weight, ENERGY_FLOOR * base[:, ENERGY_SUM] / weight)
            out |= (seen > 0) & (loss > self.factor * baseline)
        if self.norm_factor > 0:
            out |= pred_norm > self.norm_factor * tgt_norm
        return out & (seen >= self.min_steps)


def observed(base: torch.Tensor, updated: torch.Tensor, loss: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """The baselines [A, 4] after a step: an updated slot's step enters them, a rejected or skipped one never does."""
    d = BASELINE_DECAY
    new = torch.stack([d * base[:, LOSS_SUM] + (1 - d) * loss, d * base[:, ENERGY_SUM] + (1 - d) * energy,
                       d * base[:, WEIGHT] + (1 - d), base[:, SEEN] + 1], dim=1)
    return torch.where(updated.unsqueeze(1), new, base)
