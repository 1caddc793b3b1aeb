"""``no_host_reads()``: fails on any op that reads a tensor's value back to the host on the calling thread.

What a sync-free ESamp step must never do (on CUDA each is a device sync, and a CUDA graph cannot capture one):
``.item()`` / ``bool()`` / ``int()`` (``aten._local_scalar_dense``, ``aten.is_nonzero``), ``torch.equal``, and the
ops whose output shape depends on the values (``nonzero``, ``unique``, ``masked_select``, ``bincount``,
``repeat_interleave`` without a size), plus ``Tensor.tolist()`` (on CPU it reads memory without the dispatcher).
A dispatch mode is per thread: an update running on the async worker thread is not checked (it is off the step).
"""
import contextlib
import threading

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
BANNED = {aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.nonzero, aten._unique2, aten.unique_dim,
          aten.unique_consecutive, aten.masked_select, aten.bincount, aten.repeat_interleave}


class HostRead(AssertionError):
    pass


class _Guard(TorchDispatchMode):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func.overloadpacket.__name__)
        if func.overloadpacket in BANNED:
            raise HostRead(f"host read on the step: {func}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_host_reads():
    """Yields the set of op names seen (so a test can check the guard saw the step's work at all)."""
    seen: set = set()
    owner = threading.get_ident()
    tolist = torch.Tensor.tolist

    def guarded_tolist(self):
        if threading.get_ident() == owner:
            raise HostRead("host read on the step: Tensor.tolist()")
        return tolist(self)

    torch.Tensor.tolist = guarded_tolist
    try:
        with _Guard(seen):
            yield seen
    finally:
        torch.Tensor.tolist = tolist
