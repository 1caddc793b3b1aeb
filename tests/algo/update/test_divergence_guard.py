"""divergence_guard.py: the rule (min_steps, loss factor over the baseline floored by the energy, norm factor, each
check off at 0) and the baselines (only an updated step enters them, bias-corrected)."""
import torch

from sglang_esamp.algo.update.divergence_guard import BASELINE_DECAY, ENERGY_FLOOR, DivergenceGuard, observed


def base_after(losses, energies):
    base = torch.zeros(1, 4)
    for loss, energy in zip(losses, energies):
        base = observed(base, torch.tensor([True]), torch.tensor([loss]), torch.tensor([energy]))
    return base


def test_baseline_is_a_bias_corrected_ema_of_updated_steps():
    base = base_after([2.0, 4.0], [10.0, 10.0])
    d = BASELINE_DECAY
    want = (d * (1 - d) * 2.0 + (1 - d) * 4.0) / (1 - d * d)
    assert abs(float(base[0, 0] / base[0, 2]) - want) < 1e-6
    assert abs(float(base[0, 1] / base[0, 2]) - 10.0) < 1e-5 and base[0, 3] == 2
    kept = observed(base, torch.tensor([False]), torch.tensor([1e9]), torch.tensor([1e9]))
    assert torch.equal(kept, base)                      # a rejected or skipped step never enters


def test_loss_factor_fires_over_the_floored_baseline_after_min_steps():
    guard = DivergenceGuard(factor=100.0, norm_factor=0.0, min_steps=3)
    base = base_after([1.0] * 3, [1.0] * 3)             # loss baseline 1, energy floor 0.2: the baseline binds
    norms = torch.ones(1)
    assert not guard.diverges(base, torch.tensor([99.0]), norms, norms)
    assert guard.diverges(base, torch.tensor([101.0]), norms, norms)
    assert not guard.diverges(base_after([1.0] * 2, [1.0] * 2), torch.tensor([1e6]), norms, norms)   # too young
    fitted = base_after([1e-4] * 3, [1.0] * 3)          # a fitted slot: the energy floor binds, not 1e-4
    assert not guard.diverges(fitted, torch.tensor([100 * ENERGY_FLOOR * 0.99]), norms, norms)
    assert guard.diverges(fitted, torch.tensor([100 * ENERGY_FLOOR * 1.01]), norms, norms)


def test_norm_factor_and_disabled_checks():
    base = base_after([1.0] * 5, [1.0] * 5)
    loss = torch.tensor([1e9])
    guard = DivergenceGuard(factor=0.0, norm_factor=10.0, min_steps=5)
    assert not guard.diverges(base, loss, torch.tensor([9.0]), torch.ones(1))
    assert guard.diverges(base, loss, torch.tensor([11.0]), torch.ones(1))
    off = DivergenceGuard(factor=0.0, norm_factor=0.0)
    assert not off.enabled and not off.diverges(base, loss, torch.tensor([1e9]), torch.ones(1))
