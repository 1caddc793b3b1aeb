"""bench_throughput's report: the step breakdown accounts for the whole step, and --compare reads a baseline."""
import json

import pytest

from sglang_esamp.bench.throughput import compare, step_breakdown


def test_the_breakdown_splits_the_whole_step_into_esamp_phases_and_sglang():
    work = {"steps_timed": 10, "time_step_s": 0.5, "time_plan_s": 0.01, "time_taps_s": 0.02,
            "time_update_wait_s": 0.1, "time_predict_s": 0.03, "time_candidates_s": 0.0, "time_reweight_s": 0.0,
            "time_draw_s": 0.0, "time_submit_s": 0.01, "time_update_s": 9.0}   # update: another thread
    b = step_breakdown(work, rows=16, off_tok_s=400.0)
    assert b["step"] == pytest.approx(50.0) and b["esamp_update_wait"] == pytest.approx(10.0)
    assert b["esamp_on_scheduler"] == pytest.approx(17.0) and b["rest_sglang"] == pytest.approx(33.0)
    assert "esamp_update" not in b                           # the worker's time is not part of the step's wall
    assert b["off_arm_step"] == pytest.approx(40.0)
    assert step_breakdown({}, rows=16, off_tok_s=400.0) == {}   # no timed step: nothing to split


def test_compare_prints_the_change_against_a_baseline(tmp_path, capsys):
    base = {"tok_s": {"on": {"median": 100.0}, "off": {"median": 80.0}}, "ratio_on_off": {"median": 1.25}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    now = {"tok_s": {"on": {"median": 110.0}, "off": {"median": 80.0}, "stock": {"median": 85.0}},
           "ratio_on_off": {"median": 1.375}}
    rows = compare(now, tmp_path / "base.json")
    assert rows["on"]["change"] == pytest.approx(0.10) and rows["off"]["change"] == pytest.approx(0.0)
    assert "stock" not in rows and rows["on/off"]["change"] == pytest.approx(0.10)
    assert "+10.0 %" in capsys.readouterr().out
