"""Import hooks of the ESamp CUDA stand-in (standard library only; torch is imported only when an op is used).

**When it acts.** Only when *all* of these hold:

* ``SGLANG_ESAMP_CUDA_STANDIN=1`` -- an explicit opt-in (``benchmarks/gpu/server_check.sh`` sets it on the lent GPU
  machine, which has a CUDA torch but no sgl-kernel wheel and no way to download one);
* ``SGLANG_USE_CPU_ENGINE`` is not ``1`` -- on the CPU machines the CPU stub (``cpu_shims``) keeps its job and this
  module does nothing;
* ``SGLANG_ESAMP_GPU_SHIMS`` is not ``0`` (a kill switch);
* for ``sgl_kernel`` itself: no real ``sgl_kernel`` is importable. The finder sits *last* on ``sys.meta_path`` (every
  regular finder is asked first) and also asks ``PathFinder`` itself before serving, so a real install always wins;
  a ``sgl_kernel.<sub>`` is served only below the stand-in's own ``sgl_kernel``, never below a real one.

**What it serves.**

1. ``sgl_kernel`` (+ ``sgl_kernel.utils``, ``.kvcacheio``, ``.quantization``): the names SGLang 0.5.23 imports at
   module level on the CUDA path of a Llama/Qwen2 text server (found by importing the server's modules under a faked
   CUDA torch with a strict stub, one missing name at a time). The ops that path *calls* are implemented in torch
   (``ops.SGL_KERNEL_OPS``); the other names import fine and raise ``NotImplementedError("sgl_kernel.<op> is not in
   the ESamp CUDA stand-in")`` when called. Any other name raises ``AttributeError`` -> ``ImportError`` on ``from
   sgl_kernel import X``, so SGLang's own ``try: ... except ImportError`` probes take their fallbacks.
2. SGLang's JIT kernels (``sglang.kernels.ops.*``, built with nvcc at first call): right after each module in
   ``ops.JIT_PATCHES`` executes -- before any other module binds its names -- the functions the Llama/Qwen2 decode
   calls are replaced with torch, and ``load_jit`` itself raises a ``NotImplementedError`` naming the kernel instead
   of starting a build. ``SGLANG_ESAMP_CUDA_STANDIN_JIT=1`` keeps SGLang's JIT kernels (a machine with a CUDA
   toolkit); the ``sgl_kernel`` part stays.

Also, when active: ``SGLANG_SKIP_SGL_KERNEL_VERSION_CHECK=1`` by default (SGLang's engine otherwise asserts that
the ``sglang-kernel`` distribution is installed). The first process that serves the stand-in says so on stderr.

Importing this module installs the hooks (when active). On the GPU machine ``benchmarks/gpu/bundle.py install``
writes a ``.pth`` line that imports it in every interpreter (SGLang's scheduler and detokenizer are spawned
processes that import ``sgl_kernel`` before any plugin loads); elsewhere, import it before SGLang.
"""
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types

ENV = "SGLANG_ESAMP_CUDA_STANDIN"
JIT_ENV = "SGLANG_ESAMP_CUDA_STANDIN_JIT"
OFF_ENV = "SGLANG_ESAMP_GPU_SHIMS"
MARK = "__esamp_cuda_standin__"

# module-level imports of SGLang 0.5.23's CUDA server path that are never called for a Llama/Qwen2 text model
# (MoE, int8 GEMM, GGUF, hierarchical-cache transfers, the flashinfer sampling backend's renorm kernels)
IMPORT_ONLY = {
    "sgl_kernel": frozenset({"int8_scaled_mm", "moe_sum", "moe_sum_reduce", "top_k_renorm_prob",
                             "top_p_renorm_prob"}),
    "sgl_kernel.utils": frozenset(),
    "sgl_kernel.quantization": frozenset({"ggml_dequantize", "ggml_moe_a8", "ggml_mul_mat_a8",
                                          "ggml_mul_mat_vec_a8"}),
    "sgl_kernel.kvcacheio": frozenset({
        "transfer_kv_all_layer", "transfer_kv_all_layer_direct_lf_pf", "transfer_kv_all_layer_lf_pf",
        "transfer_kv_all_layer_lf_ph", "transfer_kv_all_layer_mla", "transfer_kv_all_layer_mla_lf_pf",
        "transfer_kv_direct", "transfer_kv_per_layer", "transfer_kv_per_layer_direct_pf_lf",
        "transfer_kv_per_layer_mla", "transfer_kv_per_layer_mla_pf_lf", "transfer_kv_per_layer_pf_lf",
        "transfer_kv_per_layer_ph_lf"}),
}
MODULES = tuple(IMPORT_ONLY)

# the modules whose functions are replaced after they execute (kept in step with ops.JIT_PATCHES by a test)
JIT_MODULES = (
    "sglang.kernels.jit.utils.compile.loader",
    "sglang.kernels.ops.activation.activation",
    "sglang.kernels.ops.attention.rope",
    "sglang.kernels.ops.layernorm.norm",
    "sglang.kernels.ops.layernorm.rmsnorm_hf",
    "sglang.kernels.ops.attention.clamp_position",
    "sglang.kernels.ops.kvcache.kvcache",
)

_announced = False


def active() -> bool:
    return (os.environ.get(ENV) == "1" and os.environ.get("SGLANG_USE_CPU_ENGINE") != "1"
            and os.environ.get(OFF_ENV, "1") != "0")


def jit_replaced() -> bool:
    return active() and os.environ.get(JIT_ENV, "0") != "1"


def _ops():
    return importlib.import_module("esamp_gpu_shims.ops")


def _not_in_standin(module: str, name: str):
    def op(*args, **kwargs):
        raise NotImplementedError(f"{module}.{name} is not in the ESamp CUDA stand-in")

    op.__name__ = name
    op.__qualname__ = name
    return op


class StandInModule(types.ModuleType):
    """``sgl_kernel`` or one of its submodules: implemented ops, import-only names, and nothing else."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        impl = _ops().SGL_KERNEL_OPS.get(self.__name__, {}).get(name)
        if impl is None and name in IMPORT_ONLY.get(self.__name__, ()):
            impl = _not_in_standin(self.__name__, name)
        if impl is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (the ESamp CUDA stand-in for "
                                 "sgl_kernel is installed, not sgl-kernel)")
        setattr(self, name, impl)
        return impl


def _real_sgl_kernel_exists() -> bool:
    return importlib.machinery.PathFinder.find_spec("sgl_kernel") is not None


class SglKernelStandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Appended to the end of ``sys.meta_path``: serves the stand-in only where nothing else can."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MODULES or not active():
            return None
        if fullname == "sgl_kernel":
            if _real_sgl_kernel_exists():
                return None
        else:
            parent = sys.modules.get("sgl_kernel")
            if parent is None or not getattr(parent, MARK, False):
                return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=(fullname == "sgl_kernel"))

    def create_module(self, spec):
        global _announced
        module = StandInModule(spec.name)
        if spec.name == "sgl_kernel":
            module.__path__ = []
            if not _announced:
                _announced = True
                print(f"[esamp] sgl_kernel: serving the ESamp CUDA stand-in ({ENV}=1, no real sgl_kernel importable; "
                      f"SGLang JIT kernels {'replaced by torch' if jit_replaced() else 'kept'})",
                      file=sys.stderr, flush=True)
        setattr(module, MARK, True)
        return module

    def exec_module(self, module):
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, fullname):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        for name, impl in _ops().JIT_PATCHES.get(self._fullname, {}).items():
            setattr(module, name, impl)
        setattr(module, MARK, True)


class JitPatchFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: for the modules in ``JIT_MODULES``, finds the real module with the other finders
    and wraps its loader so that the torch replacements are set the moment it has executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in JIT_MODULES or not jit_replaced():
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, fullname)
                return spec
        return None


def install() -> bool:
    """Puts both finders in place when the stand-in is active (idempotent); returns whether it is active."""
    if not active():
        return False
    os.environ.setdefault("SGLANG_SKIP_SGL_KERNEL_VERSION_CHECK", "1")
    if not any(isinstance(f, SglKernelStandInFinder) for f in sys.meta_path):
        sys.meta_path.append(SglKernelStandInFinder())
    if not any(isinstance(f, JitPatchFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, JitPatchFinder())
    return True


install()
