"""rule/step_graphs.py: the sync-free rule replayed per shape bucket. On CPU the ``static`` mode runs the very path a
CUDA replay takes (static buffers, padding rows, outputs sliced back) eagerly; it must give what the rule gives on
the step's own rows, and count what it did."""
from dataclasses import replace

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.rule.filters import width_bucket
from sglang_esamp.algo.replay import row_bucket
from sglang_esamp.algo.rule.inputs import RuleInputs
from sglang_esamp.algo.rule.seeded_noise import SeededRows
from sglang_esamp.algo.rule.step_graphs import StepGraphs
from sglang_esamp.algo.update.job import Update

H, V, CAP = 16, 64, 32


def core(mode="serial"):
    c = ESampCore(ESampConfig(bank_slots=3, width=8, update_mode=mode, sync_free="on", candidate_cap=CAP), H,
                  torch.randn(V, H, generator=torch.Generator().manual_seed(0)))
    for _ in range(3):
        c.acquire_slot()
    return c


def inputs(r, seed=0, top_k=None):
    g = torch.Generator().manual_seed(seed)
    width = width_bucket([top_k or (1 << 30)], CAP, V)
    return RuleInputs(h_src=torch.randn(r, H, generator=g), slots=torch.arange(r) % 3 - (torch.arange(r) == 0).long(),
                      logits=torch.randn(r, V, generator=g) * 2, temperatures=torch.full((r,), 0.8),
                      top_ks=torch.full((r,), top_k or (1 << 30)), top_ps=torch.full((r,), 0.95),
                      min_ps=torch.full((r,), 0.02), betas=torch.full((r,), 0.5), distiller_coef=torch.ones(r),
                      noise=-torch.empty(r, CAP + 1).exponential_(generator=g).log(), width=width)


def test_row_buckets():
    assert [row_bucket(n) for n in (1, 3, 64, 65, 512)] == [1, 4, 64, 96, 512]
    assert row_bucket(513) is None


@pytest.mark.parametrize("r", [1, 3, 5, 64])
def test_a_padded_replay_gives_the_rules_result_on_the_steps_rows(r):
    c = core()
    x = inputs(r, seed=r)
    h_ref, ref = c._rule(x)
    h_hat, out = c.sample(x)
    assert c.graphs.mode == "static" and c.counters.get("graph_static_steps") == 1
    assert h_hat.shape == (r, H) and out.tokens.shape == (r,)
    torch.testing.assert_close(h_hat, h_ref)
    for name in ("tokens", "cand_ids", "counts", "reweighted", "chosen_rank"):
        assert torch.equal(getattr(out, name), getattr(ref, name)), name
    torch.testing.assert_close(out.cand_logits, ref.cand_logits)
    assert torch.count_nonzero(h_hat[0]) == 0                  # row 0 has no slot (-1): its prediction is zeros


def test_a_bucket_is_reused_and_its_padding_refilled():
    c = core()
    c.sample(inputs(7, seed=1, top_k=8))                               # bucket 8, one padding row
    x = inputs(5, seed=2, top_k=8)                                     # same bucket, three padding rows
    _, ref = c._rule(x)
    _, out = c.sample(x)
    assert len(c.graphs._buckets) == 1 and torch.equal(out.tokens, ref.tokens)
    assert c.counters.get("graph_static_steps") == 2


def test_steps_a_graph_cannot_take_run_eagerly_and_are_counted():
    c = core()
    g = StepGraphs(c._rule, "cpu", c.counters, buckets=(4,))
    _, out = g.run(inputs(6))                                          # more rows than the largest bucket
    seeded = SeededRows(rows=torch.tensor([1]), positions=torch.tensor([4]), seeds=torch.tensor([9]),
                        streams=torch.tensor([0]))
    _, out2 = g.run(replace(inputs(3), seeded=seeded))                 # seeded rows: their row list varies
    assert out.tokens.shape == (6,) and out2.tokens.shape == (3,)
    assert c.counters.get("graph_eager_steps") == 2 and not g._buckets
    with pytest.raises(ValueError, match="mode"):
        StepGraphs(c._rule, "cpu", mode="sometimes")


def test_the_prediction_waits_for_the_update_in_flight():
    """Staleness is unchanged: a replay predicts with the weights after the previous update."""
    c = core(mode="async")
    x = inputs(4)
    c.sample(x)
    c.train(Update(x.h_src, torch.randn(4, H), x.slots.clamp(min=0)))
    h_hat, _ = c.sample(x)                                             # waits for that update first
    assert c.counters.get("updates") == 1
    torch.testing.assert_close(h_hat, c._predict(x.h_src, x.slots))
