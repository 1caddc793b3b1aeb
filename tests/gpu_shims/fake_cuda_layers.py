"""Run SGLang's *CUDA* layer code on CPU tensors with the ESamp CUDA stand-in, and compare with ``forward_native``.

Run as a script in a fresh interpreter (it fakes a CUDA torch before SGLang is imported, which must not leak into
a test process): ``python tests/gpu_shims/fake_cuda_layers.py`` prints one JSON line ``{"checks": {...}}`` with the
largest absolute error of each check and the tolerance it must meet, plus the facts the test asserts.
"""
import json
import os
import sys

os.environ.pop("SGLANG_USE_CPU_ENGINE", None)
os.environ["SGLANG_ESAMP_CUDA_STANDIN"] = "1"

import torch  # noqa: E402
import torchvision  # noqa: E402,F401  (its op-schema fix needs the real CPU torch.version.cuda)

import esamp_gpu_shims.finder as finder  # noqa: E402

assert finder.install()
torch.version.cuda = "13.0"
torch.cuda.is_available = lambda: True
torch.cuda.get_device_capability = lambda device=None: (9, 0)
torch.cuda.device_count = lambda: 1
torch.cuda.get_device_name = lambda device=None: "fake"
torch.cuda.is_initialized = lambda: True

TOL = {torch.float32: 2e-6, torch.bfloat16: 1 / 64}  # relative to the largest |value|: bf16 = 2 ulps (8-bit mantissa)
checks = {}


def record(name, got, want, dtype, tol=None):
    err = (got.float() - want.float()).abs().max().item()
    scale = max(1.0, want.float().abs().max().item())
    checks[name] = {"err": err, "tol": tol if tol is not None else TOL[dtype] * scale}


def main():
    from sglang.srt.layers import activation, layernorm
    from sglang.srt.layers.activation import SiluAndMul
    from sglang.srt.layers.layernorm import GemmaRMSNorm, RMSNorm
    from sglang.srt.layers.rotary_embedding import get_rope
    from sglang.srt.utils import is_cuda

    facts = {"is_cuda": is_cuda(), "layernorm_rmsnorm": layernorm.rmsnorm.__module__,
             "activation_jit_silu": activation._jit_silu_and_mul.__module__}
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        tag = str(dtype).split(".")[-1]
        for cls in (RMSNorm, GemmaRMSNorm):
            norm = cls(96, eps=1e-6).to(dtype)
            with torch.no_grad():
                norm.weight.copy_(torch.randn(96, generator=g).to(dtype) * 0.5 + (0 if cls is GemmaRMSNorm else 1))
            x = torch.randn(5, 96, generator=g).to(dtype) * 3
            r = torch.randn(5, 96, generator=g).to(dtype)
            record(f"{cls.__name__}/{tag}", norm.forward_cuda(x.clone()), norm.forward_native(x.clone()), dtype)
            got_x, got_r = norm.forward_cuda(x.clone(), r.clone())
            want_x, want_r = norm.forward_native(x.clone(), r.clone())
            # (GemmaRMSNorm.forward_native adds x + residual in bf16, the stand-in in fp32 as the CUDA kernel does)
            record(f"{cls.__name__}+residual/{tag}", got_x, want_x, dtype)
            record(f"{cls.__name__}+residual/residual/{tag}", got_r, want_r, dtype)
            # in place, as sgl_kernel's fused_add_rmsnorm: the caller's tensors hold the results
            xi, ri = x.clone(), r.clone()
            out_x, out_r = norm.forward_cuda(xi, ri)
            checks[f"{cls.__name__}+residual/in_place/{tag}"] = {
                "err": 0.0 if (out_x.data_ptr() == xi.data_ptr() and out_r.data_ptr() == ri.data_ptr()) else 1.0,
                "tol": 0.0}
        x3 = torch.randn(2, 3, 96, generator=g).to(dtype)
        norm = RMSNorm(96).to(dtype)
        record(f"RMSNorm/3d/{tag}", norm.forward_cuda(x3.clone()), norm.forward_native(x3.clone()), dtype)

        act = SiluAndMul()
        for width in (2 * 4864 // 8, 2 * 12):  # JIT kernel path (aligned) and sgl_kernel path (unaligned)
            x = torch.randn(7, width, generator=g).to(dtype) * 2
            record(f"SiluAndMul/w{width}/{tag}", act.forward_cuda(x), act.forward_native(x), dtype)

        for head, neox in ((64, True), (64, False), (80, True), (80, False)):  # 64: JIT rope; 80: fallback kernel
            rope_native = get_rope(head, head, 4096, 10000, is_neox_style=neox, dtype=dtype)
            rope_cuda = get_rope(head, head, 4096, 10000, is_neox_style=neox, dtype=dtype)
            pos = torch.randint(0, 4096, (6,), generator=g)
            q = torch.randn(6, 4 * head, generator=g).to(dtype)
            k = torch.randn(6, 2 * head, generator=g).to(dtype)
            qn, kn = rope_native.forward_native(pos, q.clone(), k.clone())
            qc, kc = q.clone(), k.clone()
            qo, ko = rope_cuda.forward_cuda(pos, qc, kc)
            name = f"RotaryEmbedding/h{head}/{'neox' if neox else 'gptj'}/{tag}"
            record(name + "/q", qo, qn, dtype)
            record(name + "/k", ko, kn, dtype)
            record(name + "/in_place", qc, qo, dtype, 0.0)
            # a packed qkv row, as Qwen2 passes it: q and k are strided views into one tensor
            qkv = torch.randn(6, 8 * head, generator=g).to(dtype)
            qv, kv, _ = qkv.split([4 * head, 2 * head, 2 * head], dim=-1)
            qn, kn = rope_native.forward_native(pos, qv.clone(), kv.clone())
            qo, ko = rope_cuda.forward_cuda(pos, qv, kv)
            record(name + "/packed_q", qkv[:, : 4 * head], qn, dtype)
            record(name + "/packed_k", qkv[:, 4 * head: 6 * head], kn, dtype)

    from sglang.kernels.ops.attention.clamp_position import _CLAMP_POSITION
    from sglang.kernels.ops.kvcache.kvcache import can_use_store_cache

    seq = torch.tensor([0, 1, 7, 300], dtype=torch.int32)
    record("clamp_position", _CLAMP_POSITION.forward_jit(seq), _CLAMP_POSITION.forward_native(seq), torch.float32, 0)
    facts["can_use_store_cache"] = can_use_store_cache(128, 128)
    from sglang.kernels.jit.utils import load_jit

    try:
        load_jit("some_kernel", cuda_files=["x.cuh"])
        facts["load_jit"] = "built"
    except NotImplementedError as e:
        facts["load_jit"] = str(e)
    import sglang.srt.layers.rotary_embedding.base as rope_base

    facts["rope_base_apply"] = rope_base.apply_rope_with_cos_sin_cache_inplace.__module__
    print(json.dumps({"checks": checks, "facts": facts}))


if __name__ == "__main__":
    sys.exit(main())
