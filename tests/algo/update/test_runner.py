"""The overlapped update keeps the staleness contract: async and serial give the same tokens and the same distiller
weights step for step (fixed noise), the update really runs off the caller's thread, and its errors surface."""
import threading

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.rule.inputs import RuleInputs
from sglang_esamp.algo.update.runner import SerialUpdateRunner, ThreadUpdateRunner
from sglang_esamp.algo.update.job import Update

H, V, R = 24, 64, 6


def _run(mode, steps=8):
    cfg = ESampConfig(width=16, bank_slots=3, update_mode=mode, lr=1e-2)
    w = torch.randn(V, H, generator=torch.Generator().manual_seed(0))
    core = ESampCore(cfg, H, w, None, "cpu")
    a, b, c = core.acquire_slot(), core.acquire_slot(), core.acquire_slot()
    slots = torch.tensor([a, a, b, b, c, c])
    g = torch.Generator().manual_seed(1)
    tokens, weights = [], []
    for _ in range(steps):
        src, tgt = torch.randn(R, H, generator=g), 3 * torch.randn(R, H, generator=g)
        logits = src @ w.T
        noise = -torch.empty(R, V).exponential_(generator=g).log()
        core.wait_for_update()
        weights.append({k: v.clone() for k, v in core.bank.params.items()})   # what the prediction reads
        _, out = core.sample(RuleInputs(logits, torch.ones(R), torch.full((R,), V), torch.ones(R), torch.zeros(R),
                                        torch.full((R,), 1.0), h_src=src, slots=slots, noise=noise))
        tokens.append(out.tokens.tolist())
        core.train(Update(src, tgt, slots))
    assert core.stats()["updates"] == steps
    return tokens, weights, core


def test_async_and_serial_give_the_same_tokens_and_weights_step_for_step():
    t_async, w_async, core = _run("async")
    t_serial, w_serial, _ = _run("serial")
    assert isinstance(core.runner, ThreadUpdateRunner)
    assert t_async == t_serial
    for wa, ws in zip(w_async, w_serial):
        assert all(torch.equal(wa[k], ws[k]) for k in wa)
    assert any(not torch.equal(w_async[0][k], w_async[-1][k]) for k in w_async[0])   # the distiller did move


def test_submit_returns_before_the_update_runs_and_wait_waits_for_it():
    runner = ThreadUpdateRunner(torch.device("cpu"))
    gate, ran_on = threading.Event(), []

    def update():
        gate.wait(timeout=10)
        ran_on.append(threading.current_thread().name)
        return "done"
    runner.submit(update)
    assert runner.pending and not ran_on          # the caller is free while the update waits
    gate.set()
    runner.wait()
    assert ran_on == ["esamp-update"] and runner.last_result == "done" and not runner.pending
    runner.close()


def test_an_update_error_is_raised_at_the_next_wait():
    runner = ThreadUpdateRunner(torch.device("cpu"))
    runner.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        runner.wait()
    runner.submit(lambda: 7)                      # the runner keeps working afterwards
    runner.wait()
    assert runner.last_result == 7


@pytest.mark.parametrize("make", [lambda: ThreadUpdateRunner(torch.device("cpu")), SerialUpdateRunner])
def test_kept_results_are_taken_once_on_the_callers_thread(make):
    runner = make()
    runner.submit(lambda: "skip")                 # not kept: nobody asked for it
    runner.submit(lambda: "a", keep=True)
    runner.submit(lambda: "b", keep=True)
    runner.wait()
    assert runner.take_results() == ["a", "b"] and runner.take_results() == []
    runner.close()


def test_serial_runner_runs_inline():
    r = SerialUpdateRunner()
    r.submit(lambda: 3)
    assert r.last_result == 3


def test_auto_mode_is_serial_on_cuda_and_async_on_cpu_only_with_a_core_to_spare(monkeypatch):
    from sglang_esamp.algo.update import runner as update_runner
    from sglang_esamp.algo.update.runner import resolve_mode

    assert resolve_mode("auto", torch.device("cuda")) == "serial"     # measured on an H200 (eager forward)
    monkeypatch.setattr(update_runner, "_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert resolve_mode("auto", torch.device("cpu")) == "async"     # one forward thread, a core for the worker
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert resolve_mode("auto", torch.device("cpu")) == "serial"    # the forward takes every core
    assert resolve_mode("async", torch.device("cpu")) == "async"
    assert resolve_mode("serial", torch.device("cuda")) == "serial"
    assert resolve_mode("async", torch.device("cuda")) == "async"


def test_the_gpu_check_async_script_runs_on_cpu_and_its_modes_agree(tmp_path):
    """benchmarks/gpu/async_update_check.py's dry run (its timings are for a GPU, gpu/check.sh step 3): the no-ESamp,
    serial and async loops all ran, both ESamp modes trained every step and drew the same tokens with the same
    final weights."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu" / "async_update_check.py"
    spec = importlib.util.spec_from_file_location("async_update_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--dry-run", "--out", str(tmp_path / "auc")]) == 0
    out = json.loads((tmp_path / "auc_dry.json").read_text())
    assert set(out["modes"]) == {"off", "serial", "async"}
    assert out["same_tokens"] and out["same_final_weights"]
    steps = out["settings"]["steps"] + 3
    assert out["modes"]["serial"]["updates"] == out["modes"]["async"]["updates"] == steps
    assert all(out["modes"][m]["ms_per_step"] > 0 for m in out["modes"])
