"""One ESamp step without a server (runtime/step.py, runtime/sampler.py): fixture batches through ``step.plan`` and
``step.run`` around SGLang's own Sampler (the real class, in a scoped SGLang context), with the runtime's real parts
(core, group table, members, tap buffers, faults). Mirrors the numbered steps: plan, taps, predict, sample,
update (and settle), leave."""
import contextlib
import types

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.faults import FaultInjector
from sglang_esamp.algo.group_table import GroupTable
from sglang_esamp.runtime import step, step_state
from sglang_esamp.runtime.members import Members
from sglang_esamp.runtime.metrics import PrometheusSink
from sglang_esamp.runtime.tap_buffers import TapBuffers
from sglang_esamp.wire.request import stamp_group

H, V = 16, 48


def make_runtime(slots=2, faults=None, mode="serial"):
    cfg = ESampConfig(bank_slots=slots, width=8, session_max=0, update_mode=mode, debug_faults=faults)
    core = ESampCore(cfg, H, torch.randn(V, H, generator=torch.Generator().manual_seed(0)))
    table = GroupTable(core, core.counters, linger_s=cfg.group_linger_s, session_ttl_s=cfg.session_ttl_s,
                       session_max=cfg.session_max)
    rt = types.SimpleNamespace(core=core, table=table, members=Members(core, table, cfg), counters=core.counters,
                               tap_buffers=TapBuffers(H, torch.float32, "cpu"), metrics=PrometheusSink(),
                               faults=FaultInjector(faults, seed=0, counters=core.counters), in_flight=None,
                               snapshot=lambda: {})
    for name in ("tap_misses", "mixed_batches_skipped", "decode_steps", "esamp_steps", "step_errors",
                 "prefill_rows_sampled", "stock_draws_skipped"):
        core.counters.declare(name)
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
    step_state.attach(info, planned)
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


# -- 1. plan ---------------------------------------------------------------------------------------------------------
def test_plan_takes_only_the_esamp_rows_and_joins_their_group():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 2), req("x", None, "x", 1), req("b", {"beta": 0.5}, "p", 2)]
    planned = step.plan(rt, Batch(reqs).forward, types.SimpleNamespace(reqs=reqs))
    assert planned.rows.tolist() == [0, 2] and planned.slots.tolist() == [0, 0]
    assert planned.distiller_coef.tolist() == [1.0, 1.0] and rt.core.occupancy == 1
    assert rt.counters.get("decode_steps") == 1


def test_plan_refuses_a_row_map_that_does_not_match_the_forward_batch():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    batch = Batch(reqs)
    batch.forward.rids = ["someone-else"]
    with pytest.raises(RuntimeError, match="row map"):
        step.plan(rt, batch.forward, batch.schedule)


def test_a_mixed_batch_is_skipped_and_counted():
    rt = make_runtime()
    assert step.plan(rt, Batch([req("a", {"beta": 0.5}, "p", 1)], mode="MIXED").forward,
                     types.SimpleNamespace(reqs=[])) is None
    assert rt.counters.get("mixed_batches_skipped") == 1


# -- 2.-5. one decode step ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["serial", "async"])
def test_a_decode_step_reweights_trains_and_counts_on_the_scheduler_thread(mode):
    rt = make_runtime(mode=mode)
    reqs = [req("a", {"beta": 0.5}, "p", 2), req("b", {"beta": 0.5}, "p", 2), req("x", None, "x", 1)]
    planned, ids = one_step(rt, Batch(reqs, top_k=8))
    assert ids.shape == (3,) and planned.out is not None
    assert all(int(t) in set(c.tolist()) for t, c in zip(ids[:2], planned.out.cand_ids))   # drawn from the candidates
    assert rt.counters.get("esamp_steps") == 1 and rt.counters.get("stock_draws_skipped") == 0
    a, b = (rt.members.member_of(r) for r in reqs[:2])
    step.settle(rt)            # the update's measurements are applied here, on this thread
    assert (a.rows, b.rows) == (1, 1) and a.multi_candidate_rows == 1
    st = rt.core.stats()
    assert st["updates"] == 1 and st["candidate_rows_reweighted"] == 2 and st["finite_losses"] == 1


def test_the_update_thread_writes_nothing_into_members():
    """async: until settle runs, the members' counts are untouched (the update returns what it measured)."""
    rt = make_runtime(mode="async")
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    one_step(rt, Batch(reqs))
    rt.core.runner.wait()     # the update finished on its thread ...
    m = rt.members.member_of(reqs[0])
    assert m.rows == 0        # ... and wrote nothing into the member
    step.settle(rt)
    assert m.rows == 1


def test_an_all_esamp_batch_skips_sglangs_own_draw():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    one_step(rt, Batch(reqs))
    assert rt.counters.get("stock_draws_skipped") == 1


def test_a_tap_miss_samples_stock_and_is_counted_per_request():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1), req("x", None, "x", 1)]
    batch = Batch(reqs)
    planned, ids = one_step(rt, batch, taps=False)
    assert planned.out is None and planned.h_hat is None
    assert rt.counters.get("tap_misses") == 1 and rt.counters.get("esamp_steps") == 0
    assert rt.members.member_of(reqs[0]).skipped_rows == 1 and rt.core.stats()["updates"] == 0


@pytest.mark.parametrize("point", ["predict", "sample"])
def test_a_fault_in_the_step_is_contained(point):
    rt = make_runtime(faults=f"{point}:1")
    reqs = [req("a", {"beta": 0.5}, "p", 1), req("x", None, "x", 1)]
    planned, ids = one_step(rt, Batch(reqs))
    assert ids.shape == (2,)                                   # the step still sampled every row (stock)
    st = rt.core.stats()
    assert rt.counters.get("step_errors") == 1 and st["error_resets"] == 1 and st["updates"] == 0
    assert rt.members.member_of(reqs[0]).skipped_rows == 1


def test_an_update_fault_surfaces_at_the_next_settle_against_its_own_step():
    rt = make_runtime(faults="update:1", mode="async")
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    one_step(rt, Batch(reqs))
    assert rt.counters.get("esamp_steps") == 1 and rt.in_flight is not None
    step.settle(rt)
    assert rt.counters.get("step_errors") == 1 and rt.core.stats()["error_resets"] == 1
    assert rt.in_flight is None and rt.members.member_of(reqs[0]).skipped_rows == 0   # it sampled with ESamp


def test_a_group_released_between_plan_and_sample_keeps_no_row():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    batch = Batch(reqs)
    planned = step.plan(rt, batch.forward, batch.schedule)
    step.leave(rt, rt.members.member_of(reqs[0]))           # e.g. aborted while the forward ran
    batch.write_taps(rt)
    assert step._prepare(rt, planned, batch.forward) is False and planned.members == []


# -- prefill rows that need ESamp's own sampler -------------------------------------------------------------------
def test_a_seeded_request_draws_its_first_token_with_the_esamp_rule_and_beta_zero():
    rt = make_runtime()
    reqs = [req("a", {"beta": 0.5}, "p", 1, seed=11)]
    planned, ids = one_step(rt, Batch(reqs, mode="EXTEND"), taps=False)
    assert planned.sample_only and planned.betas.tolist() == [0.0] and planned.out is not None
    assert rt.counters.get("prefill_rows_sampled") == 1 and rt.core.occupancy == 0
    again, ids2 = one_step(make_runtime(), Batch([req("a2", {"beta": 0.5}, "p2", 1, seed=11)], mode="EXTEND"),
                           taps=False)
    assert torch.equal(ids, ids2)                           # reproducible from the first token


# -- 6. leave ----------------------------------------------------------------------------------------------------------
def test_leave_settles_the_last_step_and_frees_the_slot_with_the_last_member():
    rt = make_runtime(mode="async")
    reqs = [req("a", {"beta": 0.5}, "p", 2), req("b", {"beta": 0.5}, "p", 2)]
    one_step(rt, Batch(reqs))
    a, b = (rt.members.member_of(r) for r in reqs)
    step.leave(rt, a)
    assert a.rows == 1 and rt.members.report(a)["steps"] == 1 and rt.core.occupancy == 1
    step.leave(rt, b)
    assert rt.core.occupancy == 0 and rt.table.groups == {}
    assert rt.members.report(b)["slot"] == 0 and rt.members.report(b)["rows"] == 1
