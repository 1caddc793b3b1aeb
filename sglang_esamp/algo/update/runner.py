"""Where a distiller update runs: now (``serial``) or overlapped with the rest of the step (``async``).

Staleness contract (DESIGN §1): the prediction at step t uses the weights after the update of step t-1 -- exactly
one step behind, never a torn mix. ``ESampCore`` hands each step's update to a runner with ``submit`` and calls
``wait`` before anything reads or writes the bank (the next ``predict``, ``acquire_slot``, ``release_slot``);
``wait`` is the one synchronisation point. At most one update is in flight: ``submit`` waits for the previous one
first. What each update returns is kept until the caller takes it (``take_results``, on the caller's thread).

* ``SerialUpdateRunner``: the update runs inside ``submit`` (the diagnostic baseline, ``--esamp-update-mode
  serial``).
* ``ThreadUpdateRunner`` (``async``; the default through ``auto`` on a CPU with a core to spare): one persistent
  worker thread runs the update while the
  scheduler finishes the step (output processing, scheduling, the next forward). On CPU the worker uses the
  process's intra-op thread setting (torch's thread count is process-wide; with ``OMP_NUM_THREADS=1`` the forward
  and the update each take one core). On CUDA the worker issues the update on its own side stream after an event
  recorded on the caller's stream (the inputs are ready), records a done event, and ``wait`` makes the caller's
  current stream wait on it (a stream-side wait, no host sync for the GPU work). The update's own host reads (the
  per-slot losses the counters record) happen on the worker thread, off the scheduler's path.
An exception in the update is re-raised by the next ``wait`` (the caller decides how to contain it).
"""
from __future__ import annotations

import os
import threading
from typing import Callable, List, Optional

import torch


class SerialUpdateRunner:
    def __init__(self):
        self.last_result = None
        self._results: List[object] = []

    def submit(self, fn: Callable[[], object], keep: bool = False) -> None:
        self.last_result = fn()
        if keep:
            self._results.append(self.last_result)

    def wait(self) -> None:
        return None

    def take_results(self) -> List[object]:
        out, self._results = self._results, []
        return out

    def close(self) -> None:
        return None


class ThreadUpdateRunner:
    def __init__(self, device: torch.device, name: str = "esamp-update"):
        self.device = torch.device(device)
        self.last_result = None
        self._results: List[object] = []
        self._cv = threading.Condition()
        self._job: Optional[Callable[[], object]] = None
        self._busy = False
        self._error: Optional[BaseException] = None
        self._closed = False
        cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(device=self.device) if cuda else None
        self._ready = torch.cuda.Event() if cuda else None
        self._done = torch.cuda.Event() if cuda else None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], object], keep: bool = False) -> None:
        """Run ``fn`` as the next update; ``keep``: hold its result for ``take_results``."""
        self.wait()
        if self._ready is not None:
            self._ready.record(torch.cuda.current_stream(self.device))
        with self._cv:
            self._job = (fn, keep)
            self._busy = True
            self._cv.notify_all()

    def wait(self) -> None:
        with self._cv:
            while self._busy:
                self._cv.wait()
            error, self._error = self._error, None
        if self._done is not None:
            torch.cuda.current_stream(self.device).wait_event(self._done)
        if error is not None:
            raise error

    def take_results(self) -> List[object]:
        with self._cv:
            out, self._results = self._results, []
        return out

    @property
    def pending(self) -> bool:
        return self._busy

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _loop(self):
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._closed and self._job is None:
                    return
                (fn, keep), self._job = self._job, None
            result, error = None, None
            try:
                # the scheduler runs under inference mode; the update needs ordinary autograd tensors
                with torch.inference_mode(False), torch.enable_grad():
                    if self._stream is not None:
                        with torch.cuda.stream(self._stream):
                            self._stream.wait_event(self._ready)
                            result = fn()
                            self._done.record(self._stream)
                    else:
                        result = fn()
            except BaseException as e:  # re-raised in the caller's wait()
                error = e
            with self._cv:
                self.last_result = result
                if error is None and keep:
                    self._results.append(result)
                self._error = error
                self._busy = False
                self._cv.notify_all()


def resolve_mode(mode: str, device: torch.device) -> str:
    """``auto`` = serial on CUDA; on CPU async when a core is left beside the forward's intra-op threads for the
    worker, serial when the forward already takes every core (the worker would compete with it for the cores and
    the GIL). Measured on the 2-core machines, one forward thread (docs/performance.md): SmolLM2 --quick async /
    serial side by side 1.15 (median of 3 rounds, 0.95-1.24); on a shared machine with the other core busy, async
    lost (on/off 0.947 against 1.009 serial). On an H200 with an eager forward (what the server runs while CUDA
    graphs are refused) the step is host-bound and the worker competes with the launching thread for the GIL:
    async took 1.24x serial's time per step at 64 rows x 8 slots and 1.01x at 256 x 32
    (benchmarks/gpu/async_update_check.py); ``async`` stays selectable."""
    if mode != "auto":
        return mode
    if torch.device(device).type == "cuda":
        return "serial"
    return "async" if _cores() > torch.get_num_threads() else "serial"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def make_update_runner(mode: str, device: torch.device):
    return ThreadUpdateRunner(device) if resolve_mode(mode, device) == "async" else SerialUpdateRunner()
