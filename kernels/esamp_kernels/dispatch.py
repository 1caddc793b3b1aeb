"""Which implementation an operation runs (Triton or torch), the switch that forces one, and the counters.

Mode: ``set_kernel_mode(...)`` (programmatic, e.g. from the ESamp config) wins over the env ``ESAMP_KERNELS``;
both take ``auto`` (default: Triton on CUDA tensors when the kernel supports the shapes, torch otherwise),
``torch`` or ``triton``. Forcing ``triton`` on CPU tensors is allowed only under ``TRITON_INTERPRET=1`` (tests),
and a forced call that the kernel cannot take raises ``KernelUnsupportedError`` before any launch.
"""
from __future__ import annotations

import copy
import os
import threading
from typing import Callable, Dict, Optional

import torch

from .support import interpreting

MODES = ("auto", "torch", "triton")
ENV_VAR = "ESAMP_KERNELS"
OPERATIONS = ("candidate_novelty", "grouped_forward")


class KernelUnsupportedError(ValueError):
    """Triton was forced for a call its kernel cannot take (raised before launch, never mid-kernel)."""


_lock = threading.Lock()
_override: Optional[str] = None
_counters: Dict[str, Dict[str, int]] = {op: {"triton": 0, "torch": 0} for op in OPERATIONS}


def _check_mode(mode: str, source: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{source}: kernel mode {mode!r} is not one of {MODES}")
    return mode


def set_kernel_mode(mode: Optional[str]) -> None:
    """Force ``torch`` / ``triton``, or ``auto``; ``None`` removes the override (the env var applies again)."""
    global _override
    _override = None if mode is None else _check_mode(mode, "set_kernel_mode")


def kernel_mode() -> str:
    """The mode in force now: the programmatic override, else ``$ESAMP_KERNELS``, else ``auto``."""
    if _override is not None:
        return _override
    return _check_mode(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


def kernel_counters() -> Dict[str, Dict[str, int]]:
    """A copy of ``{operation: {"triton": calls, "torch": calls}}``."""
    with _lock:
        return copy.deepcopy(_counters)


def reset_kernel_counters() -> None:
    with _lock:
        for c in _counters.values():
            c["triton"] = c["torch"] = 0


def _count(op: str, impl: str) -> None:
    with _lock:
        _counters[op][impl] += 1


def choose(op: str, device: torch.device, why_not: Callable[[], Optional[str]]) -> str:
    """Pick ``"triton"`` or ``"torch"`` for one call and count it.

    ``why_not`` says why the kernel cannot take these tensors (or None); it is only asked when Triton is a
    candidate, so CPU calls in ``auto`` mode never import triton.
    """
    mode = kernel_mode()
    if mode == "torch":
        impl = "torch"
    elif mode == "auto":
        impl = "triton" if device.type == "cuda" and why_not() is None else "torch"
    else:
        if device.type != "cuda" and not interpreting():
            raise KernelUnsupportedError(
                f"{op}: triton forced on {device.type} tensors; only CUDA, or CPU under TRITON_INTERPRET=1")
        reason = why_not()
        if reason is not None:
            raise KernelUnsupportedError(f"{op}: triton forced but unsupported: {reason}")
        impl = "triton"
    _count(op, impl)
    return impl
