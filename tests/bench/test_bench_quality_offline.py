"""bench_quality without a server: the frontier gap (a method's diversity minus the temperature line at its
quality) and the CLI's errors."""
import numpy as np
import pytest

from sglang_esamp.bench.quality.frontier import axis_pairs, frontier_gaps, gap, line_at
from sglang_esamp.bench.quality.metrics import bootstrap_indices


def test_line_is_read_between_the_sweep_points_sorted_by_quality_and_never_extrapolated():
    xs, ys = [2.0, 1.0, 3.0], [20.0, 10.0, 40.0]          # given out of order
    assert line_at(xs, ys, 1.5) == pytest.approx(15.0)
    assert line_at(xs, ys, 2.5) == pytest.approx(30.0)
    assert line_at(xs, ys, 3.0) == pytest.approx(40.0)
    assert line_at(xs, ys, 0.99) is None and line_at(xs, ys, 3.01) is None
    assert line_at([1.0], [1.0], 1.0) is None


def _cols(x, y, problems=4):
    return {"nll": [x] * problems, "vendi": [y] * problems}


def test_gap_is_the_height_above_the_line_with_a_zero_se_when_every_problem_agrees():
    sweep = [_cols(1.0, 2.0), _cols(2.0, 4.0)]
    idx = bootstrap_indices(4, 200, 0)
    above = gap(_cols(1.5, 3.5), sweep, "nll", "vendi", idx)
    assert above["gap"] == pytest.approx(0.5) and above["line"] == pytest.approx(3.0)
    assert above["se"] == pytest.approx(0.0) and above["inside"] == 1.0 and above["problems"] == 4
    below = gap(_cols(1.5, 2.5), sweep, "nll", "vendi", idx)
    assert below["gap"] == pytest.approx(-0.5)
    outside = gap(_cols(2.5, 9.0), sweep, "nll", "vendi", idx)
    assert outside["gap"] is None and outside["se"] is None and outside["inside"] == 0.0


def test_gap_uses_only_the_problems_every_method_has():
    # problem 3 exists for the sweep only, and would move the line if it were used
    sweep = [{"nll": [1.0, 1.0, 1.0, 1.0], "vendi": [2.0, 2.0, 2.0, 10.0]},
             {"nll": [2.0, 2.0, 2.0, 2.0], "vendi": [4.0, 4.0, 4.0, 10.0]}]
    method = {"nll": [1.5, 1.5, 1.5, None], "vendi": [3.0, 3.0, 3.0, None]}
    g = gap(method, sweep, "nll", "vendi", bootstrap_indices(4, 100, 1))
    assert g["gap"] == pytest.approx(0.0) and g["problems"] == 3


def test_bootstrap_se_carries_the_noise_of_the_line():
    rng = np.random.default_rng(0)
    noisy = [{"nll": list(1.0 + rng.normal(0, 0.01, 30)), "vendi": list(2.0 + rng.normal(0, 0.5, 30))},
             {"nll": list(2.0 + rng.normal(0, 0.01, 30)), "vendi": list(4.0 + rng.normal(0, 0.5, 30))}]
    g = gap(_cols(1.5, 3.5, 30), noisy, "nll", "vendi", bootstrap_indices(30, 500, 0))
    assert 0.03 < g["se"] < 0.3          # ~ 0.5/sqrt(30)/sqrt(2), from the line alone


def test_frontier_gaps_cover_every_method_outside_the_sweep_on_every_axis_pair():
    per = {"t0.8": {**_cols(1.0, 2.0), "pass@1": [0.8] * 4, "distinct2": [0.5] * 4, "pass@4": [0.9] * 4},
           "t1.0": {**_cols(2.0, 4.0), "pass@1": [0.6] * 4, "distinct2": [0.7] * 4, "pass@4": [0.95] * 4},
           "esamp": {**_cols(1.5, 3.5), "pass@1": [0.7] * 4, "distinct2": [0.65] * 4, "pass@4": [1.0] * 4}}
    out = frontier_gaps(per, ["t0.8", "t1.0"], axis_pairs(True, 4), bootstrap_indices(4, 50, 0))
    assert list(out) == ["esamp"]
    assert set(out["esamp"]) == {"vendi vs pass@1", "distinct2 vs pass@1", "pass@4 vs pass@1", "vendi vs nll",
                                 "distinct2 vs nll"}
    assert out["esamp"]["pass@4 vs pass@1"]["gap"] == pytest.approx(1.0 - 0.925)
    assert out["esamp"]["distinct2 vs nll"]["gap"] == pytest.approx(0.05)
    assert frontier_gaps(per, ["t1.0"], axis_pairs(True, 4), bootstrap_indices(4, 50, 0)) == {}


@pytest.mark.parametrize("flags,named", [(["--n", "0"], "--n"), (["--limit", "0"], "--limit"),
                                         (["--max-tokens", "0"], "--max-tokens"), (["--methods", "t9"], "t9"),
                                         (["--tasks", "nope"], "nope"), ([], "--base-url"),
                                         (["--workers", "0"], "--workers"), (["--workers", "2"], "--model")])
def test_bad_flags_end_with_a_cli_error_naming_them(tmp_path, capsys, flags, named):
    from sglang_esamp.bench.quality.cli import main

    source = [] if not flags else ["--report-only"]
    with pytest.raises(SystemExit) as e:
        main(source + flags + ["--output", str(tmp_path)])
    assert e.value.code == 2 and named in capsys.readouterr().err


def test_concave_fit_passes_through_three_concave_points_and_lies_above_their_straight_line():
    from sglang_esamp.bench.quality.frontier import concave_at, concave_fit

    xs, ys = [1.0, 2.0, 4.0], [1.0, 2.0, 2.9]              # concave and increasing: the parabola through them
    c, b, a = concave_fit(xs, ys)
    assert c < 0 and [c * x * x + b * x + a for x in xs] == pytest.approx(ys)
    for x in (1.5, 3.0):
        assert concave_at(xs, ys, x) > line_at(xs, ys, x)
    assert concave_at(xs, ys, 4.5) is None and concave_at(xs, ys, 0.5) is None      # never extrapolated
    assert concave_fit([1.0, 3.0], [1.0, 5.0]) == pytest.approx((0.0, 2.0, -1.0))   # two points: the line


def test_concave_fit_of_convex_or_turning_points_is_the_best_concave_monotone_quadratic():
    from sglang_esamp.bench.quality.frontier import concave_fit

    x = np.array([0.0, 1.0, 2.0])
    c, b, a = concave_fit(x, [0.0, 0.0, 2.0])               # convex: no concave curve passes; the LS line
    assert c == 0.0 and b == pytest.approx(1.0) and a == pytest.approx(-1.0 / 3.0)
    c, b, a = concave_fit(x, [0.0, 2.0, 1.0])               # rises then falls: the parabola would turn inside
    assert c <= 0.0 and (c == 0.0 or not 0.0 < -b / (2 * c) < 2.0)
    grid = np.linspace(0.0, 2.0, 21)
    fit = np.polyval((c, b, a), grid)
    assert np.all(np.diff(fit) >= -1e-12) or np.all(np.diff(fit) <= 1e-12)
    # and no other concave monotone quadratic fits the points better (a grid over the feasible ones)
    sse = float(((np.polyval((c, b, a), x) - [0.0, 2.0, 1.0]) ** 2).sum())
    for cc in np.linspace(-3, 0, 31):
        for bb in np.linspace(-4, 8, 61):
            if cc < 0 and 0.0 < -bb / (2 * cc) < 2.0:
                continue
            aa = np.mean(np.array([0.0, 2.0, 1.0]) - cc * x * x - bb * x)
            assert ((np.polyval((cc, bb, aa), x) - [0.0, 2.0, 1.0]) ** 2).sum() >= sse - 1e-9


def test_the_concave_gap_is_smaller_than_the_straight_one_between_concave_sweep_points():
    sweep = [_cols(1.0, 1.0), _cols(2.0, 2.0), _cols(4.0, 2.9)]
    idx = bootstrap_indices(4, 100, 0)
    straight = gap(_cols(3.0, 2.6), sweep, "nll", "vendi", idx)
    concave = gap(_cols(3.0, 2.6), sweep, "nll", "vendi", idx, fit="concave")
    assert straight["gap"] == pytest.approx(2.6 - 2.45)
    c, b, a = np.polyfit([1.0, 2.0, 4.0], [1.0, 2.0, 2.9], 2)
    assert concave["gap"] == pytest.approx(2.6 - (9 * c + 3 * b + a)) and concave["gap"] < straight["gap"]
    out = frontier_gaps({"t0.6": sweep[0], "t0.8": sweep[1], "t1.0": sweep[2], "m": _cols(3.0, 2.6)},
                        ["t0.6", "t0.8", "t1.0"], [("nll", "vendi")], idx, fit="concave")
    assert out["m"]["vendi vs nll"]["gap"] == pytest.approx(concave["gap"])
