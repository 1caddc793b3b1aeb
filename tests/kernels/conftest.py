"""Kernel tests run the Triton kernels in Triton's CPU interpreter, on one thread.

TRITON_INTERPRET must be set before any ``@triton.jit`` decorator runs (it picks the interpreter at decoration
time), i.e. before ``esamp_kernels.*_triton`` is imported; pytest imports this file before the test modules.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clean_kernel_dispatch(monkeypatch):
    """Every test starts in auto mode with zeroed counters, whatever the environment says."""
    from esamp_kernels import ops

    monkeypatch.delenv("ESAMP_KERNELS", raising=False)
    ops.set_kernel_mode(None)
    ops.reset_kernel_counters()
    yield
    ops.set_kernel_mode(None)
    ops.reset_kernel_counters()
