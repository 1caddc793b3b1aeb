"""Import-time fixes that let stock SGLang 0.5.23 run on a CPU-only machine.

Loaded from ``sglang_esamp_cpu_shims.pth`` at every interpreter start in the venv, so SGLang's spawned
scheduler and detokenizer get them too (a plugin loads too late: the scheduler module imports
``sgl_kernel`` at import time). Standard library only; nothing here imports torch eagerly.

1. ``sgl_kernel`` stub: no CPU build of sgl-kernel exists on PyPI, yet SGLang's CPU engine imports a few
   CPU ops at module level. Without AMX those ops are never *called* (layers fall back to native torch).
   The stub is served only when ``SGLANG_USE_CPU_ENGINE=1`` and no real ``sgl_kernel`` is importable (the
   finder sits last on ``sys.meta_path``, so a real install on a GPU box always wins). It exposes only
   names ending in ``_cpu`` and a few activation ops; everything else raises ImportError so that
   SGLang's own ``try: from sgl_kernel import X / except ImportError`` fallbacks keep working.
2. torchvision op schema: PyPI's torchvision is a CUDA build whose ``_C`` cannot load beside a CPU
   torch, and its meta registrations then fail on ``torchvision::nms``. Defining the two schemas before
   the first ``import torchvision`` lets it import (the ops are never used by SGLang's text models).

``SGLANG_ESAMP_CPU_SHIMS=0`` disables both.
"""
import importlib.abc
import importlib.machinery
import os
import sys
import types

_STUB_MODULES = ("sgl_kernel", "sgl_kernel.mamba")
_STUB_EXTRA_NAMES = frozenset({"gelu_and_mul", "gelu_tanh_and_mul", "silu_and_mul", "moe_sum_reduce"})


def _stub_allows(name: str) -> bool:
    return name.endswith("_cpu") or name in _STUB_EXTRA_NAMES


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") or not _stub_allows(name):
            raise AttributeError(f"{self.__name__}.{name} (only the CPU stub of sgl_kernel is installed)")

        def _not_available(*args, **kwargs):
            raise NotImplementedError(f"{self.__name__}.{name}: only the CPU stub of sgl_kernel is installed")

        _not_available.__name__ = name
        return _not_available


class _SglKernelStubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _STUB_MODULES or os.environ.get("SGLANG_USE_CPU_ENGINE") != "1":
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=(fullname == "sgl_kernel"))

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = [] if spec.name == "sgl_kernel" else None
        if module.__path__ is None:
            del module.__path__
        module.__esamp_cpu_stub__ = True
        return module

    def exec_module(self, module):
        return None


class _TorchvisionSchemaFix(importlib.abc.MetaPathFinder):
    """Runs once, just before the first ``import torchvision``; then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        _define_torchvision_schemas()
        return None  # let the normal finders import torchvision


def _define_torchvision_schemas():
    import torch

    if torch.version.cuda is not None:  # a CUDA torch loads torchvision's own ops
        return
    for op in ("nms", "qnms"):
        try:
            getattr(torch.ops.torchvision, op)
            continue  # already registered (a matching CPU torchvision)
        except (AttributeError, RuntimeError):
            pass
        try:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass


def install():
    if os.environ.get("SGLANG_ESAMP_CPU_SHIMS", "1") == "0":
        return
    if not any(isinstance(f, _SglKernelStubFinder) for f in sys.meta_path):
        sys.meta_path.append(_SglKernelStubFinder())
    if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionSchemaFix) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionSchemaFix())


install()
