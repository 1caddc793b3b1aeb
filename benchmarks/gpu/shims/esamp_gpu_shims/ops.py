"""The ops of the ESamp CUDA stand-in, in plain torch (any device, any float dtype).

Two families, both with the exact call signature and in-place semantics of what they stand in for:

* ``SGL_KERNEL_OPS``: the ``sgl_kernel`` API (sgl-kernel 0.4.x Python wrappers) that SGLang 0.5.23 calls on the
  CUDA path of a Llama/Qwen2 text model: ``rmsnorm`` / ``fused_add_rmsnorm`` (and the Gemma variants, ``weight + 1``),
  the gated activations, both RoPE entry points, and ``sgl_kernel.utils.is_arch_support_pdl``.
* ``JIT_PATCHES``: SGLang's own JIT kernels (``sglang.kernels.ops.*``, compiled at first call with nvcc through
  tvm-ffi) on the same path -- SiLU-and-mul, RoPE, the HF-semantics fused add-RMSNorm, decode positions, the KV
  store -- replaced by torch so that a machine without a CUDA toolkit can serve. See ``finder.py`` for when.

Numerics: reductions and the RoPE rotation run in float32 and round once to the input dtype, as the CUDA kernels
do; RMSNorm matches SGLang's ``RMSNorm.forward_native`` operation by operation. Every op is a fixed sequence of
tensor ops with no host read, so it can be captured in a CUDA graph.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- RMSNorm


def _rms_normalize(x32: torch.Tensor, weight: torch.Tensor, eps: float, gemma: bool) -> torch.Tensor:
    y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return y * (1.0 + weight.float()) if gemma else y * weight.float()


def _rmsnorm(input, weight, eps, out, gemma):
    y = _rms_normalize(input.float(), weight, eps, gemma).to(input.dtype)
    if out is None:
        return y
    out.copy_(y)
    return out


def _fused_add_rmsnorm(input, residual, weight, eps, gemma):
    total = input.float() + residual.float()
    residual.copy_(total.to(residual.dtype))
    input.copy_(_rms_normalize(total, weight, eps, gemma).to(input.dtype))


def rmsnorm(input: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, out: Optional[torch.Tensor] = None,
            enable_pdl: Optional[bool] = None) -> torch.Tensor:
    """``out = input / RMS(input) * weight`` (a new tensor unless ``out`` is given)."""
    return _rmsnorm(input, weight, eps, out, gemma=False)


def fused_add_rmsnorm(input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                      enable_pdl: Optional[bool] = None) -> None:
    """In place: ``residual += input``, then ``input = residual / RMS(residual) * weight`` (the sum kept in fp32)."""
    _fused_add_rmsnorm(input, residual, weight, eps, gemma=False)


def gemma_rmsnorm(input: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, out: Optional[torch.Tensor] = None,
                  enable_pdl: Optional[bool] = None) -> torch.Tensor:
    """``out = input / RMS(input) * (1 + weight)``."""
    return _rmsnorm(input, weight, eps, out, gemma=True)


def gemma_fused_add_rmsnorm(input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                            enable_pdl: Optional[bool] = None) -> None:
    """In place: ``residual += input``, then ``input = residual / RMS(residual) * (1 + weight)``."""
    _fused_add_rmsnorm(input, residual, weight, eps, gemma=True)


# ---------------------------------------------------------------- gated activations


def _act_and_mul(act, input: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    d = input.shape[-1] // 2
    y = (act(input[..., :d].float()) * input[..., d:].float()).to(input.dtype)
    if out is None:
        return y
    if out.shape != y.shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(y.shape)}")
    out.copy_(y)
    return out


def silu_and_mul(input: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``silu(input[..., :d]) * input[..., d:]`` with ``d = last_dim // 2``."""
    return _act_and_mul(F.silu, input, out)


def gelu_and_mul(input: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    return _act_and_mul(lambda x: F.gelu(x, approximate="none"), input, out)


def gelu_tanh_and_mul(input: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    return _act_and_mul(lambda x: F.gelu(x, approximate="tanh"), input, out)


# ---------------------------------------------------------------- rotary embedding


def _rotate_inplace(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool) -> None:
    """Rotate the first ``rope_dim`` channels of ``x`` ([tokens, heads, head_dim], any strides) in place.

    ``cos``/``sin``: [tokens, rope_dim // 2] float32. Neox pairs channel i with i + rope_dim/2; GPT-J pairs 2i with
    2i+1."""
    half = cos.shape[-1]
    rot = x[..., : 2 * half]
    if is_neox:
        x1, x2 = rot[..., :half], rot[..., half:]
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    c, s = cos.unsqueeze(-2), sin.unsqueeze(-2)
    a, b = x1.float(), x2.float()
    o1, o2 = (a * c - b * s).to(x.dtype), (b * c + a * s).to(x.dtype)
    x1.copy_(o1)
    x2.copy_(o2)


def _cos_sin(cos_sin_cache: torch.Tensor, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    cs = cos_sin_cache.index_select(0, positions.reshape(-1).long()).float()
    return cs.chunk(2, dim=-1)


def _heads(x: torch.Tensor, n_tokens: int, head_size: int) -> torch.Tensor:
    return x.view(n_tokens, -1, head_size)


def apply_rope_with_cos_sin_cache_inplace(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                                          head_size: int, cos_sin_cache: torch.Tensor, is_neox: bool = True,
                                          fused_set_kv_buffer_arg=None, enable_pdl: Optional[bool] = None) -> None:
    """sgl_kernel's RoPE: rotates ``query`` [nnz, q_heads*head_size] and ``key`` in place; the rotary dim is the
    cache's width (cos first half, sin second half)."""
    if fused_set_kv_buffer_arg is not None:
        raise NotImplementedError("sgl_kernel.apply_rope_with_cos_sin_cache_inplace(fused_set_kv_buffer_arg=...) "
                                  "is not in the ESamp CUDA stand-in")
    n = positions.numel()
    cos, sin = _cos_sin(cos_sin_cache, positions)
    _rotate_inplace(_heads(query, n, head_size), cos, sin, is_neox)
    _rotate_inplace(_heads(key, n, head_size), cos, sin, is_neox)


def rotary_embedding(positions: torch.Tensor, query: torch.Tensor, key: Optional[torch.Tensor], head_size: int,
                     cos_sin_cache: torch.Tensor, is_neox: bool = True):
    """vLLM-style RoPE (``sgl_kernel.rotary_embedding``): in place on ``query`` and ``key`` (``key`` may be None)."""
    n = positions.numel()
    cos, sin = _cos_sin(cos_sin_cache, positions)
    _rotate_inplace(_heads(query, n, head_size), cos, sin, is_neox)
    if key is not None:
        _rotate_inplace(_heads(key, n, head_size), cos, sin, is_neox)
    return query, key


# ---------------------------------------------------------------- sgl_kernel.utils


def is_arch_support_pdl() -> bool:
    """Programmatic dependent launch is a launch-overlap optimisation; the stand-in never asks for it."""
    return False


# name -> callable, per stand-in module; anything a module does not list raises at call time (see finder.py)
SGL_KERNEL_OPS = {
    "sgl_kernel": {
        "rmsnorm": rmsnorm,
        "fused_add_rmsnorm": fused_add_rmsnorm,
        "gemma_rmsnorm": gemma_rmsnorm,
        "gemma_fused_add_rmsnorm": gemma_fused_add_rmsnorm,
        "silu_and_mul": silu_and_mul,
        "gelu_and_mul": gelu_and_mul,
        "gelu_tanh_and_mul": gelu_tanh_and_mul,
        "apply_rope_with_cos_sin_cache_inplace": apply_rope_with_cos_sin_cache_inplace,
        "rotary_embedding": rotary_embedding,
    },
    "sgl_kernel.utils": {"is_arch_support_pdl": is_arch_support_pdl},
}


# ================================================================ SGLang's JIT kernels (sglang.kernels.ops.*)


def _no_moe(name, expert_ids, sorted_token_ids):
    if expert_ids is not None or sorted_token_ids is not None:
        raise NotImplementedError(f"{name}(expert_ids/sorted_token_ids=...) (MoE) is not in the ESamp CUDA stand-in")


def _jit_act(name, act):
    def op(input, out=None, expert_ids=None, expert_step=1, *, sorted_token_ids=None, num_tokens_post_padded=None,
           num_valid_tokens=0):
        _no_moe(f"sglang.kernels.ops.activation.activation.{name}", expert_ids, sorted_token_ids)
        return _act_and_mul(act, input, out)

    op.__name__ = name
    op.__qualname__ = name
    return op


def jit_fused_add_rmsnorm(input, residual, weight, eps=1e-6, *, cast_x_before_out_mul=False) -> None:
    """``sglang.kernels.ops.layernorm.norm.fused_add_rmsnorm``; ``cast_x_before_out_mul`` rounds the normalised
    value to the input dtype before the weight multiply (HF semantics)."""
    total = input.float() + residual.float()
    residual.copy_(total.to(residual.dtype))
    y = total * torch.rsqrt(total.pow(2).mean(dim=-1, keepdim=True) + eps)
    y = weight * y.to(input.dtype) if cast_x_before_out_mul else y * weight.float()
    input.copy_(y.to(input.dtype))


def jit_rope_inplace(q, k, cos_sin_cache, positions, *, is_neox, rope_dim=0, fused_args=None) -> None:
    """``sglang.kernels.ops.attention.rope.apply_rope_with_cos_sin_cache_inplace``: q [T, Hq, D], k [T, Hk, D]
    (views are fine), rotated in place over ``rope_dim`` (default: the cache width); with ``fused_args`` the
    rotated k and the value are also stored into the KV buffers at ``cache_loc``."""
    cos, sin = _cos_sin(cos_sin_cache, positions)
    if rope_dim and rope_dim != cos_sin_cache.shape[-1]:
        cos, sin = cos[..., : rope_dim // 2], sin[..., : rope_dim // 2]
    _rotate_inplace(q, cos, sin, is_neox)
    _rotate_inplace(k, cos, sin, is_neox)
    if fused_args is not None:
        loc = fused_args.cache_loc.long()
        kb, vb = fused_args.k_buffer, fused_args.v_buffer
        kb[loc] = k.reshape(k.shape[0], *kb.shape[1:]).to(kb.dtype)
        vb[loc] = fused_args.value.reshape(k.shape[0], *vb.shape[1:]).to(vb.dtype)


def jit_rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox=True):
    """``sglang.kernels.ops.attention.rope.rotary_embedding`` (the vLLM-style fallback kernel)."""
    return rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)


def jit_clamp_position(seq_lens: torch.Tensor) -> torch.Tensor:
    """``sglang.kernels.ops.attention.clamp_position.clamp_position_cuda``: ``max(seq_lens - 1, 0)``."""
    return torch.clamp(seq_lens - 1, min=0).to(seq_lens.dtype)


def jit_can_use_store_cache(k_row_bytes, v_row_bytes=0, num_threads=0) -> bool:
    """SGLang's KV store falls back to an indexed copy when its JIT kernel is unavailable."""
    return False


def jit_load_refused(*args, **kwargs):
    """``sglang.kernels.jit.utils.load_jit`` under the stand-in: a named error instead of an nvcc build."""
    what = args[0] if args else "?"
    raise NotImplementedError(f"SGLang JIT kernel {what!r} (nvcc build) is not in the ESamp CUDA stand-in; "
                              "set SGLANG_ESAMP_CUDA_STANDIN_JIT=1 on a machine with a CUDA toolkit to build it")


# module -> {attribute: replacement}, applied right after the module executes (before anyone binds the names)
JIT_PATCHES = {
    "sglang.kernels.jit.utils.compile.loader": {"load_jit": jit_load_refused},
    "sglang.kernels.ops.activation.activation": {
        "silu_and_mul": _jit_act("silu_and_mul", F.silu),
        "gelu_and_mul": _jit_act("gelu_and_mul", lambda x: F.gelu(x, approximate="none")),
        "gelu_tanh_and_mul": _jit_act("gelu_tanh_and_mul", lambda x: F.gelu(x, approximate="tanh")),
    },
    "sglang.kernels.ops.attention.rope": {
        "apply_rope_with_cos_sin_cache_inplace": jit_rope_inplace,
        "rotary_embedding": jit_rotary_embedding,
    },
    "sglang.kernels.ops.layernorm.norm": {"fused_add_rmsnorm": jit_fused_add_rmsnorm},
    # the HF-semantics RMSNorm kernel: report no supported width, so RMSNorm takes its forward_native
    "sglang.kernels.ops.layernorm.rmsnorm_hf": {"is_supported_rmsnorm_hf_hidden_size": lambda d: False},
    "sglang.kernels.ops.attention.clamp_position": {"clamp_position_cuda": jit_clamp_position},
    "sglang.kernels.ops.kvcache.kvcache": {"can_use_store_cache": jit_can_use_store_cache},
}
