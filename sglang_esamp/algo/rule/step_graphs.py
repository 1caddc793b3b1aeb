"""ESamp's per-step work (predict -> candidates -> reweight -> draw) as one replayable unit per shape bucket.

A sync-free step (``ESampCore.sync_free``) has shapes fixed by host facts only: the rows (padded up to a bucket)
and the candidate width (``filters.width_bucket``). So on CUDA the whole rule is captured once per (rows bucket,
width, vocab) in a CUDA graph and replayed -- ~200 kernel launches become one, as SGLang does for its own decode
forward. The inputs are copied into the bucket's static buffers (padding rows: slot 0, beta 0, their outputs
dropped), the graph replays, and the outputs are sliced back to the step's rows.

``StepGraphs.run`` is the one entry point; what it does per call is decided on the host:
  * ``graph``  CUDA, the bucket captured (or capturable now): replay.
  * ``static`` CPU (or ``mode="static"``): the same static buffers and padding, the rule run eagerly on them --
    the code path a replay takes, minus the capture, so CPU tests cover the padding and slicing.
  * ``eager``  the rule on the step's own tensors: steps a graph cannot take (seeded rows or sampled logprobs:
    their row lists vary; more rows than the largest bucket; a capture that failed), counted in
    ``graph_eager_steps`` (``graph_replays`` / ``graph_captures`` count the others).
The prediction waits for the previous update before the replay (host side), so staleness is unchanged. Gumbel
noise comes from the device's default generator, which CUDA graphs advance per replay (torch's graph-safe RNG).
"""
from __future__ import annotations

import logging
from dataclasses import fields, replace
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ..replay import ROW_BUCKETS, WARMUP_RUNS, declare_counters, replay_mode, row_bucket
from .inputs import RuleInputs
from .sampling import SampleOutput

logger = logging.getLogger("sglang_esamp")


# padding rows: no distiller, no reweighting, a harmless unfiltered draw
_PAD = {"slots": -1, "temperatures": 1.0, "top_ks": 1, "top_ps": 1.0, "min_ps": 0.0, "betas": 0.0,
        "distiller_coef": 0.0, "divisor": 1.0}


class _Bucket:
    def __init__(self, inputs: RuleInputs, rows: int):
        """Static buffers of ``rows`` rows shaped like ``inputs``' tensors, filled from them (``load``)."""
        buffers = {name: getattr(inputs, name) for name in inputs.tensors()}
        self.inputs = replace(inputs, **{name: t.new_empty((rows,) + tuple(t.shape[1:])) for name, t in buffers.items()})
        self.outputs: Optional[Tuple[torch.Tensor, SampleOutput]] = None
        self.graph = None
        self.load(inputs)

    def load(self, inputs: RuleInputs) -> None:
        """Copy a step's inputs in; the rows past them become padding rows (``_PAD``; 0 for the [R, ...] tensors)."""
        for name in self.inputs.tensors():
            dst, src = getattr(self.inputs, name), getattr(inputs, name)
            n = src.shape[0]
            dst[:n].copy_(src.reshape(dst[:n].shape))
            if n < dst.shape[0]:
                dst[n:].fill_(_PAD.get(name, 0.0))


def _sliced(h_hat: torch.Tensor, out: SampleOutput, rows: int,
            copy: bool) -> Tuple[torch.Tensor, SampleOutput]:
    """The first ``rows`` rows of a bucket's outputs; ``copy``: clones (a graph's outputs are overwritten by the
    next replay)."""
    take = (lambda t: t[:rows].clone()) if copy else (lambda t: t[:rows])
    return take(h_hat), SampleOutput(**{f.name: take(getattr(out, f.name)) for f in fields(SampleOutput)})


class StepGraphs:
    """``rule(inputs) -> (h_hat, SampleOutput)``, replayed per bucket (see the module docstring)."""

    def __init__(self, rule: Callable[[RuleInputs], Tuple[torch.Tensor, SampleOutput]], device,
                 counters=None, mode: Optional[str] = None, buckets: Sequence[int] = ROW_BUCKETS):
        self.rule = rule
        self.device = torch.device(device)
        self.mode = replay_mode(mode, self.device, "StepGraphs")
        self.buckets = tuple(buckets)
        self.counters = counters
        self._buckets: Dict[tuple, _Bucket] = {}
        self._failed: set = set()
        declare_counters(counters, ("graph_replays", "graph_captures", "graph_eager_steps", "graph_static_steps"))

    def reset(self) -> None:
        """Forget every bucket (their graphs read tensors that were replaced, e.g. the LM head)."""
        self._buckets.clear()
        self._failed.clear()

    def _count(self, name: str) -> None:
        if self.counters is not None:
            self.counters.add(name)

    def run(self, inputs: RuleInputs) -> Tuple[torch.Tensor, SampleOutput]:
        """The rule on ``inputs`` (a sync-free step's: ``inputs.width`` set): replayed, static or eager."""
        r, width = inputs.h_src.shape[0], inputs.width
        rows = row_bucket(r, self.buckets)
        noise = None if inputs.noise is None else tuple(inputs.noise.shape[1:])
        key = (rows, int(width), int(inputs.logits.shape[1]), inputs.logits.dtype, inputs.h_src.dtype, noise,
               inputs.divisor is not None)
        # seeded rows take it eagerly: their row list varies from step to step
        if self.mode == "eager" or inputs.seeded is not None or rows is None or key in self._failed:
            self._count("graph_eager_steps")
            return self.rule(inputs)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(inputs, rows)   # filled from this step's inputs
        else:
            bucket.load(inputs)
        if self.mode == "static":
            self._count("graph_static_steps")
            return _sliced(*self.rule(bucket.inputs), r, copy=False)
        if bucket.graph is None:
            try:
                self._capture(bucket)
            except Exception as e:   # a shape the capture cannot take: this bucket stays eager, counted
                self._failed.add(key)
                self._buckets.pop(key, None)
                logger.warning("ESamp step graph capture failed for rows %d width %d (eager from now on): %r",
                               rows, width, e)
                self._count("graph_eager_steps")
                return self.rule(inputs)
            self._count("graph_captures")
        bucket.graph.replay()
        self._count("graph_replays")
        return _sliced(*bucket.outputs, r, copy=True)

    def _capture(self, bucket: _Bucket) -> None:
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):   # lazy inits (Triton compiles, cuBLAS handles) happen outside the capture
                self.rule(bucket.inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads of the scheduler (an idle update worker, SGLang's own) may touch CUDA
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            bucket.outputs = self.rule(bucket.inputs)
        bucket.graph = graph
