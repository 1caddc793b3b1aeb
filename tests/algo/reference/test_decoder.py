"""The reference decoder on SmolLM2-135M-Instruct (CPU): timing, exactness, an independent oracle replay."""
import time

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.distiller.distiller import Distiller
from sglang_esamp.algo.reference.decoder import ReferenceDecoder, SamplingSettings

pytestmark = pytest.mark.slow


def test_timing_and_first_token_rule(smollm2, chat_ids):
    model, tok = smollm2
    dec = ReferenceDecoder(model, ESampConfig())
    ids = chat_ids(tok, "Tell me a story about a dragon.")
    t0 = time.perf_counter()
    res = dec.generate(ids, n=4, max_new_tokens=32, beta=0.25, seed=0)
    took = time.perf_counter() - t0
    print(f"reference decoder, SmolLM2-135M fp32, n=4, 32 tokens, 1 thread: {took:.1f} s")
    assert took < 60
    assert res.tokens.shape == (4, 32)
    assert not res.steps[0].reweighted.any()                   # first token: from prefill, not reweighted
    assert all(bool(s.reweighted.all()) for s in res.steps[1:])
    assert res.group_stats["steps"] == 31 and res.group_stats["rows_trained"] == 124
    assert res.stats["updates"] == 31 and res.stats["nonfinite_losses"] == 0
    assert all(len(s.losses) == 1 for s in res.steps[1:])


def test_beta_zero_gives_the_baseline_tokens(smollm2, chat_ids):
    model, tok = smollm2
    dec = ReferenceDecoder(model, ESampConfig())
    ids = chat_ids(tok, "Name three colors.")
    settings = SamplingSettings(top_p=0.95)
    base = dec.generate(ids, n=3, max_new_tokens=12, esamp=False, seed=7, sampling=settings)
    zero = dec.generate(ids, n=3, max_new_tokens=12, beta=0.0, seed=7, sampling=settings)
    on = dec.generate(ids, n=3, max_new_tokens=12, beta=1.0, seed=7, sampling=settings)
    assert torch.equal(base.tokens, zero.tokens)
    assert zero.stats["updates"] == 11                          # it trained, it just did not shift
    for a, b in zip(base.steps, zero.steps):
        assert torch.equal(a.cand_logits, b.cand_logits)
    assert not torch.equal(base.tokens, on.tokens)              # same noise, beta 1: the rule did act


def test_forced_replay_reproduces_generation(smollm2, chat_ids):
    model, tok = smollm2
    dec = ReferenceDecoder(model, ESampConfig())
    ids = chat_ids(tok, "Write a haiku about rain.")
    gen = dec.generate(ids, n=3, max_new_tokens=10, beta=0.25, seed=3, sampling=SamplingSettings(min_p=0.05))
    rep = dec.score_forced(ids, gen.tokens, beta=0.25, sampling=SamplingSettings(min_p=0.05))
    for a, b in zip(gen.steps, rep.steps):
        assert torch.equal(a.cand_ids, b.cand_ids) and torch.equal(a.cand_logits, b.cand_logits)
        assert torch.equal(a.tokens, b.tokens)


def test_forced_replay_matches_an_independent_oracle(smollm2, chat_ids):
    """Re-derive ESamp from scratch for a forced history: HF hidden_states (no KV cache, no hooks), a Distiller
    trained with torch.optim.Adam + clip_grad_norm_, candidates by a full-vocabulary sort, the formula by hand."""
    model, tok = smollm2
    cfg = ESampConfig()
    beta, top_p, n, steps = 0.25, 0.9, 3, 8
    dec = ReferenceDecoder(model, cfg)
    ids = chat_ids(tok, "Suggest a name for a bakery.")
    forced = dec.generate(ids, n=n, max_new_tokens=steps, esamp=False, seed=11).tokens
    rep = dec.score_forced(ids, forced, beta=beta, sampling=SamplingSettings(top_p=top_p))

    w = model.get_output_embeddings().weight.detach()
    probe = ESampCore(cfg.with_bank_slots(1), w.shape[1], w)    # only to read the fresh slot's initial weights
    shadow = Distiller(probe.shape)
    shadow.load_export_state(probe.bank.slot_state(probe.acquire_slot()))
    opt = torch.optim.Adam(shadow.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    prompt = torch.tensor([ids] * n)
    for t in range(1, steps):
        seq = torch.cat([prompt, forced[:, :t]], dim=1)
        with torch.no_grad():
            out = model(seq, output_hidden_states=True, use_cache=False)
            h_src = model.model.layers[1].input_layernorm(out.hidden_states[1][:, -1])
            h_tgt = out.hidden_states[-1][:, -1]
            logits = out.logits[:, -1].float()
        h_hat = shadow(h_src).detach()
        probs = torch.softmax(logits, -1)
        p_sorted, order = probs.sort(dim=-1, descending=True)
        keep = (p_sorted.cumsum(-1) - p_sorted) <= top_p
        dist = h_hat @ w.T
        rec = rep.steps[t]
        for i in range(n):
            cand = order[i][keep[i]][:cfg.candidate_cap]          # top-p may keep more than C: the top C stay
            assert bool(rec.counts[i] == len(cand)) and bool(rec.counts[i] <= cfg.candidate_cap)
            want = (1 + beta) * logits[i, cand] - beta * dist[i, cand]
            k = int(rec.counts[i])
            assert set(rec.cand_ids[i, :k].tolist()) == set(cand.tolist()), (t, i)
            got = dict(zip(rec.cand_ids[i, :k].tolist(), rec.cand_logits[i, :k].tolist()))
            torch.testing.assert_close(torch.tensor([got[c] for c in cand.tolist()]), want, rtol=1e-4, atol=2e-3)
        opt.zero_grad()
        (h_tgt - shadow(h_src)).pow(2).sum(1).mean().backward()
        torch.nn.utils.clip_grad_norm_(shadow.parameters(), cfg.grad_clip)
        opt.step()
