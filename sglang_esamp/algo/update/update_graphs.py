"""The distiller update of a sync-free step as one replayable unit per shape bucket (issue #38, item 2), the update's
counterpart of ``step_graphs.py``.

``UpdateGraphs.run(src, tgt, slot_ids, host_slots)`` runs ``DeviceTrainStep`` (device_train_step.py: the bank's
training step with every decision on the device) on static buffers keyed by host facts only: the rows bucket, the
gathered-slots bucket (the batch's distinct slots, padded) and the width bucket (the most rows a slot has), all
from ``host_slots``, the plan's slot per row -- never from tensor values.
  * ``graph``  CUDA: captured once per key on the calling stream (the update worker's side stream with ``async``)
    and replayed; ~100 launches (forward, backward, clip, Adam) become one.
  * ``static`` CPU: the same buffers and padding, run eagerly.
  * ``eager``  more rows than the largest bucket, or a capture that failed: ``DeviceTrainStep`` on the step's own
    tensors (still no host read), counted in ``update_graph_eager_steps``.
The per-slot stats of each step are copied to host memory without waiting (a pinned buffer and an event on CUDA);
``fold_ready`` turns the copies that have landed into ``TrainResult``s and applies their resets, ``flush`` waits
for all of them. The caller (``ESampCore``) folds at the start of the next update and flushes wherever slots
change hands or counters are read, so a deferred reset never reaches a slot's next owner.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import torch

from ..distiller.bank import DistillerBank, TrainResult
from .device_train_step import DeviceTrainStep, bucket, fold, padded_slots
from ..replay import ROW_BUCKETS, WARMUP_RUNS, declare_counters, replay_mode, row_bucket

logger = logging.getLogger("sglang_esamp")
COUNTERS = ("update_graph_replays", "update_graph_captures", "update_graph_eager_steps", "update_graph_static_steps")


class _Buffers:
    def __init__(self, rows: int, slots: int, hidden: int, dtype, device):
        self.src = torch.zeros(rows, hidden, dtype=dtype, device=device)
        self.tgt = torch.zeros(rows, hidden, dtype=dtype, device=device)
        self.slot_ids = torch.full((rows,), -1, dtype=torch.int64, device=device)
        self.idx = torch.zeros(slots, dtype=torch.int64, device=device)
        self.stats: Optional[torch.Tensor] = None
        self.graph = None

    def load(self, src, tgt, slot_ids, idx):
        n = src.shape[0]
        self.src[:n].copy_(src)
        self.tgt[:n].copy_(tgt)
        self.slot_ids[:n].copy_(slot_ids)
        if n < self.slot_ids.shape[0]:
            self.slot_ids[n:].fill_(-1)        # padding rows: no slot (their src/tgt are never read into a loss)
        self.idx.copy_(idx)


class UpdateGraphs:
    def __init__(self, bank: DistillerBank, counters=None, mode: Optional[str] = None,
                 buckets: Sequence[int] = ROW_BUCKETS):
        self.bank = bank
        self.step_fn = DeviceTrainStep(bank)
        self.device = bank.device
        self.mode = replay_mode(mode, self.device, "UpdateGraphs")
        self.buckets = tuple(buckets)
        self.counters = counters
        self._buffers: Dict[tuple, _Buffers] = {}
        self._failed: set = set()
        self._pending: Deque[Tuple[torch.Tensor, Optional[torch.cuda.Event]]] = deque()
        declare_counters(counters, COUNTERS)

    def _count(self, name: str) -> None:
        if self.counters is not None:
            self.counters.add(name)

    # -- one step -------------------------------------------------------------------------------------------
    def run(self, src: torch.Tensor, tgt: torch.Tensor, slot_ids: torch.Tensor, host_slots: Sequence[int]) -> None:
        """Queue one update of the rows' slots (``slot_ids`` on the device, ``host_slots`` the same on the host)."""
        present = sorted({s for s in host_slots if s >= 0})
        if not present:
            return
        counts: Dict[int, int] = {}
        for s in host_slots:
            if s >= 0:
                counts[s] = counts.get(s, 0) + 1
        a_size = min(bucket(len(present)), self.bank.num_slots)
        width = bucket(max(counts.values()))
        # from pinned memory on CUDA: a copy from pageable memory may wait for the stream
        idx = torch.tensor(padded_slots(present, a_size, self.bank.num_slots), dtype=torch.int64,
                           pin_memory=self.device.type == "cuda").to(self.device, non_blocking=True)
        slot_ids = slot_ids.to(device=self.device, dtype=torch.int64)
        rows = row_bucket(src.shape[0], self.buckets)
        key = (rows, a_size, width, src.dtype)
        if self.mode == "eager" or rows is None or key in self._failed:
            self._count("update_graph_eager_steps")
            return self._queue(self.step_fn.step(src, tgt, slot_ids, idx, width))
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = _Buffers(rows, a_size, src.shape[1], src.dtype, self.device)
        buf.load(src, tgt, slot_ids, idx)
        if self.mode == "static":
            self._count("update_graph_static_steps")
            return self._queue(self.step_fn.step(buf.src, buf.tgt, buf.slot_ids, buf.idx, width))
        if buf.graph is None:
            try:
                self._capture(buf, width)
            except Exception as e:   # this key stays eager, counted; the step itself still runs
                self._failed.add(key)
                self._buffers.pop(key, None)
                logger.warning("ESamp update graph capture failed for %s (eager from now on): %r", key, e)
                self._count("update_graph_eager_steps")
                return self._queue(self.step_fn.step(src, tgt, slot_ids, idx, width))
            self._count("update_graph_captures")
        buf.graph.replay()
        self._count("update_graph_replays")
        self._queue(buf.stats)

    def _capture(self, buf: _Buffers, width: int) -> None:
        """Warm-up runs train the gathered slots for real, so their state is saved and put back after."""
        saved = self._slot_state(buf.idx)
        stream = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.step_fn.step(buf.src, buf.tgt, buf.slot_ids, buf.idx, width)
        stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                buf.stats = self.step_fn.step(buf.src, buf.tgt, buf.slot_ids, buf.idx, width)
        finally:
            for t, rows in saved:     # capture records the work without running it; the warm-ups did run
                t.index_copy_(0, buf.idx, rows)
        buf.graph = graph

    def _slot_state(self, idx: torch.Tensor):
        b = self.bank
        tensors = [*b.params.values(), *b.exp_avg.values(), *b.exp_avg_sq.values(), b.steps, b.device_baseline]
        return [(t, t.index_select(0, idx)) for t in tensors]

    # -- the stats, back on the host ------------------------------------------------------------------------
    def _queue(self, stats: torch.Tensor) -> None:
        if self.device.type == "cuda":
            host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            host.copy_(stats, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append((host, event))
        else:
            self._pending.append((stats.clone(), None))

    def fold_ready(self) -> List[TrainResult]:
        """The queued steps whose stats have landed, oldest first, as ``TrainResult``s (resets applied now)."""
        out = []
        while self._pending and (self._pending[0][1] is None or self._pending[0][1].query()):
            host, _ = self._pending.popleft()
            out.append(fold(self.bank, host.numpy().tolist()))   # host memory: .numpy() is no device read
        return out

    def flush(self) -> List[TrainResult]:
        """Every queued step, waiting for the copies still in flight."""
        for _, event in self._pending:
            if event is not None:
                event.synchronize()
        return self.fold_ready()
