"""ESampCore: one-step staleness, row handling, slots handed out, counters (groups and sessions: test_group_table)."""
import json
import threading
import time

import pytest
import torch

from sglang_esamp.algo.distiller.bank import DistillerBank
from sglang_esamp.algo.update.slot_optimizer import OptimizerSpec
from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.rule.inputs import RuleInputs
from sglang_esamp.algo.update.job import first_row_per_slot
from sglang_esamp.algo.distiller.distiller import Distiller
from sglang_esamp.algo.update.job import Update

H, V = 32, 200


def _core(**kw):
    cfg = ESampConfig(**{"width": 16, "bank_slots": 4, "session_max": 2, "session_ttl_s": 10.0, **kw})
    w = torch.randn(V, H, generator=torch.Generator().manual_seed(0)) * 0.3
    return ESampCore(cfg, H, w, None, "cpu")


def _rows(r, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, H, generator=g), 4 * torch.randn(r, H, generator=g)


def test_prediction_is_exactly_one_step_stale():
    core = _core()
    slot = core.acquire_slot()
    shadow = Distiller(core.shape)                        # an independent replica trained with torch.optim
    shadow.load_export_state(core.bank.slot_state(slot))
    opt = torch.optim.Adam(shadow.parameters(), lr=4e-4, eps=1e-4)
    ids = torch.full((3,), slot)
    for t in range(5):
        src, tgt = _rows(3, t)
        h_hat = core.predict(src, ids)                    # step t: weights after the update of step t-1
        torch.testing.assert_close(h_hat, shadow(src).detach(), rtol=1e-5, atol=1e-5)
        core.train(Update(src, tgt, ids))
        opt.zero_grad()
        (tgt - shadow(src)).pow(2).sum(1).mean().backward()
        torch.nn.utils.clip_grad_norm_(shadow.parameters(), 0.5)
        opt.step()
        after = core.predict(src, ids)
        assert not torch.equal(after, h_hat)                 # the update landed before the next predict
    assert core.stats()["updates"] == 5


def test_rows_without_a_slot_are_ignored():
    core = _core()
    a = core.acquire_slot()
    src, tgt = _rows(4, 0)
    ids = torch.tensor([a, -1, a, -1])
    h = core.predict(src, ids)
    assert torch.equal(h[1], torch.zeros(H)) and torch.equal(h[3], torch.zeros(H))
    torch.testing.assert_close(h[0::2], core.bank.predict(src[0::2], ids[0::2]))
    core.train(Update(src, tgt, ids))
    assert core.last_train_result.rows == [2]
    core.train(Update(src, tgt, torch.full((4,), -1)))            # nothing to train: no update, nothing counted
    assert core.stats()["updates"] == 1


def test_first_per_group_trains_one_row_per_slot():
    core = _core(train_rows="first_per_group")
    a, b = core.acquire_slot(), core.acquire_slot()
    src, tgt = _rows(5, 1)
    ids = torch.tensor([b, a, a, b, -1])
    twin = DistillerBank(core.shape, 4, OptimizerSpec(), seed=0)
    twin.acquire(), twin.acquire()
    core.train(Update(src, tgt, ids))
    twin.train_step(src[:2], tgt[:2], ids[:2])
    assert core.last_train_result.rows == [1, 1]
    for k in core.bank.params:
        assert torch.equal(core.bank.params[k], twin.params[k])
    assert first_row_per_slot([3, 3, 0, 3, 0, 1, -1, 1]) == [3, -1, 0, -1, -1, 1, -1, -1]


def test_counters_snapshot_is_json_and_consistent_while_training():
    core = _core()
    a = core.acquire_slot()
    stop = threading.Event()
    seen, errors = [], []

    def reader():
        while not stop.is_set():
            try:
                snap = core.stats()
                json.dumps(snap)
                seen.append(snap["updates"])
            except Exception as e:  # noqa: BLE001 -- any failure fails the test below
                errors.append(e)
            time.sleep(0.001)  # a stats endpoint polls; a busy loop would only starve the step of the GIL

    th = threading.Thread(target=reader)
    th.start()
    w = core.head.weight
    for t in range(20):
        src, tgt = _rows(3, t)
        ids = torch.full((3,), a)
        logits = tgt @ w.T
        core.sample(RuleInputs(logits, torch.ones(3), torch.full((3,), 1 << 30), torch.full((3,), 0.9),
                               torch.zeros(3), torch.full((3,), 0.25), h_src=src, slots=ids),
                    generator=torch.Generator().manual_seed(t), record=True)
        core.train(Update(src, tgt, ids))
    stop.set()
    th.join()
    assert not errors and seen and seen == sorted(seen)
    snap = core.stats()
    assert snap["updates"] == 20 and snap["rows_trained"] == 60 and snap["finite_losses"] == 20
    assert snap["candidate_rows_reweighted"] == 60 and snap["candidates_per_row_max"] >= 2
    assert snap["mean_novelty"] > 0 and snap["mean_loss"] > 0 and snap["last_loss"] is not None
    g = core.slot_stats(a)
    assert g["steps"] == 20 and g["rows_trained"] == 60 and g["mean_novelty"] > 0


def test_nonfinite_rows_are_dropped_and_counted_through_the_core():
    core = _core()
    a, b = core.acquire_slot(), core.acquire_slot()
    src, tgt = _rows(4, 0)
    tgt[0, 0] = float("inf")
    core.train(Update(src, tgt, torch.tensor([a, b, b, a])))
    snap = core.stats()
    assert snap["rows_dropped_nonfinite"] == 1 and snap["nan_resets"] == 0 and snap["divergence_resets"] == 0
    assert snap["updates"] == 1 and snap["rows_trained"] == 3 and snap["finite_losses"] == 2
    assert core.slot_stats(a)["rows_dropped_nonfinite"] == 1 and core.slot_stats(a)["steps"] == 1
    # a slot whose only row is non-finite is skipped: no loss, no update, no reset
    src[1, 2] = float("nan")
    core.train(Update(src[:2], tgt[:2], torch.tensor([a, b])))
    snap = core.stats()
    assert snap["rows_dropped_nonfinite"] == 3 and snap["nonfinite_losses"] == 0 and snap["nan_resets"] == 0
    assert snap["updates"] == 1 and core.slot_stats(b)["steps"] == 1


def test_divergence_reset_is_counted_through_the_core():
    """The config's guard reaches the bank; a target blow-up after min_steps resets that group's slot only, and its
    huge loss stays out of mean_loss. With divergence_factor 0 and divergence_norm_factor 0 nothing fires."""
    for factor, norm_factor, fires in ((100.0, 10.0, True), (0.0, 0.0, False)):
        core = _core(divergence_factor=factor, divergence_norm_factor=norm_factor, divergence_min_steps=5)
        a, b = core.acquire_slot(), core.acquire_slot()
        ids = torch.tensor([a, a, b, b])
        for t in range(8):
            src, tgt = _rows(4, t)
            core.train(Update(src, tgt * 0.1 + src, ids))
        src, tgt = _rows(4, 8)
        tgt = tgt * 0.1 + src
        tgt[:2] *= 1e3
        core.train(Update(src, tgt, ids))
        snap = core.stats()
        res = core.last_train_result
        assert snap["divergence_resets"] == int(fires) and snap["nan_resets"] == 0
        assert res.diverged_slots == ([a] if fires else []) and res.updated == [not fires, True]
        assert core.slot_stats(a)["divergence_resets"] == int(fires)
        assert core.slot_stats(a)["steps"] == 8 + (not fires) and core.slot_stats(b)["steps"] == 9
        assert (snap["mean_loss"] < 1e3) == fires


def test_describe_reports_memory():
    core = _core()
    text = core.describe()
    assert "bank memory" in text and "4 slots" in text


def test_warm_start_file_is_loaded(tmp_path):
    from sglang_esamp.algo.reference.tap_spec import TAP_PRESETS
    from sglang_esamp.algo.distiller.warm_start import WarmStartMismatch, save_warm_start

    core = _core()
    d = Distiller(core.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d.params["blocks__0__down"].normal_()
    path = tmp_path / "warm.safetensors"
    meta = {"model": {"model_id": "test", "config_sha256": "0"}, "taps": {"preset": "paper",
            **TAP_PRESETS["paper"].to_dict()}, "shape": core.shape.to_dict(), "preset": "paper"}
    save_warm_start(path, d.export_state(), meta)
    warm = _core(warm_start=str(path))
    s = warm.acquire_slot()
    x, _ = _rows(3, 0)
    torch.testing.assert_close(warm.predict(x, torch.full((3,), s)), d(x).detach())
    with pytest.raises(WarmStartMismatch, match="shape.width"):
        _core(warm_start=str(path), width=8)
    with pytest.raises(WarmStartMismatch, match="taps.source"):
        _core(warm_start=str(path), taps="tllm")
