"""The candidate filter against SGLang's own torch sampler (imported here only, lazily)."""
import pytest
import torch

from sglang_esamp.algo.rule.filters import filter_candidates, scale_logits

TOP_K_ALL = 1 << 30


def _batch(dtype, seed=0, r=12, v=300):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(r, v, generator=g) * torch.linspace(0.5, 6.0, r).unsqueeze(1)).to(dtype)
    temps = torch.tensor([1.0, 0.7, 1.3, 1.0, 0.5, 1.0, 2.0, 1.0, 0.9, 1.0, 1.0, 1.0])[:r]
    top_ks = torch.tensor([TOP_K_ALL, 5, TOP_K_ALL, 40, TOP_K_ALL, 1, 3, TOP_K_ALL, 17, TOP_K_ALL, 250, 2])[:r]
    top_ps = torch.tensor([1.0, 1.0, 0.9, 0.5, 1.0, 1.0, 0.3, 0.95, 0.8, 1.0, 0.99, 1.0])[:r]
    min_ps = torch.tensor([0.0, 0.0, 0.0, 0.05, 0.1, 0.0, 0.2, 0.0, 0.02, 0.3, 0.0, 0.5])[:r]
    return logits, temps, top_ks, top_ps, min_ps


def _sglang_support(logits, temps, top_ks, top_ps, min_ps):
    """SGLang's pytorch-backend path: logits.div_(T), softmax, then its filter; the support is the candidate set."""
    from sglang.srt.layers.sampler import top_k_top_p_min_p_sampling_from_probs_torch

    x = logits.clone()
    x.div_(temps.view(-1, 1))
    probs = torch.softmax(x, dim=-1)
    _, filtered, idx, _ = top_k_top_p_min_p_sampling_from_probs_torch(
        probs, top_ks.to(torch.int32), top_ps, min_ps, bool((min_ps > 0).any()), None,
        torch.zeros(len(x), dtype=torch.int64), return_filtered_probs=True)
    return [set(idx[i][filtered[i] > 0].tolist()) for i in range(len(x))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_candidate_sets_equal_sglang_torch_sampler(dtype):
    ties = 0
    for seed in range(3):
        logits, temps, top_ks, top_ps, min_ps = _batch(dtype, seed)
        want = _sglang_support(logits, temps, top_ks, top_ps, min_ps)
        got = filter_candidates(scale_logits(logits, temps), top_ks, top_ps, min_ps, cap=1024)
        assert not got.truncated.any()
        scaled = scale_logits(logits, temps)
        for i in range(len(logits)):
            ours = set(got.ids[i, :got.counts[i]].tolist())
            if ours != want[i]:
                # allowed only as a tie at the boundary: the differing tokens carry identical scaled logits
                # (bf16 has many), and SGLang's unstable sort may order ties either way
                diff = sorted(ours ^ want[i])
                assert len(ours) == len(want[i]), (dtype, seed, i)
                assert len(set(scaled[i, diff].tolist())) == 1, (dtype, seed, i, diff, scaled[i, diff])
                ties += 1
        # the rule leaves actual choice: not every row collapsed to the argmax
        assert (got.counts > 1).sum() >= 6
    if dtype == torch.float32:
        assert ties == 0


def test_scaled_logits_match_sglang_in_place_division():
    for dtype in (torch.float32, torch.bfloat16):
        logits, temps, *_ = _batch(dtype)
        ref = logits.clone()
        ref.div_(temps.view(-1, 1))
        assert torch.equal(scale_logits(logits, temps), ref)


def test_candidates_sorted_and_padded():
    logits, temps, top_ks, top_ps, min_ps = _batch(torch.float32)
    c = filter_candidates(scale_logits(logits, temps), top_ks, top_ps, min_ps, cap=1024)
    assert c.ids.shape[1] == int(c.counts.max())          # trimmed to the largest row
    scaled = scale_logits(logits, temps)
    for i in range(len(logits)):
        n = int(c.counts[i])
        assert torch.equal(c.scaled[i, :n], scaled[i, c.ids[i, :n]])
        assert bool((c.scaled[i, :n][:-1] >= c.scaled[i, :n][1:]).all())
        assert bool(torch.isneginf(c.scaled[i, n:]).all())
        assert int(c.ids[i, 0]) == int(scaled[i].argmax())


def test_cap_truncates_and_reports_it():
    logits, temps, *_ = _batch(torch.float32, r=4)
    r = logits.shape[0]
    no_filter = dict(top_ks=torch.full((r,), TOP_K_ALL), top_ps=torch.ones(r), min_ps=torch.zeros(r))
    c = filter_candidates(scale_logits(logits, temps), cap=16, **no_filter)
    assert c.counts.tolist() == [16] * r and c.truncated.all()
    full = filter_candidates(scale_logits(logits, temps), cap=1024, **no_filter)
    assert torch.equal(full.ids[:, :16], c.ids)            # truncation keeps the top-C by logit
    k8 = dict(no_filter, top_ks=torch.full((r,), 8))
    c = filter_candidates(scale_logits(logits, temps), cap=16, **k8)
    assert c.counts.tolist() == [8] * r and not c.truncated.any()
    k16 = dict(no_filter, top_ks=torch.full((r,), 16))       # exactly the cap: nothing was cut
    assert not filter_candidates(scale_logits(logits, temps), cap=16, **k16).truncated.any()


def test_underflowed_tokens_are_not_candidates():
    logits = torch.tensor([[0.0, -200.0, -300.0, 5.0]])
    one = torch.ones(1)
    c = filter_candidates(logits, torch.full((1,), TOP_K_ALL), one, torch.zeros(1), cap=1024)
    assert sorted(c.ids[0, :c.counts[0]].tolist()) == [0, 3]   # exp(-205) == 0 in fp32: SGLang never samples it


@pytest.mark.parametrize("seed", range(4))
def test_filter_width_bound_gives_the_same_candidates_as_the_full_cap(seed, monkeypatch):
    """The topk width bounded by min-p / top-k before the sort changes nothing: ids, logits, counts, truncation."""
    from sglang_esamp.algo.rule import filters

    g = torch.Generator().manual_seed(seed)
    r, v, cap = 7, 300, 64
    scaled = torch.randn(r, v, generator=g) * (1 + 3 * torch.rand(r, 1, generator=g))
    top_ks = torch.tensor([TOP_K_ALL, 5, TOP_K_ALL, 1, TOP_K_ALL, 200, 70])
    top_ps = torch.tensor([1.0, 0.9, 0.5, 1.0, 1.0, 0.99, 1.0])
    min_ps = torch.tensor([0.05, 0.0, 0.0, 0.1, 0.001, 0.0, 0.0])
    bounded = filters.filter_candidates(scaled, top_ks, top_ps, min_ps, cap)
    assert filters._topk_width(torch.softmax(scaled, -1), top_ks, min_ps, cap) <= cap + 1
    monkeypatch.setattr(filters, "_topk_width", lambda probs, *a: min(cap + 1, probs.shape[1]))
    full = filters.filter_candidates(scaled, top_ks, top_ps, min_ps, cap)
    for name in ("ids", "scaled", "counts", "truncated"):
        assert torch.equal(getattr(bounded, name), getattr(full, name)), name


def test_min_p_bounds_the_sort_to_a_few_columns():
    from sglang_esamp.algo.rule import filters

    scaled = torch.zeros(2, 1000)
    scaled[:, :3] = 10.0                      # three plausible tokens, the rest ~e^-10 below
    width = filters._topk_width(torch.softmax(scaled, -1), torch.full((2,), TOP_K_ALL), torch.full((2,), 0.05), 1024)
    assert width == 4


@pytest.mark.parametrize("wide_row", [False, True])
def test_all_filtered_batch_first_try_equals_sglang(monkeypatch, wide_row):
    """Every row filtered: the FIRST_WIDTH try must give SGLang's sets; a row keeping more forces the exact path."""
    import sglang_esamp.algo.rule.filters as filters

    calls = []
    exact_width = filters._topk_width
    monkeypatch.setattr(filters, "_topk_width", lambda *a: calls.append(1) or exact_width(*a))
    r, v = 8, 2000
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(r, v, generator=g) * torch.linspace(4.0, 8.0, r).unsqueeze(1)
    temps = torch.tensor([1.0, 0.7, 1.3, 1.0, 0.5, 1.0, 2.0, 0.9])
    top_ks = torch.tensor([TOP_K_ALL, 5, TOP_K_ALL, 40, TOP_K_ALL, 1, 3, TOP_K_ALL])
    top_ps = torch.tensor([1.0, 1.0, 0.9, 0.5, 1.0, 1.0, 0.3, 1.0])
    min_ps = torch.tensor([0.1, 0.0, 0.2, 0.05, 0.3, 0.0, 0.0, 0.5])
    if wide_row:   # a flat row under top-p 0.3 keeps ~600 tokens: far more than FIRST_WIDTH, under the cap
        logits[0] = torch.randn(v, generator=g) * 0.01
        min_ps[0], top_ps[0] = 0.0, 0.3
    want = _sglang_support(logits, temps, top_ks, top_ps, min_ps)
    got = filter_candidates(scale_logits(logits, temps), top_ks, top_ps, min_ps, cap=1024)
    for i in range(r):
        assert set(got.ids[i, :got.counts[i]].tolist()) == want[i], i
    assert bool(calls) == wide_row                       # the counting pass ran only when the first try was short
    assert (int(got.counts.max()) > filters.FIRST_WIDTH) == wide_row
    assert (got.counts > 1).sum() >= 3


def _same_topk(got, want, x):
    """Values equal, and each id carries its value (ties at the k-th value may pick other ids of equal value)."""
    assert torch.equal(got[0], want[0])
    assert torch.equal(x.gather(1, got[1]), got[0])
    assert all(len(set(row.tolist())) == row.numel() for row in got[1])   # no id twice


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wide_topk_is_exactly_topk(dtype):
    """The threshold selection of a wide topk (no filter: C + 1 columns) against torch.topk, with the rows that
    must fall back (too few columns above the sampled threshold, a mostly masked vocabulary) and a NaN row that
    must not disturb the others."""
    from sglang_esamp.algo.rule.filters import _wide_topk

    g = torch.Generator().manual_seed(3)
    r, v, k = 9, 20000, 1025
    x = (torch.randn(r, v, generator=g) * torch.linspace(0.5, 8.0, r).unsqueeze(1)).to(dtype)
    _same_topk(_wide_topk(x, k), torch.topk(x, k, dim=-1), x)
    y = x.clone()
    y[1, ::16] = -1e4            # the strided sample sees only low values: the threshold keeps everything
    y[2, 1500:] = float("-inf")  # a masked vocabulary: 1500 finite columns
    _same_topk(_wide_topk(y, k), torch.topk(y, k, dim=-1), y)
    z = x.clone()
    z[4, 7] = float("nan")       # a broken row (its softmax is all NaN) must not disturb the others
    got, want = _wide_topk(z, k), torch.topk(z, k, dim=-1)
    keep = torch.arange(r) != 4
    _same_topk((got[0][keep], got[1][keep]), (want[0][keep], want[1][keep]), z[keep])
    lo = torch.zeros(2, v)
    lo[:, :k - 10] = 1.0         # fewer than k columns above the rest: ties fill the tail
    _same_topk(_wide_topk(lo, k), torch.topk(lo, k, dim=-1), lo)


@pytest.mark.parametrize("temps_one", [True, False])
def test_chunked_candidates_equal_one_pass(monkeypatch, temps_one):
    """Row chunks (cache-sized on CPU) give exactly the one-pass result, mixed filters and widths included."""
    from sglang_esamp.algo.rule import filters

    g = torch.Generator().manual_seed(11)
    r, v = 10, 30000
    logits = torch.randn(r, v, generator=g) * torch.linspace(1.0, 6.0, r).unsqueeze(1)
    temps = torch.ones(r) if temps_one else torch.linspace(0.5, 1.5, r)
    top_ks = torch.tensor([TOP_K_ALL, 5, TOP_K_ALL, 40, TOP_K_ALL, TOP_K_ALL, 3, TOP_K_ALL, 17, TOP_K_ALL])
    top_ps = torch.tensor([1.0, 1.0, 0.9, 0.5, 1.0, 1.0, 0.3, 0.95, 0.8, 1.0])
    min_ps = torch.tensor([0.0, 0.0, 0.0, 0.05, 0.1, 0.0, 0.2, 0.0, 0.02, 0.0])
    whole = filter_candidates(scale_logits(logits, temps), top_ks, top_ps, min_ps, cap=1024)
    assert int(whole.counts.max()) == 1024 and whole.truncated.any()   # the no-filter rows took the wide topk
    monkeypatch.setattr(filters, "_VOCAB_CHUNK_ELEMS", {"cpu": 3 * v})  # 3 rows per chunk, widths differ by chunk
    chunked = filters.candidates(logits, temps, top_ks, top_ps, min_ps, cap=1024)
    for name in ("scaled", "counts", "truncated"):
        assert torch.equal(getattr(chunked, name), getattr(whole, name)), name
    valid = torch.arange(whole.ids.shape[1]).unsqueeze(0) < whole.counts.unsqueeze(1)   # ids past a count: padding
    assert torch.equal(chunked.ids[valid], whole.ids[valid])
    if temps_one:
        assert scale_logits(logits, temps) is logits   # T = 1: no division, no copy
