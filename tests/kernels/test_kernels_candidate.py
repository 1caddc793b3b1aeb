"""Candidate novelty kernel vs its torch reference, under the Triton CPU interpreter.

The grid is sampled, not a full product: the interpreter pays per program and per op, so big vocabularies run
with few rows, big C with small H, and every block size the GPU heuristic can pick is covered at small sizes.
"""
import pytest
import torch

from esamp_kernels import candidate_triton
from esamp_kernels.candidate_ref import candidate_novelty_logits_ref
from esamp_kernels.candidate_triton import candidate_novelty_logits_triton, unsupported_reason
from kernels_testutil import assert_candidate_close, assert_interpreted, candidate_inputs

QWEN_VOCAB = 151936


def test_runs_in_the_interpreter():
    assert_interpreted(candidate_triton._candidate_novelty_kernel)


@pytest.fixture(scope="module")
def qwen_head():
    """One Qwen-size LM head [151936, 1536] in bf16 (the serving dtype); H=896 cases use a strided column view."""
    gen = torch.Generator().manual_seed(1)
    return torch.empty(QWEN_VOCAB, 1536, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)


def _run(inp, **kw):
    args = [inp[k] for k in ("h_hat", "cand_ids", "counts", "cand_scaled", "lm_head_weight", "lm_head_bias",
                             "beta", "dist_coef")]
    assert unsupported_reason(*args) is None
    return candidate_novelty_logits_triton(*args, **kw), candidate_novelty_logits_ref(*args)


@pytest.mark.parametrize("hidden,rows,cands,bias", [(1536, 2, 96, False), (896, 3, 64, True)])
def test_qwen_vocabulary(qwen_head, hidden, rows, cands, bias):
    gen = torch.Generator().manual_seed(hidden)
    weight = qwen_head[:, :hidden]  # H=896: row stride 1536, exercises the strided gather
    inp = candidate_inputs(rows, cands, weight, torch.bfloat16, gen=gen, with_bias=bias)
    out, ref = _run(inp)
    assert_candidate_close(out, ref, inp)


# (rows, cands, hidden, vocab, dtype, bias, index dtype, forced BLOCK_C or None for the heuristic)
GRID = [
    (1, 1, 64, 1000, torch.float32, False, torch.int64, None),
    (64, 16, 128, 5000, torch.bfloat16, True, torch.int32, None),
    (5, 1024, 32, 50000, torch.float16, False, torch.int64, None),
    (7, 100, 96, 2000, torch.float32, True, torch.int64, 4),
    (9, 77, 200, 3000, torch.bfloat16, False, torch.int64, 8),
    (3, 40, 256, 3000, torch.float16, True, torch.int32, 16),
    (33, 5, 48, 700, torch.float32, False, torch.int64, None),
]


@pytest.mark.parametrize("rows,cands,hidden,vocab,dtype,bias,index_dtype,block_c", GRID)
def test_grid(rows, cands, hidden, vocab, dtype, bias, index_dtype, block_c):
    gen = torch.Generator().manual_seed(rows * 1000 + cands)
    weight = (torch.randn(vocab, hidden, generator=gen) * 0.05).to(dtype)
    inp = candidate_inputs(rows, cands, weight, dtype, gen=gen, with_bias=bias, index_dtype=index_dtype)
    out, ref = _run(inp, block_c=block_c)
    assert_candidate_close(out, ref, inp)
    # padding is -inf exactly where the count ends (counts may exceed C: then nothing is padding)
    pad = torch.arange(cands)[None, :] >= inp["counts"].long()[:, None]
    assert torch.equal(torch.isneginf(out) & pad, pad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_beta_zero_is_exact_passthrough(dtype):
    """beta == 0 rows must equal cand_scaled bit for bit, even with a NaN prediction (the weights are not read)."""
    gen = torch.Generator().manual_seed(7)
    weight = (torch.randn(4000, 160, generator=gen) * 0.05).to(dtype)
    inp = candidate_inputs(6, 50, weight, dtype, gen=gen, betas=[0.0, 0.3, 0.0, 1.5, 0.0, 0.0],
                           counts=[50, 50, 17, 9, 0, 60], with_bias=True)
    inp["h_hat"][2] = float("nan")
    inp["cand_scaled"][0, 3] = float("-inf")  # a filtered-out logit inside the count stays -inf
    out, ref = _run(inp)
    for r in (0, 2, 4, 5):
        assert torch.equal(out[r], ref[r])
        n = min(int(inp["counts"][r]), 50)
        assert torch.equal(out[r, :n], inp["cand_scaled"][r, :n].float())
    assert torch.isneginf(out[0, 3])
    assert_candidate_close(out[[1, 3]], ref[[1, 3]], {k: (v[[1, 3]] if k not in ("lm_head_weight", "lm_head_bias")
                                                         else v) for k, v in inp.items()})


def test_counts_beyond_c_and_noncontiguous_inputs():
    gen = torch.Generator().manual_seed(11)
    weight = torch.randn(3000, 80, generator=gen)
    inp = candidate_inputs(4, 33, weight, torch.float32, gen=gen, counts=[40, 33, 0, 5])
    # transposed storage for ids / logits: the kernel follows strides
    inp["cand_ids"] = inp["cand_ids"].t().contiguous().t()
    inp["cand_scaled"] = inp["cand_scaled"].t().contiguous().t()
    inp["h_hat"] = torch.randn(80, 4, generator=gen).t()
    out, ref = _run(inp)
    assert_candidate_close(out, ref, inp)
    assert torch.isfinite(out[0]).all() and torch.isneginf(out[2]).all()


def test_unsupported_reasons():
    gen = torch.Generator().manual_seed(0)
    inp = candidate_inputs(2, 4, torch.randn(50, 8), torch.float32, gen=gen)
    args = lambda **over: [over.get(k, inp[k]) for k in ("h_hat", "cand_ids", "counts", "cand_scaled",  # noqa: E731
                                                          "lm_head_weight", "lm_head_bias", "beta", "dist_coef")]
    assert unsupported_reason(*args()) is None
    assert "float" in unsupported_reason(*args(h_hat=inp["h_hat"].double()))
    assert "int32 or int64" in unsupported_reason(*args(cand_ids=inp["cand_ids"].short()))
    assert "shape" in unsupported_reason(*args(lm_head_weight=torch.randn(50, 9)))
    assert "R entries" in unsupported_reason(*args(beta=torch.zeros(3)))
    assert "empty" in unsupported_reason(*args(cand_ids=inp["cand_ids"][:, :0], cand_scaled=inp["cand_scaled"][:, :0]))


@pytest.mark.parametrize("rows,cands", [(0, 8), (3, 0), (0, 0)])
def test_reference_with_no_rows_or_no_candidates_returns_the_empty_shape(rows, cands):
    weight, bias = torch.randn(50, 16), torch.randn(50)
    out = candidate_novelty_logits_ref(torch.randn(rows, 16), torch.zeros(rows, cands, dtype=torch.long),
                                       torch.zeros(rows, dtype=torch.long), torch.zeros(rows, cands), weight, bias,
                                       torch.full((rows,), 0.25), torch.full((rows,), 0.25))
    assert out.shape == (rows, cands) and out.dtype == torch.float32
