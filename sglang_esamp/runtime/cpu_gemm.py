"""bf16 GEMMs on a CPU without native bf16: compute them in fp32 and round the result to bf16 (opt-in).

Why: on a CPU without AVX512-BF16/AMX (our 2-core dev/CI machines), PyTorch's bf16 ``F.linear`` emulates bf16 and
runs at ~17 GFLOPS per core against ~70 GFLOPS for fp32 on the same shapes (measured on this machine, 80 x 896 x 9728,
one thread), and SGLang serves a bf16 checkpoint in bf16 there: ~94 % of a Qwen-0.5B forward sits in those GEMMs.

Same numbers as bf16: a bf16 x bf16 product is exact in fp32 and both routes accumulate in fp32, so the only
difference is summation order. Measured on a real shape, the fp32 route's bf16 outputs differ from PyTorch's bf16
GEMM by one bf16 ulp on 0.02 % of the elements -- exactly as often as PyTorch's bf16 GEMM differs from itself
between batch sizes 1 and 80, which continuous batching changes every step. Each layer keeps an fp32 copy of
its weight (2x the bf16 weights in memory), rebuilt after every weight update (``weights_replaced``, called by the
weight-update hooks: SGLang's loaders write through ``param.data``, which does not bump the tensor's version).

Opt-in: ``SGLANG_ESAMP_CPU_FP32_GEMM=1`` in the server's environment. It touches only the two plain paths -- an
unquantized linear and a plain bf16 LM head on CPU -- and hands every other case (CUDA, fp32, AMX, LoRA,
quantized, SGLang's own fp32 LM-head options) to SGLang unchanged. ``calls`` counts the GEMMs it served.
"""
from __future__ import annotations

import os

from ..wire.hookspec import AROUND, hook

ENV = "SGLANG_ESAMP_CPU_FP32_GEMM"
calls = {"linear": 0, "lm_head": 0}
_generation = 0     # bumped by every weight update: the fp32 copies made before it are stale


def enabled() -> bool:
    return os.environ.get(ENV, "0") == "1"


def weights_replaced() -> None:
    global _generation
    _generation += 1


def fp32_weight(module):
    """The module's weight in fp32, cached on the module; rebuilt when the weight is replaced, written in place, or
    a weight update happened since."""
    w = module.weight
    key = (_generation, w.data_ptr(), w._version, tuple(w.shape))
    cached = getattr(module, "_esamp_fp32_weight", None)
    if cached is None or cached[0] != key:
        cached = (key, w.detach().float())
        module._esamp_fp32_weight = cached
    return cached[1]


def _plain_bf16_cpu(x, weight) -> bool:
    import torch

    return x.device.type == "cpu" and x.dtype == torch.bfloat16 and weight.dtype == torch.bfloat16


def linear_bf16_via_fp32(x, module, bias=None):
    import torch
    import torch.nn.functional as F

    b = None if bias is None else bias.float()
    return F.linear(x.float(), fp32_weight(module), b).to(torch.bfloat16)


@hook("sglang.srt.layers.quantization.unquant.UnquantizedLinearMethod.apply", AROUND, ("self", "layer", "x", "bias"),
      "opt-in: a bf16 linear on CPU computed in fp32 and rounded to bf16 (4x faster without native bf16)")
def around_linear_apply(original, method, layer, x, bias=None, *args, **kwargs):
    if (not enabled() or args or kwargs or getattr(layer, "use_intel_amx_backend", False)
            or getattr(layer.weight, "requires_grad", False) or not _plain_bf16_cpu(x, layer.weight)):
        return original(method, layer, x, bias, *args, **kwargs)
    calls["linear"] += 1
    return linear_bf16_via_fp32(x, layer, bias)


@hook("sglang.srt.layers.logits_processor.LogitsProcessor._compute_lm_head", AROUND,
      ("self", "hidden_states", "lm_head", "embedding_bias"),
      "opt-in: the plain bf16 LM head on CPU computed in fp32 and rounded to bf16")
def around_compute_lm_head(original, processor, hidden_states, lm_head, embedding_bias=None, *args, **kwargs):
    if not enabled() or args or set(kwargs) - {"out"} or not _plain_lm_head(processor, hidden_states, lm_head):
        return original(processor, hidden_states, lm_head, embedding_bias, *args, **kwargs)
    calls["lm_head"] += 1
    # SGLang's own CPU bf16 branch returns a fresh tensor and leaves ``out`` alone: so do we
    return linear_bf16_via_fp32(hidden_states, lm_head)


def _plain_lm_head(processor, hidden_states, lm_head) -> bool:
    """True where SGLang would take its last branch: ``matmul(hidden.to(w.dtype), w.T)`` in bf16."""
    from sglang.srt.layers.logits_processor import should_apply_lm_head_quant_method

    return (hasattr(lm_head, "weight")
            and not (hasattr(lm_head, "set_lora") and hasattr(lm_head, "apply_lora"))
            and not should_apply_lm_head_quant_method(lm_head, getattr(lm_head, "quant_method", None))
            and not getattr(processor, "use_fp32_lm_head", False)
            and not getattr(processor, "use_fp32_lm_head_output", False)
            and getattr(processor, "rl_on_policy_target", None) is None
            and not getattr(lm_head, "use_intel_amx_backend", False)
            and _plain_bf16_cpu(hidden_states, lm_head.weight))
