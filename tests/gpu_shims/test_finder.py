"""When the ESamp CUDA stand-in serves ``sgl_kernel`` and when it stays out of the way.

Each case runs in a fresh interpreter (the finder acts at import time and must not touch this test process)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIMS = ROOT / "benchmarks" / "gpu" / "shims"


def _run(code: str, *, env_extra=None, drop=("SGLANG_USE_CPU_ENGINE", "SGLANG_ESAMP_CUDA_STANDIN"), path=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([*map(str, path), str(ROOT), str(SHIMS)]))
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


PROBE = """
import json, sys
import esamp_gpu_shims.finder as finder
out = {"active": finder.active()}
try:
    import sgl_kernel
    out["origin"] = "stand-in" if getattr(sgl_kernel, "__esamp_cuda_standin__", False) else (
        "cpu-stub" if getattr(sgl_kernel, "__esamp_cpu_stub__", False) else "real")
except ImportError as e:
    out["origin"] = "none: " + str(e)
print(json.dumps(out))
"""


def test_served_only_with_the_switch_and_never_on_the_cpu_engine():
    on, err = _run(PROBE, env_extra={"SGLANG_ESAMP_CUDA_STANDIN": "1"})
    assert on == {"active": True, "origin": "stand-in"}
    assert "serving the ESamp CUDA stand-in" in err
    off, _ = _run(PROBE)
    assert off["active"] is False and off["origin"].startswith("none")
    # the CPU machines: SGLANG_USE_CPU_ENGINE=1 keeps cpu_shims' stub, whatever the switch says
    cpu, _ = _run(PROBE, env_extra={"SGLANG_ESAMP_CUDA_STANDIN": "1", "SGLANG_USE_CPU_ENGINE": "1"})
    assert cpu["active"] is False and cpu["origin"] == "cpu-stub"
    killed, _ = _run(PROBE, env_extra={"SGLANG_ESAMP_CUDA_STANDIN": "1", "SGLANG_ESAMP_GPU_SHIMS": "0"})
    assert killed["active"] is False and killed["origin"].startswith("none")


def test_a_real_sgl_kernel_on_the_path_is_never_shadowed(tmp_path):
    real = tmp_path / "site" / "sgl_kernel"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\ndef rmsnorm(*a, **k):\n    return 'real'\n")
    code = PROBE.replace('print(json.dumps(out))', """
out["rmsnorm"] = sgl_kernel.rmsnorm()
try:
    import sgl_kernel.kvcacheio   # a submodule the stand-in would serve, below a real package that lacks it
    out["sub"] = "served"
except ImportError:
    out["sub"] = "ImportError"
print(json.dumps(out))""")
    got, err = _run(code, env_extra={"SGLANG_ESAMP_CUDA_STANDIN": "1"}, path=[tmp_path / "site"])
    assert got == {"active": True, "origin": "real", "rmsnorm": "real", "sub": "ImportError"}
    assert "serving the ESamp CUDA stand-in" not in err


def test_unknown_ops_raise_clear_errors_and_probes_keep_their_import_errors():
    got, _ = _run("""
import json, torch
import esamp_gpu_shims.finder
out = {}
from sgl_kernel import moe_sum_reduce, rmsnorm            # import-only name, implemented op
try:
    moe_sum_reduce(torch.zeros(1))
except NotImplementedError as e:
    out["call"] = str(e)
try:
    from sgl_kernel import flash_ops                     # a name SGLang probes with try/except ImportError
except ImportError as e:
    out["import"] = type(e).__name__
import sgl_kernel
try:
    sgl_kernel.merge_state_v2
except AttributeError as e:
    out["attr"] = str(e)
for sub in ("sgl_kernel.scalar_type", "sgl_kernel.allreduce", "sgl_kernel.flash_attn"):
    try:
        __import__(sub)
        out[sub] = "served"
    except ModuleNotFoundError:
        out[sub] = "ModuleNotFoundError"
from sgl_kernel.kvcacheio import transfer_kv_per_layer
from sgl_kernel.utils import is_arch_support_pdl
out["pdl"] = is_arch_support_pdl()
out["rmsnorm"] = rmsnorm(torch.ones(2, 4), torch.ones(4)).shape[-1]
print(json.dumps(out))
""", env_extra={"SGLANG_ESAMP_CUDA_STANDIN": "1"})
    assert got["call"] == "sgl_kernel.moe_sum_reduce is not in the ESamp CUDA stand-in"
    assert got["import"] == "ImportError"
    assert "'merge_state_v2'" in got["attr"] and "ESamp CUDA stand-in" in got["attr"]
    assert {got[s] for s in ("sgl_kernel.scalar_type", "sgl_kernel.allreduce", "sgl_kernel.flash_attn")} \
        == {"ModuleNotFoundError"}
    assert got["pdl"] is False and got["rmsnorm"] == 4


def test_the_jit_patch_list_and_the_finder_agree():
    from esamp_gpu_shims import ops

    source = (ROOT / "benchmarks/gpu/shims/esamp_gpu_shims/finder.py").read_text()
    import ast

    tree = ast.parse(source)
    jit_modules = next(ast.literal_eval(n.value) for n in tree.body
                       if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "JIT_MODULES")
    assert set(jit_modules) == set(ops.JIT_PATCHES)
    assert set(ops.SGL_KERNEL_OPS) <= {"sgl_kernel", "sgl_kernel.utils", "sgl_kernel.kvcacheio",
                                       "sgl_kernel.quantization"}


def test_jit_kernels_kept_on_request():
    got, err = _run("""
import json, sys
import esamp_gpu_shims.finder as f
print(json.dumps({"replaced": f.jit_replaced(), "patchers": sum(type(x).__name__ == "JitPatchFinder"
                                                              for x in sys.meta_path)}))
""", env_extra={"SGLANG_ESAMP_CUDA_STANDIN": "1", "SGLANG_ESAMP_CUDA_STANDIN_JIT": "1"})
    assert got == {"replaced": False, "patchers": 1}    # installed but inert: the modules load untouched
