"""Method names <-> sampling parameters (bench_quality/methods.py): the authors' filter grammar."""
import pytest

from sglang_esamp.bench.quality.methods import ANCHOR, PRESETS, parse_method, resolve_methods


def test_anchor_is_the_authors_filters_without_esamp():
    m = parse_method("anchor")
    assert (m.family, m.temperature, m.top_p, m.min_p) == ("plain", 0.8, 0.95, 0.1)
    sp = m.sampling_params(512, 8)
    assert (sp["temperature"], sp["top_p"], sp["min_p"]) == (0.8, 0.95, 0.1) and "esamp" not in sp
    assert not m.is_temperature_sweep


@pytest.mark.parametrize("init", ["random", "warm"])
def test_esamp_behind_the_anchor_filters(init):
    m = parse_method(f"esamp_b0.8_{init}_anchor")
    assert (m.beta, m.init) == (0.8, init)
    assert {k: getattr(m, k) for k in ANCHOR} == ANCHOR
    assert m.sampling_params(64, 8)["esamp"] == {"beta": 0.8, "init": init}


def test_filter_suffixes_in_order_and_old_names_keep_their_settings():
    m = parse_method("esamp_b1_random_t0.8_topp0.9_minp0.05")
    assert (m.temperature, m.top_p, m.min_p) == (0.8, 0.9, 0.05)
    assert parse_method("t0.8_topp0.95").top_p == 0.95
    # names that existed before the grammar grew map to the same settings (the cache key of committed samples)
    assert parse_method("esamp_b0.25_random_minp0.1").settings() == {
        "family": "esamp", "temperature": 1.0, "top_p": 1.0, "min_p": 0.1, "beta": 0.25, "init": "random"}
    assert parse_method("sharpen_b0.25").settings()["min_p"] == 0.0


@pytest.mark.parametrize("bad", ["esamp_b0.8_warm_anchor_minp0.1", "t0.8_minp0.1_topp0.9", "esamp_b0.8_anchor",
                                 "t0.8_topp1.5"])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError):
        parse_method(bad)


def test_authors_preset():
    names = [m.name for m in resolve_methods("authors")]
    assert names == PRESETS["authors"] == ["anchor", "esamp_b0.8_random_anchor", "esamp_b0.8_warm_anchor",
                                           "esamp_b0.25_random_minp0.1"]


def test_the_nosharpen_variant_asks_for_sharpen_false_and_keys_its_own_samples():
    m = parse_method("esamp_b0.8_random_nosharpen_anchor")
    assert (m.family, m.beta, m.init, m.sharpen, m.temperature, m.min_p) == ("esamp", 0.8, "random", False, 0.8, 0.1)
    assert m.sampling_params(64, 8)["esamp"] == {"beta": 0.8, "init": "random", "sharpen": False}
    assert m.settings()["sharpen"] is False
    assert "sharpen" not in parse_method("esamp_b0.8_random_anchor").settings()
    assert [x.name for x in resolve_methods("ours")] == ["esamp_b0.8_random_nosharpen_anchor"]
    with pytest.raises(ValueError):
        parse_method("esamp_b0.8_nosharpen_random")


def test_report_tables_pass_at_k_at_powers_of_two_with_paired_differences():
    from sglang_esamp.bench.quality.metrics import report_ks
    from sglang_esamp.bench.quality.report import markdown

    assert report_ks(16) == [1, 2, 4, 8, 16] and report_ks(12) == [1, 2, 4, 8, 12] and report_ks(1) == [1]

    def fig(mean):
        return {"mean": mean, "se": 0.01, "problems": 4}

    figs = {f"pass@{k}": fig(0.5 + k / 100) for k in range(1, 17)}
    diff = {"pass@16": {"mean": -0.05, "se": 0.02, "wins": 1, "losses": 3}}
    doc = {"model": "m", "settings": {"n": 16}, "tasks": {"humaneval": {"baseline": "minp0.1", "methods": {
        "minp0.1": {"figures": figs, "complete_problems": 4, "missing_problems": 0},
        "esamp": {"figures": figs, "complete_problems": 4, "missing_problems": 0, "vs_baseline": diff}}}}}
    md = markdown(doc)
    assert "| method | pass@1 | pass@2 | pass@4 | pass@8 | pass@16 |" in md
    row = [line for line in md.splitlines() if line.startswith("| `esamp` |")][-1]     # the pass@k table's row
    assert row.startswith("| `esamp` | 0.510 ± 0.010 | 0.520 ± 0.010 |")
    assert row.endswith("0.660 ± 0.010<br>Δ -0.050 ± 0.020 (1/3) |")


def test_scoring_requests_are_bounded_in_tokens():
    from sglang_esamp.bench.quality.client import scoring_batches

    # prompt 100: items cost 100 + their length; budget 1000
    assert scoring_batches(100, [300, 300, 0, 300, 900, 50], budget=1000) == [[0, 1], [3], [4], [5]]
    assert scoring_batches(100, [2000], budget=1000) == [[0]]          # over the budget alone: its own request
    assert scoring_batches(100, [0, 0], budget=1000) == []
    lengths = [512] * 16
    batches = scoring_batches(200, lengths)                            # n=16 x 512 tokens, the default budget
    assert sorted(i for b in batches for i in b) == list(range(16))
    assert all(sum(200 + lengths[i] for i in b) <= 2048 for b in batches)
