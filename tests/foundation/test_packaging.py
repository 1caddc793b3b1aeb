"""The package installs the way DESIGN §2 says: no `kernels` shadowing, shims only where they belong."""
import subprocess
import sys


def _run(code, **env):
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_esamp_kernels_importable_and_kernels_not_shadowed():
    r = _run("import esamp_kernels, importlib.util as u; s = u.find_spec('kernels');"
             "print('ESAMP', esamp_kernels.__file__);"
             "print('KERNELS', None if s is None else (s.origin, list(s.submodule_search_locations or [])))")
    assert r.returncode == 0, r.stderr
    assert "kernels/esamp_kernels/__init__.py" in r.stdout
    line = [x for x in r.stdout.splitlines() if x.startswith("KERNELS")][0]
    # either absent, or a regular installed package -- never our kernels/ directory as a regular package
    assert "kernels/__init__.py" not in line or "site-packages" in line, line


def test_import_kernels_does_not_give_our_directory():
    r = _run("import kernels; print(getattr(kernels, '__file__', None))")
    # our kernels/ has no __init__.py: at most a namespace package (file None), never a module from the repo
    if r.returncode == 0:
        assert "esamp" not in r.stdout
        assert r.stdout.strip() in ("None",) or "site-packages" in r.stdout


def test_sgl_kernel_stub_only_with_cpu_engine_flag():
    code = "import sgl_kernel; print(getattr(sgl_kernel, '__esamp_cpu_stub__', False)); sgl_kernel.foo_bar"
    off = _run("import sgl_kernel", SGLANG_USE_CPU_ENGINE="0")
    assert off.returncode != 0 and "No module named 'sgl_kernel'" in off.stderr
    on = _run(code, SGLANG_USE_CPU_ENGINE="1")
    assert "True" in on.stdout
    assert "AttributeError" in on.stderr  # non-CPU names are refused so SGLang's ImportError fallbacks work
    ok = _run("from sgl_kernel import silu_and_mul, copy_all_layer_kv_cache_cpu\n"
              "try:\n    silu_and_mul()\nexcept NotImplementedError as e:\n    print('NIE', e)",
              SGLANG_USE_CPU_ENGINE="1")
    assert ok.returncode == 0 and "NIE" in ok.stdout, ok.stderr
    refused = _run("from sgl_kernel.scalar_type import scalar_types", SGLANG_USE_CPU_ENGINE="1")
    assert refused.returncode != 0 and ("ModuleNotFoundError" in refused.stderr or "ImportError" in refused.stderr)


def test_torchvision_imports_beside_cpu_torch():
    r = _run("import torch, torchvision; print(torch.version.cuda, torchvision.__version__)")
    assert r.returncode == 0, r.stderr[-2000:]


def test_shims_can_be_disabled():
    r = _run("import sgl_kernel", SGLANG_USE_CPU_ENGINE="1", SGLANG_ESAMP_CPU_SHIMS="0")
    assert r.returncode != 0


def test_the_wheel_carries_no_gpu_tooling(tmp_path):
    """The CUDA stand-in and the lease scripts live in benchmarks/gpu/, outside the wheel: a built wheel has the
    package and its CPU shims, and nothing of gpu_shims or benchmarks/ (issue #45)."""
    import os
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                           "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PIP_NO_INPUT="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheel = next(tmp_path.glob("sglang_esamp-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "sglang_esamp/plugin.py" in names and "esamp_kernels/ops.py" in names
    assert "sglang_esamp_cpu_shims.pth" in names
    assert not [n for n in names if "gpu_shims" in n or n.startswith("benchmarks/")], names
