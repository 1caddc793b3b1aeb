"""Kernel tests run the Triton kernels in Triton's CPU interpreter, on one thread.

``@triton.jit`` picks the interpreter when it decorates (i.e. when ``esamp_kernels.*_triton`` is imported), so the
kernel modules are imported here with TRITON_INTERPRET=1. The variable is then restored, so triton code that other
test directories import in the same pytest process is not switched to the interpreter, and set again around each
test of this directory (the dispatch reads it to allow forcing triton on CPU tensors).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

_saved = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    import esamp_kernels.candidate_triton  # noqa: E402,F401
    import esamp_kernels.grouped_forward_triton  # noqa: E402,F401
finally:
    if _saved is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _saved

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _interpreter_and_clean_dispatch(monkeypatch):
    """Every test runs under TRITON_INTERPRET=1, in auto mode with zeroed counters, whatever the environment says."""
    from esamp_kernels import ops

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("ESAMP_KERNELS", raising=False)
    ops.set_kernel_mode(None)
    ops.reset_kernel_counters()
    yield
    ops.set_kernel_mode(None)
    ops.reset_kernel_counters()
