"""The ESamp sampling rule: beta = 0 exactness, candidate-only rewrite, greedy handling, Gumbel-max sampling."""
import pytest
import torch

from sglang_esamp.algo.rule.filters import filter_candidates, scale_logits
from sglang_esamp.algo.rule.sampling import gumbel_noise
from tests.rule_call import rule

TOP_K_ALL = 1 << 30
R, V, H = 8, 500, 32


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(V, H, generator=g) * 0.2
    bias = torch.randn(V, generator=g) * 0.1
    h_tgt = torch.randn(R, H, generator=g) * 3
    logits = h_tgt @ w.T + bias
    h_hat = h_tgt + torch.randn(R, H, generator=g)
    temps = torch.tensor([1.0, 0.7, 1.3, 1.0, 1.0, 0.5, 1.0, 1.0])
    top_ks = torch.tensor([TOP_K_ALL, 20, TOP_K_ALL, TOP_K_ALL, 1, TOP_K_ALL, 50, TOP_K_ALL])
    top_ps = torch.tensor([1.0, 1.0, 0.9, 1.0, 1.0, 0.95, 0.8, 1.0])
    min_ps = torch.tensor([0.0, 0.0, 0.0, 0.05, 0.0, 0.0, 0.0, 0.01])
    return dict(logits=logits, temperatures=temps, top_ks=top_ks, top_ps=top_ps, min_ps=min_ps,
                h_hat=h_hat, lm_head_weight=w, lm_head_bias=bias)


def test_beta_zero_rows_are_bit_identical_to_the_unmodified_rule():
    x = _inputs()
    noise = gumbel_noise((R, 1024), "cpu", torch.Generator().manual_seed(3))
    plain = rule(betas=torch.zeros(R), noise=noise, **x)
    no_pred = rule(betas=torch.full((R,), 0.5), noise=noise, **dict(x, h_hat=None))
    mixed_b = torch.tensor([0.0, 0.5, 0.0, 1.0, 0.3, 0.0, 2.0, 0.0])
    mixed = rule(betas=mixed_b, noise=noise, **x)
    assert not plain.reweighted.any() and not no_pred.reweighted.any()
    for other in (no_pred,):
        assert torch.equal(other.cand_logits, plain.cand_logits) and torch.equal(other.tokens, plain.tokens)
    zero = mixed_b == 0
    assert torch.equal(mixed.cand_ids, plain.cand_ids)
    assert torch.equal(mixed.cand_logits[zero], plain.cand_logits[zero])
    assert torch.equal(mixed.tokens[zero], plain.tokens[zero])
    # and the unmodified rule's candidate logits are exactly the filter's (logits / T on the candidates)
    c = filter_candidates(scale_logits(x["logits"], x["temperatures"]), x["top_ks"], x["top_ps"], x["min_ps"], 1024)
    assert torch.equal(plain.cand_logits, c.scaled)
    # the shift did change something on the other rows
    changed = mixed.reweighted & (mixed.counts > 1)
    assert changed.sum() >= 3
    assert not torch.equal(mixed.cand_logits[changed], plain.cand_logits[changed])


@pytest.mark.parametrize("form", ["tllm", "scaled"])
def test_only_candidates_are_rewritten_by_the_formula(form):
    x = _inputs(1)
    betas = torch.tensor([0.25, 0.5, 1.0, 0.25, 0.0, 4.0, 0.1, 0.25])
    out = rule(betas=betas, temperature_form=form, generator=torch.Generator().manual_seed(0), **x)
    scaled = scale_logits(x["logits"], x["temperatures"])
    dist_full = x["h_hat"] @ x["lm_head_weight"].T + x["lm_head_bias"]          # all V, for the check only
    c = filter_candidates(scaled, x["top_ks"], x["top_ps"], x["min_ps"], 1024)
    assert torch.equal(out.cand_ids, c.ids) and torch.equal(out.counts, c.counts)
    for i in range(R):
        n = int(out.counts[i])
        ids = out.cand_ids[i, :n]
        b, t = float(betas[i]), float(x["temperatures"][i])
        coef = b if form == "tllm" else b / t
        want = (1 + b) * scaled[i, ids] - coef * dist_full[i, ids]
        if out.reweighted[i]:
            torch.testing.assert_close(out.cand_logits[i, :n], want, rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(out.cand_logits[i, :n], scaled[i, ids])
        assert bool(torch.isneginf(out.cand_logits[i, n:]).all())     # padding: nothing else can be drawn
        assert int(out.tokens[i]) in set(ids.tolist())
    # the greedy row (top_k 1) and the beta-0 row are the only ones left alone
    assert out.reweighted.tolist() == [True, True, True, True, False, True, True, True]


def test_non_candidates_are_never_sampled():
    x = _inputs(2)
    betas = torch.full((R,), 4.0)
    x["h_hat"] = -50 * x["h_hat"]  # a huge shift that would favour far-away tokens if they were reachable
    for s in range(20):
        out = rule(betas=betas, generator=torch.Generator().manual_seed(s), **x)
        for i in range(R):
            assert int(out.tokens[i]) in set(out.cand_ids[i, :out.counts[i]].tolist())


def test_greedy_rows_skip_by_default_and_apply_on_request():
    x = _inputs(3)
    x["top_ks"] = torch.ones(R, dtype=torch.int64)           # SGLang's greedy encoding: T = 1, top_k = 1
    x["temperatures"] = torch.ones(R)
    betas = torch.full((R,), 1.0)
    x["h_hat"] = x["h_hat"] * 4
    skip = rule(betas=betas, generator=torch.Generator().manual_seed(0), **x)
    assert torch.equal(skip.tokens, x["logits"].argmax(-1)) and not skip.reweighted.any()
    assert skip.counts.tolist() == [1] * R
    app = rule(betas=betas, greedy_mode="apply", generator=torch.Generator().manual_seed(0), **x)
    assert app.reweighted.all() and (app.counts > 1).all()
    dist = x["h_hat"] @ x["lm_head_weight"].T + x["lm_head_bias"]
    new = 2.0 * x["logits"] - dist
    for i in range(R):
        ids = app.cand_ids[i, :app.counts[i]]
        assert int(app.tokens[i]) == int(ids[new[i, ids].argmax()])
    assert not torch.equal(app.tokens, skip.tokens)           # the shift changed some argmax


def test_gumbel_max_draws_follow_the_candidate_softmax():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -30.0]])
    w = torch.eye(6)[:, :4]
    h_hat = torch.tensor([[1.5, -1.0, 0.0, 0.5]])
    args = dict(temperatures=torch.ones(1), top_ks=torch.tensor([TOP_K_ALL]), top_ps=torch.tensor([0.97]),
                min_ps=torch.zeros(1), betas=torch.tensor([0.5]), h_hat=h_hat, lm_head_weight=w)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    rows = dict((k, v.repeat(n, *([1] * (v.dim() - 1)))) for k, v in args.items() if k != "lm_head_weight")
    out = rule(logits.repeat(n, 1), lm_head_weight=w, generator=gen, **rows)
    k = int(out.counts[0])
    p = torch.softmax(out.cand_logits[0, :k], dim=0)
    freq = torch.bincount(out.tokens, minlength=6).float() / n
    expect = torch.zeros(6)
    expect[out.cand_ids[0, :k]] = p
    assert (freq - expect).abs().max() < 0.015, (freq, expect)
    assert k < 6 and freq[expect == 0].sum() == 0      # top-p 0.97 cut the tail; nothing outside was drawn


def test_same_noise_same_token_and_noise_shape_checked():
    x = _inputs(4)
    betas = torch.full((R,), 0.25)
    noise = gumbel_noise((R, 1024), "cpu", torch.Generator().manual_seed(9))
    a = rule(betas=betas, noise=noise, **x)
    b = rule(betas=betas, noise=noise.clone(), **x)
    assert torch.equal(a.tokens, b.tokens)
    with pytest.raises(ValueError, match="noise must be"):
        rule(betas=betas, noise=noise[:, :1], **x)


def test_bf16_logits_are_accepted():
    x = _inputs(5)
    x["logits"] = x["logits"].to(torch.bfloat16)
    out = rule(betas=torch.full((R,), 0.25), generator=torch.Generator().manual_seed(0), **x)
    assert out.cand_logits.dtype == torch.float32 and out.tokens.dtype == torch.int64
    assert bool(torch.isfinite(out.cand_logits.gather(1, torch.zeros(R, 1, dtype=torch.long))).all())


def test_empty_batch():
    out = rule(torch.zeros(0, V), torch.ones(0), torch.ones(0, dtype=torch.long), torch.ones(0),
                       torch.zeros(0), torch.zeros(0), None, torch.randn(V, H))
    assert out.tokens.shape == (0,) and out.counts.shape == (0,)


def test_a_non_finite_prediction_row_samples_the_plain_rule_and_the_others_still_move():
    x = _inputs()
    noise = gumbel_noise((R, 1024), "cpu", torch.Generator().manual_seed(5))
    betas = torch.full((R,), 0.5)
    good = rule(betas=betas, noise=noise, **x)
    h_bad = x["h_hat"].clone()
    h_bad[0, 3] = float("nan")
    h_bad[2] = float("inf")
    bad = rule(betas=betas, noise=noise, **dict(x, h_hat=h_bad))
    plain = rule(betas=torch.zeros(R), noise=noise, **x)
    for r in (0, 2):
        assert not bad.reweighted[r] and bad.tokens[r] == plain.tokens[r]
    keep = torch.ones(R, dtype=torch.bool)
    keep[[0, 2]] = False
    assert torch.equal(bad.reweighted[keep], good.reweighted[keep]) and torch.equal(bad.tokens[keep], good.tokens[keep])


def test_without_sharpening_the_reweighted_rows_are_divided_by_one_plus_beta():
    """``esamp.sharpen: false``: l/T - c/(1+b)*l_d on the reweighted rows; the others keep their logits exactly."""
    x = _inputs()
    betas = torch.tensor([0.8, 0.5, 0.0, 1.0, 0.8, 0.25, 0.8, 0.8])
    div = torch.where(betas > 0, 1 + betas, 1.0)
    noise = gumbel_noise((R, 1024), "cpu", torch.Generator().manual_seed(5))
    ref = rule(betas=betas, noise=noise, **x)
    out = rule(betas=betas, noise=noise, divisor=div, **x)
    rew = ref.reweighted
    assert rew.sum() >= 5 and not rew[2] and not rew[4]                # beta 0 and a greedy row are not reweighted
    valid = torch.isfinite(ref.cand_logits)
    torch.testing.assert_close(out.cand_logits[valid], (ref.cand_logits / div.unsqueeze(1))[valid]
                               .where(rew.unsqueeze(1).expand_as(valid)[valid], ref.cand_logits[valid]))
    assert torch.equal(out.cand_logits[~rew], ref.cand_logits[~rew]) and torch.equal(out.tokens[~rew], ref.tokens[~rew])
    # l/T - c/(1+b)*l_d exactly as written
    c = filter_candidates(scale_logits(x["logits"], x["temperatures"]), x["top_ks"], x["top_ps"], x["min_ps"], 1024)
    d = torch.einsum("rkh,rh->rk", x["lm_head_weight"][c.ids], x["h_hat"]) + x["lm_head_bias"][c.ids]
    want = c.scaled - (betas / (1 + betas)).unsqueeze(1) * d
    r0 = 0
    n = int(c.counts[r0])
    torch.testing.assert_close(out.cand_logits[r0, :n], want[r0, :n], rtol=1e-4, atol=1e-4)
