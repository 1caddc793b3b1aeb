"""The ESamp CUDA stand-in's ops against SGLang's own ``forward_native`` of the same layer.

Two levels: (1) each op called with sgl_kernel's signature, in this process (SGLang in its CPU mode), against
``RMSNorm`` / ``GemmaRMSNorm`` / ``SiluAndMul`` / ``RotaryEmbedding.forward_native``; (2) SGLang's *CUDA* layer code
(``forward_cuda``) run on CPU tensors in a subprocess that fakes a CUDA torch with the stand-in installed -- it proves
that the names SGLang binds on its CUDA path are the stand-in's and that the whole path equals ``forward_native``.
Tolerances: float32 bit-for-bit here (the same fp32 operations); bfloat16 2 ulps of the largest value (the stand-in
rotates and multiplies in fp32 and rounds once, as the CUDA kernels do; forward_native rounds in between).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esamp_gpu_shims import ops

ROOT = Path(__file__).resolve().parents[2]
SHIMS = ROOT / "benchmarks" / "gpu" / "shims"
DTYPES = [torch.float32, torch.bfloat16]


def _close(got, want, dtype):
    scale = max(1.0, want.float().abs().max().item())
    tol = (2e-6 if dtype == torch.float32 else 1 / 64) * scale
    err = (got.float() - want.float()).abs().max().item()
    assert err <= tol, f"max |err| {err} > {tol}"


@pytest.fixture(scope="module")
def layers():
    from sglang.srt.layers.activation import GeluAndMul, SiluAndMul
    from sglang.srt.layers.layernorm import GemmaRMSNorm, RMSNorm
    from sglang.srt.layers.rotary_embedding import get_rope

    return dict(RMSNorm=RMSNorm, GemmaRMSNorm=GemmaRMSNorm, SiluAndMul=SiluAndMul, GeluAndMul=GeluAndMul,
                get_rope=get_rope)


def _norm(cls, dtype, hidden=64, gemma=False):
    g = torch.Generator().manual_seed(1)
    layer = cls(hidden, eps=1e-5).to(dtype)
    with torch.no_grad():
        layer.weight.copy_((torch.randn(hidden, generator=g) * 0.3 + (0.0 if gemma else 1.0)).to(dtype))
    x = (torch.randn(9, hidden, generator=g) * 4).to(dtype)
    r = torch.randn(9, hidden, generator=g).to(dtype)
    return layer, x, r


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_without_residual_matches_forward_native(layers, dtype):
    layer, x, _ = _norm(layers["RMSNorm"], dtype)
    want = layer.forward_native(x.clone())
    _close(ops.rmsnorm(x, layer.weight.data, layer.variance_epsilon), want, dtype)
    out = torch.empty_like(x)
    assert ops.rmsnorm(x, layer.weight.data, layer.variance_epsilon, out=out) is out
    _close(out, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rmsnorm_updates_input_and_residual_in_place(layers, dtype):
    layer, x, r = _norm(layers["RMSNorm"], dtype)
    want_x, want_r = layer.forward_native(x.clone(), r.clone())
    xi, ri = x.clone(), r.clone()
    assert ops.fused_add_rmsnorm(xi, ri, layer.weight.data, layer.variance_epsilon) is None
    _close(xi, want_x, dtype)
    _close(ri, want_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemma_variants_match_forward_native(layers, dtype):
    layer, x, r = _norm(layers["GemmaRMSNorm"], dtype, gemma=True)
    _close(ops.gemma_rmsnorm(x, layer.weight.data, layer.variance_epsilon), layer.forward_native(x.clone()), dtype)
    want_x, want_r = layer.forward_native(x.clone(), r.clone())
    xi, ri = x.clone(), r.clone()
    ops.gemma_fused_add_rmsnorm(xi, ri, layer.weight.data, layer.variance_epsilon)
    _close(xi, want_x, dtype)   # (forward_native adds in the input dtype, the stand-in in fp32: within 2 ulps)
    _close(ri, want_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_activations_match_forward_native(layers, dtype):
    x = (torch.randn(5, 3, 2 * 40, generator=torch.Generator().manual_seed(2)) * 3).to(dtype)
    _close(ops.silu_and_mul(x), layers["SiluAndMul"]().forward_native(x), dtype)
    out = torch.empty(5, 3, 40, dtype=dtype)
    assert ops.silu_and_mul(x, out) is out
    _close(out, layers["SiluAndMul"]().forward_native(x), dtype)
    _close(ops.gelu_and_mul(x), layers["GeluAndMul"]("none").forward_native(x), dtype)
    _close(ops.gelu_tanh_and_mul(x), layers["GeluAndMul"]("tanh").forward_native(x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rotary_dim", [64, 32], ids=["full", "partial"])
def test_rope_entry_points_match_forward_native(layers, dtype, neox, rotary_dim):
    head = 64
    rope = layers["get_rope"](head, rotary_dim, 2048, 10000, is_neox_style=neox, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    pos = torch.randint(0, 2048, (7,), generator=g)
    q = torch.randn(7, 6 * head, generator=g).to(dtype)
    k = torch.randn(7, 2 * head, generator=g).to(dtype)
    want_q, want_k = rope.forward_native(pos, q.clone(), k.clone())
    cache = rope.cos_sin_cache.float()
    qi, ki = q.clone(), k.clone()
    assert ops.apply_rope_with_cos_sin_cache_inplace(pos, qi, ki, head, cache, is_neox=neox) is None
    _close(qi, want_q, dtype)
    _close(ki, want_k, dtype)
    qi, ki = q.clone(), k.clone()
    ops.rotary_embedding(pos, qi, ki, head, cache, neox)
    _close(qi, want_q, dtype)
    _close(ki, want_k, dtype)


def test_stand_in_ops_are_capturable_shape_static_and_host_read_free():
    """No op reads a device value on the host (a CUDA-graph capture would fail): aten._local_scalar_dense and
    data-dependent shapes raise under this mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NoHostRead(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default):
                raise AssertionError(f"host read: {func}")
            return func(*args, **(kwargs or {}))

    x, r, w = torch.randn(4, 32), torch.randn(4, 32), torch.rand(32)
    q, k, pos = torch.randn(4, 2 * 16), torch.randn(4, 16), torch.tensor([0, 3, 5, 9])
    cache = torch.randn(16, 16)
    with NoHostRead():
        ops.rmsnorm(x, w)
        ops.fused_add_rmsnorm(x, r, w)
        ops.silu_and_mul(x)
        ops.apply_rope_with_cos_sin_cache_inplace(pos, q, k, 16, cache)
        ops.jit_rope_inplace(q.view(4, 2, 16), k.view(4, 1, 16), cache, pos, is_neox=True)
        ops.jit_clamp_position(pos)


def test_sglang_cuda_layer_path_with_the_stand_in_equals_forward_native():
    env = {k: v for k, v in os.environ.items() if k != "SGLANG_USE_CPU_ENGINE"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(SHIMS)]))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/gpu_shims/fake_cuda_layers.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    facts, checks = result["facts"], result["checks"]
    assert facts["is_cuda"] is True
    # SGLang's CUDA modules bound the stand-in's ops, not sgl_kernel's or the nvcc-built ones
    assert facts["layernorm_rmsnorm"] == facts["activation_jit_silu"] == facts["rope_base_apply"] \
        == "esamp_gpu_shims.ops"
    assert facts["can_use_store_cache"] is False
    assert "'some_kernel'" in facts["load_jit"] and "not in the ESamp CUDA stand-in" in facts["load_jit"]
    expected = {"RMSNorm", "RMSNorm+residual", "GemmaRMSNorm+residual", "SiluAndMul/w1216", "SiluAndMul/w24",
                "RotaryEmbedding/h64/neox", "RotaryEmbedding/h64/gptj", "RotaryEmbedding/h80/neox",
                "RotaryEmbedding/h80/gptj", "clamp_position"}
    assert all(any(name.startswith(e) for name in checks) for e in expected), sorted(checks)
    bad = {name: c for name, c in checks.items() if not c["err"] <= c["tol"]}
    assert not bad, bad
    assert "[esamp] sgl_kernel: serving the ESamp CUDA stand-in" in proc.stderr
