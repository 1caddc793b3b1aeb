"""The sampler the SGLang runtime calls (ESampCore.sample -> sampling.esamp_sample -> esamp_kernels.ops) picks torch on CPU,
and forcing the Triton kernels (interpreter) gives the same sampled tokens for a fixed Gumbel noise."""
import torch

from esamp_kernels import ops
from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.rule.inputs import RuleInputs
from sglang_esamp.algo.rule.sampling import gumbel_noise
from sglang_esamp.algo.update.job import Update


def _step(core, slots):
    gen = torch.Generator().manual_seed(7)
    r, v = slots.numel(), core.head.weight.shape[0]
    logits = torch.randn(r, v, generator=gen) * 3
    src = torch.randn(r, core.shape.hidden, generator=gen)
    temps = torch.tensor([1.0, 0.7, 1.3, 1.0, 0.9, 1.0])[:r]
    top_ks = torch.tensor([1 << 30, 40, 1 << 30, 1 << 30, 1 << 30, 1 << 30])[:r]
    top_ps = torch.tensor([0.95, 1.0, 0.9, 1.0, 1.0, 0.8])[:r]
    min_ps = torch.tensor([0.0, 0.0, 0.0, 0.05, 0.0, 0.0])[:r]
    betas = torch.tensor([0.25, 0.5, 1.0, 0.25, 0.0, 2.0])[:r]
    noise = gumbel_noise((r, core.config.candidate_cap), "cpu", torch.Generator().manual_seed(11))
    _, out = core.sample(RuleInputs(logits, temps, top_ks, top_ps, min_ps, betas, h_src=src, slots=slots,
                                     noise=noise))
    return out


def test_cpu_dispatch_is_torch_and_forced_triton_samples_the_same_tokens():
    gen = torch.Generator().manual_seed(3)
    core = ESampCore(ESampConfig(bank_slots=2, width=32, candidate_cap=256), 64, torch.randn(3000, 64, generator=gen))
    a, b = core.acquire_slot(), core.acquire_slot()
    slots = torch.tensor([a, a, b, b, a, b])
    with torch.enable_grad():  # move the distillers off their identity init so the novelty term matters
        for _ in range(3):
            core.train(Update(torch.randn(6, 64, generator=gen), 5 * torch.randn(6, 64, generator=gen), slots))

    torch_out = _step(core, slots)
    assert ops.kernel_counters()["candidate_novelty"] == {"triton": 0, "torch": 1}   # auto on CPU = torch
    assert ops.kernel_counters()["grouped_forward"]["triton"] == 0
    ops.set_kernel_mode("triton")
    triton_out = _step(core, slots)
    assert ops.kernel_counters()["candidate_novelty"]["triton"] == 1
    assert ops.kernel_counters()["grouped_forward"]["triton"] >= 1
    assert bool(torch_out.reweighted.sum() >= 4)
    assert torch.equal(torch_out.tokens, triton_out.tokens)
    torch.testing.assert_close(triton_out.cand_logits, torch_out.cand_logits, rtol=1e-5, atol=1e-4)
