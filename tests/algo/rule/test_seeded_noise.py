"""Seeded ESamp rows: counter-based noise (same coordinates -> same draw, whatever the batch or the global RNG),
and the per-token outputs of the rule (chosen rank, the novelty shift on the chosen token)."""
import torch

from tests.rule_call import rule
from sglang_esamp.algo.rule.seeded_noise import SeededRows, hashed_uniform, seeded_gumbel
from tests.algo.rule.test_sampling import R, _inputs


def _rows(seeds, streams, positions):
    t = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    return SeededRows(rows=torch.arange(len(seeds)), seeds=t(seeds), streams=t(streams), positions=t(positions))


def test_the_draw_is_a_pure_function_of_its_coordinates():
    s, st, pos = torch.tensor([7, 7, 7, 8, -5, 2**62]), torch.tensor([0, 1, 0, 0, 0, 3]), torch.tensor([9, 9, 10, 9, 9, 9])
    a = seeded_gumbel(s, st, pos, 64)
    b = seeded_gumbel(s.flip(0), st.flip(0), pos.flip(0), 64).flip(0)   # another batch order
    assert torch.equal(a, b) and torch.isfinite(a).all()
    # every coordinate matters: stream (siblings), position, seed, and the candidate rank within a row
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2]) and not torch.equal(a[0], a[3])
    assert a[0].unique().numel() == 64
    u = hashed_uniform(s, st, pos, 4096)
    assert (u > 0).all() and (u < 1).all()
    # a longer row extends a shorter one (noise indexed by rank, as for unseeded rows)
    assert torch.equal(seeded_gumbel(s, st, pos, 16), a[:, :16])


def test_seeded_rows_sample_the_same_token_whatever_else_happens():
    x = _inputs(2)
    betas = torch.full((R,), 0.5)
    seeded = _rows(list(range(100, 100 + R)), [0] * R, [5] * R)
    torch.manual_seed(0)
    one = rule(betas=betas, seeded=seeded, **x)
    torch.manual_seed(1)                 # another global RNG state
    two = rule(betas=betas, seeded=seeded, **x)
    assert torch.equal(one.tokens, two.tokens)
    # only some rows seeded: those keep their tokens, the unseeded ones draw from the generator
    half = SeededRows(rows=torch.tensor([1, 3]), seeds=seeded.seeds[[1, 3]], streams=seeded.streams[[1, 3]],
                      positions=seeded.positions[[1, 3]])
    mixed = rule(betas=betas, seeded=half, generator=torch.Generator().manual_seed(4), **x)
    assert torch.equal(mixed.tokens[[1, 3]], one.tokens[[1, 3]])
    # given noise for the other rows is not modified in place
    noise = torch.zeros(R, 1024)
    rule(betas=betas, seeded=half, noise=noise, **x)
    assert torch.count_nonzero(noise) == 0


def test_siblings_with_one_seed_draw_differently():
    x = _inputs(3)
    same = {k: (v[:1].expand(R, *v.shape[1:]) if k not in ("lm_head_weight", "lm_head_bias") else v)
            for k, v in x.items()}
    same["top_ks"] = torch.full((R,), 1 << 30)
    out = rule(betas=torch.zeros(R), seeded=_rows([42] * R, list(range(R)), [3] * R), **same)
    ranks = out.chosen_rank
    assert out.counts[0] > 4 and ranks.unique().numel() > 1   # one distribution, R streams: not all one token
    again = rule(betas=torch.zeros(R), seeded=_rows([42] * R, list(range(R)), [3] * R), **same)
    assert torch.equal(again.tokens, out.tokens)


def test_chosen_rank_and_shift_describe_the_token_that_was_drawn():
    x = _inputs(1)
    betas = torch.tensor([0.25, 0.5, 1.0, 0.25, 0.0, 4.0, 0.0, 0.25])
    out = rule(betas=betas, generator=torch.Generator().manual_seed(0), **x)
    plain = rule(betas=torch.zeros(R), generator=torch.Generator().manual_seed(0), **x)
    for i in range(R):
        j = int(out.chosen_rank[i])
        if out.greedy[i]:
            assert float(out.chosen_shift[i]) == 0.0
            continue
        assert int(out.cand_ids[i, j]) == int(out.tokens[i])
        want = float(out.cand_logits[i, j] - plain.cand_logits[i, j])
        assert abs(float(out.chosen_shift[i]) - want) < 1e-6
        if not out.reweighted[i]:
            assert float(out.chosen_shift[i]) == 0.0
    assert (out.chosen_shift[out.reweighted & (out.counts > 1)] != 0).any()
