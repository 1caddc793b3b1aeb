"""Tensor-parallel candidate logits: per-shard partial sums + one all-reduce equal the full-head reference."""
import torch

from esamp_kernels.candidate_ref import candidate_distiller_logits_ref, candidate_novelty_logits_ref
from sglang_esamp.algo.rule.vocab_shard import VocabShard, sharded_candidate_logits


def test_two_shards_summed_equal_the_full_head():
    g = torch.Generator().manual_seed(0)
    V, H, R, C = 100, 16, 5, 12
    w, b = torch.randn(V, H, generator=g), torch.randn(V, generator=g)
    h = torch.randn(R, H, generator=g)
    ids = torch.stack([torch.randperm(V, generator=g)[:C] for _ in range(R)])
    counts = torch.tensor([12, 7, 1, 12, 3])
    scaled = torch.randn(R, C, generator=g)
    beta = torch.tensor([0.5, 1.0, 0.25, 0.0, 2.0])
    coef = beta * 0.9
    want = candidate_novelty_logits_ref(h, ids, counts, scaled, w, b, beta, coef)
    cut = 37                                             # rank 0 holds ids [0, 37), rank 1 [37, 100)

    def partial(lo, hi):
        m = (ids >= lo) & (ids < hi)
        local = torch.where(m, ids - lo, torch.zeros_like(ids))
        return candidate_distiller_logits_ref(h, local, w[lo:hi], b[lo:hi]) * m

    calls = []
    for lo, hi, other in ((0, cut, partial(cut, V)), (cut, V, partial(0, cut))):
        shard = VocabShard(lo, hi, all_reduce=lambda t, o=other: (calls.append(t.shape), t + o)[1], tp_size=2)
        got = sharded_candidate_logits(h, ids, counts, scaled, w[lo:hi], b[lo:hi], beta, coef, shard)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        assert torch.equal(got[3], want[3])              # beta 0: the filter's logits, bit for bit
    assert calls == [(R, C), (R, C)]                     # one all-reduce of the candidate block per call
