"""Fixture batches for one ESamp step without a server (tests/runtime/test_step*.py): the runtime's real parts
(core, group table, members, tap buffers, faults) and SGLang's own Sampler class in a scoped SGLang context."""
import contextlib
import types

import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.faults import FaultInjector
from sglang_esamp.algo.group_table import GroupTable
from sglang_esamp.runtime import step, step_state
from sglang_esamp.runtime.esamp_runtime import declare_runtime_counters
from sglang_esamp.runtime.step_clock import StepClock
from sglang_esamp.runtime.members import Members
from sglang_esamp.runtime.metrics import PrometheusSink
from sglang_esamp.runtime.tap_buffers import TapBuffers
from sglang_esamp.wire.request import stamp_group

H, V = 16, 48


def make_runtime(slots=2, faults=None, mode="serial", sync_free="off"):
    cfg = ESampConfig(bank_slots=slots, width=8, session_max=0, update_mode=mode, debug_faults=faults,
                      sync_free=sync_free)
    core = ESampCore(cfg, H, torch.randn(V, H, generator=torch.Generator().manual_seed(0)))
    table = GroupTable(core, core.counters, linger_s=cfg.group_linger_s, session_ttl_s=cfg.session_ttl_s,
                       session_max=cfg.session_max)
    rt = types.SimpleNamespace(core=core, table=table, members=Members(core, table, cfg), counters=core.counters,
                               tap_buffers=TapBuffers(H, torch.float32, "cpu", masked=core.sync_free),
                               metrics=PrometheusSink(),
                               faults=FaultInjector(faults, seed=0, counters=core.counters), clock=StepClock(),
                               snapshot=lambda: {})
    declare_runtime_counters(core.counters)   # the real runtime's list, not a copy
    return rt


def req(rid, esamp, parent, n, seed=None):
    custom = None if esamp is None else stamp_group({"esamp": esamp}, default_key=parent, default_size=n)
    sp = types.SimpleNamespace(custom_params=custom, max_new_tokens=16, sampling_seed=seed)
    return types.SimpleNamespace(rid=rid, sampling_params=sp, origin_input_ids=[1, 2, 3])


class Batch:
    """A ScheduleBatch and its ForwardBatch with what the step reads; ``mode``: SGLang's own ForwardMode."""

    def __init__(self, reqs, mode="DECODE", seq_len=5, top_k=None, min_p=0.0):
        from sglang.srt.model_executor.forward_batch_info import ForwardMode
        from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo

        b = len(reqs)
        for r in reqs:   # what SGLang's SamplingParams.normalize leaves on the request (no top-k: TOP_K_ALL)
            r.sampling_params.top_k = top_k or (1 << 30)
        self.schedule = types.SimpleNamespace(reqs=reqs)
        self.positions = torch.full((b,), seq_len - 1, dtype=torch.int64)
        info = SamplingBatchInfo(
            temperatures=torch.ones(b, 1), top_ps=torch.ones(b),
            top_ks=torch.full((b,), top_k or V, dtype=torch.int32), min_ps=torch.full((b,), min_p),
            is_all_greedy=False, is_any_greedy=False, need_top_p_sampling=False, need_top_k_sampling=top_k is not None,
            need_min_p_sampling=min_p > 0, vocab_size=V, device="cpu")
        self.forward = types.SimpleNamespace(forward_mode=getattr(ForwardMode, mode), rids=[r.rid for r in reqs],
                                             seq_lens=torch.full((b,), seq_len), positions=self.positions,
                                             sampling_info=info)
        self.logits = torch.randn(b, V, generator=torch.Generator().manual_seed(seq_len))

    def write_taps(self, rt):
        g = torch.Generator().manual_seed(7)
        n = len(self.schedule.reqs)
        rt.tap_buffers.write("source", torch.randn(n, H, generator=g), self.positions)
        rt.tap_buffers.write("target", 3 * torch.randn(n, H, generator=g), self.positions)


@contextlib.contextmanager
def sglang_context():
    from sglang.srt.runtime_context import get_context, get_parallel

    with get_context().override_server_args(sampling_backend="pytorch", device="cpu"), \
            get_parallel().override(tp_group=types.SimpleNamespace(device_group=None)):
        yield


def one_step(rt, batch: Batch, taps=True):
    """What the shims do around one forward: plan (attach), taps, run around SGLang's real Sampler (detach)."""
    from sglang.srt.layers.logits_processor import LogitsProcessorOutput

    from sglang_esamp.runtime.sampler import ESampSampler

    info = batch.forward.sampling_info
    planned = step.plan(rt, batch.forward, batch.schedule)
    if planned is None:
        return None, None
    step_state.attach(info, rt, planned)
    if taps:
        batch.write_taps(rt)
    with sglang_context():
        sampler = ESampSampler()

        def sglang_sample(armed):
            if not armed:
                step_state.detach(info)
            return sampler.forward(LogitsProcessorOutput(next_token_logits=batch.logits.clone()), info, False, [],
                                   [], batch.positions)
        try:
            return planned, step.run(rt, planned, batch.forward, sglang_sample)
        finally:
            step_state.detach(info)
