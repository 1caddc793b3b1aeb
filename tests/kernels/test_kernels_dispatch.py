"""Dispatch: which implementation runs, the counters, and the auto / torch / triton switch."""
import pytest
import torch

from esamp_kernels import dispatch, ops
from esamp_kernels.candidate_ref import candidate_novelty_logits_ref
from esamp_kernels.grouped_forward_torch import grouped_distiller_forward_torch
from kernels_testutil import assert_candidate_close, candidate_inputs, make_bank

CAND_KEYS = ("h_hat", "cand_ids", "counts", "cand_scaled", "lm_head_weight", "lm_head_bias", "beta", "dist_coef")


@pytest.fixture
def cand():
    gen = torch.Generator().manual_seed(0)
    inp = candidate_inputs(3, 20, torch.randn(500, 64, generator=gen) * 0.05, torch.float32, gen=gen, with_bias=True)
    return [inp[k] for k in CAND_KEYS], inp


@pytest.fixture
def fwd():
    gen = torch.Generator().manual_seed(1)
    bank = make_bank(3, 64, 32, 2, True, torch.float32, gen=gen)
    return torch.randn(5, 64, generator=gen), torch.tensor([2, 0, 2, 1, 0]), bank


def zero():
    return {"triton": 0, "torch": 0}


def test_auto_on_cpu_runs_torch_and_counts_it(cand, fwd):
    args, _ = cand
    out = ops.candidate_novelty_logits(*args)
    assert torch.equal(out, candidate_novelty_logits_ref(*args))
    x, ids, bank = fwd
    y = ops.grouped_distiller_forward(x, ids, bank, 2, True)
    y = ops.grouped_distiller_forward(x, ids, bank, 2, True)
    assert torch.equal(y, grouped_distiller_forward_torch(x, ids, bank, 2, True))
    assert ops.kernel_mode() == "auto"
    assert ops.kernel_counters() == {"candidate_novelty": {"triton": 0, "torch": 1},
                                     "grouped_forward": {"triton": 0, "torch": 2}}


def test_forced_triton_under_interpreter_matches_torch(cand, fwd):
    args, inp = cand
    ops.set_kernel_mode("triton")
    out = ops.candidate_novelty_logits(*args)
    assert_candidate_close(out, candidate_novelty_logits_ref(*args), inp)
    x, ids, bank = fwd
    y = ops.grouped_distiller_forward(x, ids, bank, 2, True)
    torch.testing.assert_close(y, grouped_distiller_forward_torch(x, ids, bank, 2, True), rtol=2e-5, atol=2e-5)
    assert ops.kernel_counters() == {"candidate_novelty": {"triton": 1, "torch": 0},
                                     "grouped_forward": {"triton": 1, "torch": 0}}


def test_env_switch_and_override_precedence(cand, monkeypatch):
    args, _ = cand
    monkeypatch.setenv("ESAMP_KERNELS", "triton")
    assert ops.kernel_mode() == "triton"
    ops.candidate_novelty_logits(*args)
    ops.set_kernel_mode("torch")  # the programmatic override (config) wins over the env
    assert ops.kernel_mode() == "torch"
    ops.candidate_novelty_logits(*args)
    ops.set_kernel_mode(None)  # back to the env
    assert ops.kernel_mode() == "triton"
    assert ops.kernel_counters()["candidate_novelty"] == {"triton": 1, "torch": 1}


def test_bad_modes_are_rejected(cand, monkeypatch):
    with pytest.raises(ValueError, match="set_kernel_mode"):
        ops.set_kernel_mode("cuda")
    monkeypatch.setenv("ESAMP_KERNELS", "fast")
    with pytest.raises(ValueError, match="ESAMP_KERNELS"):
        ops.candidate_novelty_logits(*cand[0])


def test_forced_triton_on_cpu_needs_the_interpreter(cand, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ops.set_kernel_mode("triton")
    with pytest.raises(ops.KernelUnsupportedError, match="TRITON_INTERPRET"):
        ops.candidate_novelty_logits(*cand[0])
    assert ops.kernel_counters()["candidate_novelty"] == zero()


def test_unsupported_calls_fall_back_in_auto_and_raise_when_forced(cand, fwd):
    args, _ = cand
    args64 = [a.double() if a is not None and a.is_floating_point() else a for a in args]
    ops.candidate_novelty_logits(*args64)  # auto, CPU: torch (float64 is fine for the reference)
    ops.set_kernel_mode("triton")
    with pytest.raises(ops.KernelUnsupportedError, match="float32, bfloat16 or float16"):
        ops.candidate_novelty_logits(*args64)
    x, ids, bank = fwd
    grad_bank = {k: v.clone().requires_grad_(True) for k, v in bank.items()}
    with pytest.raises(ops.KernelUnsupportedError, match="autograd"):
        ops.grouped_distiller_forward(x, ids, grad_bank, 2, True)
    ops.set_kernel_mode("auto")
    y = ops.grouped_distiller_forward(x, ids, grad_bank, 2, True)  # the differentiable torch path
    y.float().pow(2).sum().backward()
    assert grad_bank["blocks.1.down"].grad is not None
    assert ops.kernel_counters() == {"candidate_novelty": {"triton": 0, "torch": 1},
                                     "grouped_forward": {"triton": 0, "torch": 1}}


def test_auto_picks_triton_on_cuda_only_when_supported():
    """The decision itself (no GPU here): CUDA + supported -> triton, CUDA + unsupported -> torch, CPU -> torch
    without even asking the kernel (so CPU use never imports triton)."""
    cuda = torch.device("cuda", 0)
    assert dispatch.choose("grouped_forward", cuda, lambda: None) == "triton"
    assert dispatch.choose("grouped_forward", cuda, lambda: "too wide") == "torch"

    def must_not_ask():
        raise AssertionError("asked the kernel on CPU in auto mode")

    assert dispatch.choose("grouped_forward", torch.device("cpu"), must_not_ask) == "torch"
    assert ops.kernel_counters()["grouped_forward"] == {"triton": 1, "torch": 2}


def test_counters_are_a_copy_and_reset(cand):
    ops.candidate_novelty_logits(*cand[0])
    snap = ops.kernel_counters()
    snap["candidate_novelty"]["torch"] = 99
    assert ops.kernel_counters()["candidate_novelty"]["torch"] == 1
    ops.reset_kernel_counters()
    assert ops.kernel_counters() == {"candidate_novelty": zero(), "grouped_forward": zero()}
