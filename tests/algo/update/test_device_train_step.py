"""device_train_step.py against DistillerBank.train_step (the reference): same weights, moments, step counts,
per-slot results and resets over several steps -- dropped rows, padding slots, a diverging slot, a non-finite
slot -- and no host read in the step."""
import copy
import math

import pytest
import torch

from sglang_esamp.algo.distiller.bank import DistillerBank
from sglang_esamp.algo.update.divergence_guard import DivergenceGuard
from sglang_esamp.algo.update.slot_optimizer import OptimizerSpec
from sglang_esamp.algo.update.device_train_step import DeviceTrainStep, bucket, fold, padded_slots
from sglang_esamp.algo.distiller.distiller import DistillerShape
from tests.host_reads import no_host_reads

H = 16
SHAPE = DistillerShape(hidden=H, blocks=2, width=24)


def twin_banks(kind="adam", slots=6, guard=DivergenceGuard(factor=100.0, norm_factor=10.0, min_steps=2)):
    ref = DistillerBank(SHAPE, slots=slots, optimizer=OptimizerSpec(kind=kind, lr=1e-2), seed=3, fused_adam=False,
                        guard=guard)
    for _ in range(5):
        ref.acquire(warm=False)
    return ref, copy.deepcopy(ref)


def rows_for(step, gen):
    """Slot 0: 3 rows, slot 2: 2 (one NaN at step 3, both at step 4), slot 4: 1 (its target x1e4 at step 5: a divergence);
    two rows with no slot. Slots 1 and 3 are acquired but not in the batch."""
    sid = torch.tensor([0, 2, -1, 0, 4, 2, 0, -1])
    src = torch.randn(8, H, generator=gen)
    tgt = src.roll(1, dims=1) * 0.5 + 0.1 * torch.randn(8, H, generator=gen)
    if step == 3:            # one of slot 2's rows dropped: it trains on the other
        src[5, 2] = float("nan")
    if step == 4:            # both dropped: slot 2 is skipped, its weights and moments kept
        src[1, 0] = tgt[5, 3] = float("inf")
    if step == 5:
        tgt[4] *= 1e4
    return src, tgt, sid


def run_device_step(dev_step, bank, src, tgt, sid, a_size=4):
    present = sorted({int(s) for s in sid.tolist() if s >= 0})
    counts = [int((sid == s).sum()) for s in present]
    idx = torch.tensor(padded_slots(present, a_size, bank.num_slots))
    stats = dev_step.step(src, tgt, sid, idx, bucket(max(counts)))
    return fold(bank, stats.tolist())


def assert_banks_match(ref, dev):
    for name in ref.params:
        torch.testing.assert_close(dev.params[name], ref.params[name], rtol=1e-5, atol=1e-6, msg=name)
        if ref.exp_avg:
            torch.testing.assert_close(dev.exp_avg[name], ref.exp_avg[name], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(dev.exp_avg_sq[name], ref.exp_avg_sq[name], rtol=1e-5, atol=1e-9)
    assert torch.equal(dev.steps, ref.steps)
    torch.testing.assert_close(dev.device_baseline, ref.device_baseline, rtol=1e-5, atol=1e-7)   # the guard's


def assert_results_match(got, want):
    assert got.slots == want.slots and got.rows == want.rows and got.dropped_rows == want.dropped_rows
    assert got.updated == want.updated
    assert got.reset_slots == want.reset_slots and got.diverged_slots == want.diverged_slots
    for a, b in zip(got.losses + got.novelty_sums, want.losses + want.novelty_sums):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6)
    for a, b in zip(got.grad_norms, want.grad_norms):
        assert (not math.isfinite(b) and math.isnan(a)) or a == pytest.approx(b, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_the_device_step_is_the_reference_step(kind):
    ref, dev = twin_banks(kind)
    dev_step = DeviceTrainStep(dev)
    gen = torch.Generator().manual_seed(0)
    untouched = {n: t[[1, 3, 5]].clone() for n, t in dev.params.items()}
    seen = set()
    for step in range(8):
        src, tgt, sid = rows_for(step, gen)
        want = ref.train_step(src[sid >= 0], tgt[sid >= 0], sid[sid >= 0])
        got = run_device_step(dev_step, dev, src, tgt, sid)
        assert_results_match(got, want)
        assert_banks_match(ref, dev)
        seen.update("dropped" for d in got.dropped_rows if d)
        seen.update("diverged" for _ in got.diverged_slots)
    assert seen == {"dropped", "diverged"}          # the run did exercise both
    # slots outside the batch (acquired, padding, free) are bit-identical
    for n, t in dev.params.items():
        assert torch.equal(t[[1, 3, 5]], untouched[n])


def test_a_non_finite_slot_is_reset_like_the_reference():
    ref, dev = twin_banks()
    for bank in (ref, dev):
        bank.params[next(iter(bank.params))][2].fill_(float("inf"))
    gen = torch.Generator().manual_seed(1)
    src, tgt, sid = rows_for(0, gen)
    want = ref.train_step(src[sid >= 0], tgt[sid >= 0], sid[sid >= 0])
    got = run_device_step(DeviceTrainStep(dev), dev, src, tgt, sid)
    assert want.reset_slots == [2]
    assert_results_match(got, want)
    assert_banks_match(ref, dev)
    assert torch.isfinite(dev.params[next(iter(dev.params))][2]).all()


def test_the_device_step_reads_nothing_back():
    _, dev = twin_banks()
    gen = torch.Generator().manual_seed(2)
    src, tgt, sid = rows_for(5, gen)
    idx = torch.tensor(padded_slots([0, 2, 4], 4, dev.num_slots))
    before = {n: t.clone() for n, t in dev.params.items()}
    with no_host_reads() as seen:
        stats = DeviceTrainStep(dev).step(src, tgt, sid, idx, 4)
    assert "index_copy_" in seen and ("mm" in seen or "bmm" in seen)
    assert stats.shape == (4, 7)
    assert any(not torch.equal(before[n], t) for n, t in dev.params.items())     # it did train


def test_buckets_and_padding():
    assert [bucket(n) for n in (0, 1, 2, 3, 4, 5, 9)] == [1, 1, 2, 4, 4, 8, 16]
    assert padded_slots([4, 1], 4, 6) == [4, 1, 0, 2]
    with pytest.raises(ValueError):
        padded_slots([0, 1, 2], 2, 6)
    with pytest.raises(ValueError):
        padded_slots([0], 8, 6)
