"""The sync-free ESamp step (``--esamp-sync-free``, what a CUDA server runs): no ESamp function of a step reads a
tensor's value back to the host, and it gives the tokens the adaptive step gives.

Each of ESamp's step functions (plan, taps, settle, predict and the rule, the update's submission) runs under
``tests.host_reads.no_host_reads``; SGLang's own Sampler around them is not ours to check. The update runs async:
its host reads (loss, grad norms, the per-request measurement) are on the worker thread, off the step.
"""
import contextlib
import functools

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.rule.filters import width_bucket
from tests.rule_call import rule
from sglang_esamp.algo.rule.inputs import RuleInputs
from sglang_esamp.algo.rule.seeded_noise import SeededRows
from sglang_esamp.runtime import step
from tests.host_reads import HostRead, no_host_reads

from .step_fixtures import Batch, make_runtime, one_step, req

GUARDED = ("plan", "read_taps", "settle", "sample", "update")


@contextlib.contextmanager
def guarded_step_functions(monkeypatch):
    """Every guarded step function runs under ``no_host_reads``; yields the op names they ran."""
    seen = set()

    def guard(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with no_host_reads() as ops:
                try:
                    return fn(*args, **kwargs)
                finally:
                    seen.update(ops)
        return wrapped

    for name in GUARDED:
        monkeypatch.setattr(step, name, guard(getattr(step, name)))
    yield seen


def esamp_reqs(n=3, beta=0.5, seed=None):
    return [req(f"r{i}", {"beta": beta}, "p", n, seed=seed) for i in range(n)]


@pytest.mark.parametrize("top_k,min_p", [(8, 0.0), (None, 0.05), (None, 0.0)], ids=["top_k", "min_p", "none"])
def test_a_whole_decode_step_reads_nothing_back_to_the_host(monkeypatch, top_k, min_p):
    rt = make_runtime(mode="async", sync_free="on")
    reqs = esamp_reqs() + [req("x", None, "x", 1)]
    with guarded_step_functions(monkeypatch) as seen:
        for seq_len in (5, 6, 7):   # the group's first step (slot acquired) and two more with updates landed
            planned, ids = one_step(rt, Batch(reqs, seq_len=seq_len, top_k=top_k, min_p=min_p))
            assert planned.error is None and planned.out is not None and ids.shape == (4,)
    assert {"topk", "index_select"} <= seen                  # the guard saw the step's real work
    step.settle(rt)
    st = rt.core.stats()
    assert st["updates"] == 3 and st["rows_trained"] == 9 and st["candidate_rows_reweighted"] == 9
    # the update ran as UpdateGraphs (tests/algo/test_update_graphs.py runs it under the guard)
    assert st["update_graph_static_steps"] == 3 and st["update_graph_eager_steps"] == 0
    assert rt.counters.get("tap_misses") == 0 and rt.counters.get("esamp_steps") == 3


def test_the_guard_catches_the_adaptive_step():
    """The adaptive step (CPU's default) does read back: the guard is not blind."""
    rt = make_runtime(mode="async", sync_free="off")
    batch = Batch(esamp_reqs(), top_k=8)
    planned = step.plan(rt, batch.forward, batch.schedule)
    batch.write_taps(rt)
    with pytest.raises(HostRead):
        with no_host_reads():
            step.read_taps(rt, planned, batch.forward)


def test_a_stale_tap_row_is_masked_and_counted_without_a_host_read(monkeypatch):
    rt = make_runtime(mode="async", sync_free="on")
    reqs = esamp_reqs(2)
    batch = Batch(reqs, top_k=8)
    planned = step.plan(rt, batch.forward, batch.schedule)
    batch.write_taps(rt)
    rt.tap_buffers.stamp["source"][1] = -1            # the shallow tap missed row 1
    with no_host_reads():
        assert step.read_taps(rt, planned, batch.forward)
    assert planned.fresh.tolist() == [True, False]
    assert planned.terms.betas.tolist() == [0.5, 0.0] and planned.terms.slots.tolist() == [0, -1]
    assert rt.counters.get("tap_misses") == 1          # folded from the device at read time


def test_a_stale_row_samples_unreweighted_untrained_and_is_counted_per_request():
    rt = make_runtime(mode="serial", sync_free="on")
    reqs = esamp_reqs(2)
    batch = Batch(reqs, top_k=8)
    orig = batch.write_taps

    def write_taps_missing_row_1(rt_):
        orig(rt_)
        rt_.tap_buffers.stamp["target"][1] = -1
    batch.write_taps = write_taps_missing_row_1
    planned, _ = one_step(rt, batch)
    step.settle(rt)
    assert planned.out.reweighted.tolist() == [True, False]
    assert rt.core.stats()["rows_trained"] == 1
    m0, m1 = (rt.members.member_of(r) for r in reqs)
    assert (m0.skipped_rows, m1.skipped_rows) == (0, 1) and (m0.rows, m1.rows) == (1, 1)


def test_width_buckets_come_from_the_sampling_params():
    assert width_bucket([1 << 30, 8], cap=1024, vocab=50_000) == 1025       # one row unbounded: the cap + 1
    assert width_bucket([8, 3], cap=1024, vocab=50_000) == 16               # top-k 8 -> 9 columns -> bucket 16
    assert width_bucket([1], cap=1024, vocab=50_000) == 8                   # at least 8
    assert width_bucket([1000], cap=1024, vocab=50_000) == 1024
    assert width_bucket([1024], cap=1024, vocab=50_000) == 1025
    assert width_bucket([20], cap=1024, vocab=16) == 16                      # never past the vocabulary
    assert width_bucket([2000], cap=64, vocab=50_000) == 65


def _rule_inputs(r=6, v=300, h=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(r, v, generator=g) * 3
    w = torch.randn(v, h, generator=g) * 0.2
    h_hat = torch.randn(r, h, generator=g)
    h_hat[4] = float("nan")                                 # a non-finite prediction: that row is not reweighted
    temps = torch.tensor([1.0, 0.7, 1.0, 1.3, 1.0, 1.0])
    betas = torch.tensor([0.5, 0.5, 0.0, 0.8, 0.5, 0.5])
    return logits, w, h_hat, temps, betas


@pytest.mark.parametrize("filters", ["top_k", "top_p", "min_p", "none", "mixed"])
@pytest.mark.parametrize("greedy_mode", ["skip", "apply"])
def test_the_sync_free_rule_draws_the_adaptive_rules_tokens(filters, greedy_mode):
    """Same candidates, same logits, same token for the same noise per rank; only the padding differs."""
    logits, w, h_hat, temps, betas = _rule_inputs()
    r, v = logits.shape
    big = 1 << 30
    top_ks = {"top_k": [5, 9, 5, 12, 5, 1], "mixed": [5, big, 1, 40, big, 7]}.get(filters, [big] * 5 + [1])
    top_ps = torch.full((r,), 0.9 if filters in ("top_p", "mixed") else 1.0)
    min_ps = torch.full((r,), 0.05 if filters in ("min_p", "mixed") else 0.0)
    top_ks_t = torch.tensor(top_ks)
    cap = 64
    noise = -torch.empty(r, cap + 1).exponential_(generator=torch.Generator().manual_seed(1)).log()
    seeded = SeededRows(rows=torch.tensor([3]), positions=torch.tensor([11]), seeds=torch.tensor([7]),
                        streams=torch.tensor([2]))
    common = dict(candidate_cap=cap, greedy_mode=greedy_mode, noise=noise, seeded=seeded)
    ref = rule(logits, temps, top_ks_t, top_ps, min_ps, betas, h_hat, w, **common)
    bound = [cap + 1 if k == big or (k == 1 and greedy_mode == "apply") else k for k in top_ks]
    with no_host_reads():
        out = rule(logits, temps, top_ks_t, top_ps, min_ps, betas, h_hat, w,
                           width=width_bucket(bound, cap, v), **common)
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.counts, ref.counts)
    assert torch.equal(out.reweighted, ref.reweighted) and torch.equal(out.truncated, ref.truncated)
    k = ref.cand_ids.shape[1]
    assert out.cand_ids.shape[1] >= k and torch.isinf(out.cand_logits[:, k:]).all()
    valid = torch.arange(k).unsqueeze(0) < ref.counts.unsqueeze(1)
    assert torch.equal(out.cand_ids[:, :k][valid], ref.cand_ids[valid])
    torch.testing.assert_close(out.cand_logits[:, :k][valid], ref.cand_logits[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.chosen_shift, ref.chosen_shift, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.chosen_rank, ref.chosen_rank)


def test_a_sync_free_core_refuses_to_sample_without_a_width():
    rt = make_runtime(sync_free="on")
    with pytest.raises(ValueError, match="width"):
        rt.core.sample(RuleInputs(torch.randn(1, 48), torch.ones(1), torch.tensor([5]), torch.ones(1),
                                  torch.zeros(1), torch.zeros(1)))


def test_sync_free_auto_is_on_for_cuda_only():
    assert ESampConfig().sync_free == "auto"
    assert make_runtime(sync_free="auto").core.sync_free is False          # this machine's tensors are on CPU
    assert make_runtime(sync_free="on").core.sync_free is True
    with pytest.raises(Exception, match="sync_free"):
        ESampConfig(sync_free="sometimes")
