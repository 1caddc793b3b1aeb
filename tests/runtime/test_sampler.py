"""``runtime/sampler.py``: SGLang's own Sampler with the ESamp rule on the armed step's rows -- the rows without
ESamp keep SGLang's tokens bit for bit, an all-ESamp batch skips SGLang's draw, a failing rule leaves SGLang's
tokens, and sampled logprobs are the distribution each token was drawn from."""
import pytest
import torch

from sglang_esamp.algo.rule.sampling import SampleOutput
from sglang_esamp.runtime import step, step_state
from sglang_esamp.runtime.sampler import ESampSampler, _write_sampled_probs

from .step_fixtures import V, Batch, make_runtime, req, sglang_context


def _sample(sampler_class, batch, seed=0):
    from sglang.srt.layers.logits_processor import LogitsProcessorOutput

    torch.manual_seed(seed)
    with sglang_context():
        return sampler_class().forward(LogitsProcessorOutput(next_token_logits=batch.logits.clone()),
                               batch.forward.sampling_info, False, [], [], batch.positions)


def _armed(rt, batch):
    planned = step.plan(rt, batch.forward, batch.schedule)
    step_state.attach(batch.forward.sampling_info, rt, planned)
    batch.write_taps(rt)
    assert step._taps_and_settle(rt, planned, batch.forward)
    return planned


def test_rows_without_esamp_keep_sglangs_tokens_bit_for_bit():
    from sglang.srt.layers.sampler import Sampler

    reqs = [req("a", {"beta": 0.5}, "p", 1), req("x", None, "x", 1), req("y", None, "y", 1)]
    stock = _sample(Sampler, Batch(reqs))
    rt = make_runtime()
    batch = Batch(reqs)
    planned = _armed(rt, batch)
    ids = _sample(ESampSampler, batch)
    assert planned.out is not None and torch.equal(ids[1:], stock[1:])
    assert int(ids[0]) == int(planned.out.tokens[0])           # the ESamp row: the rule's token
    assert rt.counters.get("stock_draws_skipped") == 0


def test_an_unarmed_batch_is_sglangs_own_draw():
    from sglang.srt.layers.sampler import Sampler

    reqs = [req("a", {"beta": 0.5}, "p", 1), req("x", None, "x", 1)]
    assert torch.equal(_sample(ESampSampler, Batch(reqs)), _sample(Sampler, Batch(reqs)))


def test_an_all_esamp_batch_is_sampled_once_by_the_rule():
    rt = make_runtime()
    batch = Batch([req("a", {"beta": 0.5}, "p", 2), req("b", {"beta": 0.5}, "p", 2)])
    planned = _armed(rt, batch)
    ids = _sample(ESampSampler, batch)
    assert torch.equal(ids.long(), planned.out.tokens) and rt.counters.get("stock_draws_skipped") == 1


def test_a_failing_rule_leaves_sglangs_tokens_and_the_error_on_the_step():
    from sglang.srt.layers.sampler import Sampler

    reqs = [req("a", {"beta": 0.5}, "p", 1)]
    stock = _sample(Sampler, Batch(reqs))
    rt = make_runtime(faults="sample:1")
    batch = Batch(reqs)
    planned = _armed(rt, batch)
    ids = _sample(ESampSampler, batch)
    assert planned.error is not None and planned.out is None and torch.equal(ids, stock)
    assert rt.counters.get("stock_draws_skipped") == 0


def test_sampled_logprobs_are_the_distribution_the_token_was_drawn_from():
    probs = torch.full((3, V), 1.0 / V)
    ids = torch.tensor([[5, 9, 0], [7, 0, 0]])
    logits = torch.tensor([[2.0, 1.0, float("-inf")], [0.0, float("-inf"), float("-inf")]])
    out = SampleOutput(tokens=ids[:, 0], cand_ids=ids, cand_logits=logits, counts=torch.tensor([2, 1]),
                       truncated=torch.zeros(2, dtype=torch.bool), reweighted=torch.ones(2, dtype=torch.bool),
                       greedy=torch.tensor([False, True]), chosen_rank=torch.zeros(2, dtype=torch.int64),
                       chosen_shift=torch.zeros(2))
    before = probs.clone()
    _write_sampled_probs(probs, torch.tensor([2, 0]), out, torch.tensor([0, 1]))
    e = torch.softmax(torch.tensor([2.0, 1.0]), 0)
    assert torch.allclose(probs[2, [5, 9]], e) and probs[2].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert int((probs[2] > 0).sum()) == 2                      # zero off the candidates
    assert torch.equal(probs[0], before[0]) and torch.equal(probs[1], before[1])   # greedy row, untouched row

