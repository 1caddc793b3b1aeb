"""SGLANG_ESAMP_ALLOW_CUDA_GRAPH=1 lifts the CUDA-graph refusal -- only that one -- and says so loudly (issue #39:
the run that proves ESamp under graph replay on a GPU)."""
import types

import pytest

from sglang_esamp.wire import modes

SERVABLE = dict(disable_cuda_graph=True, speculative_algorithm=None, enable_deterministic_inference=False,
                enable_mixed_chunk=False, tp_size=1, pp_size=1)


def args(**over):
    return types.SimpleNamespace(**{**SERVABLE, **over})


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    monkeypatch.setattr(modes, "_warned_graph_lift", False)


def test_cuda_graphs_are_refused_without_the_switch(monkeypatch):
    monkeypatch.delenv(modes.ALLOW_CUDA_GRAPH_ENV, raising=False)
    with pytest.raises(modes.UnsupportedModeError, match="--cuda-graph-backend-decode"):
        modes.check_server_mode(args(disable_cuda_graph=False))
    monkeypatch.setenv(modes.ALLOW_CUDA_GRAPH_ENV, "0")
    assert len(modes.refusals(args(disable_cuda_graph=False))) == 1


def test_the_switch_lifts_only_the_cuda_graph_rule_and_warns_once(monkeypatch, capsys):
    monkeypatch.setenv(modes.ALLOW_CUDA_GRAPH_ENV, "1")
    modes.check_server_mode(args(disable_cuda_graph=False))
    modes.check_server_mode(args(disable_cuda_graph=False))
    err = capsys.readouterr().err
    assert err.count("WARNING [esamp] SGLANG_ESAMP_ALLOW_CUDA_GRAPH=1") == 1 and "--cuda-graph-backend-decode" in err
    # every other rule still refuses, with the switch on
    for over, flag in [({"speculative_algorithm": "EAGLE"}, "--speculative-algorithm"),
                       ({"enable_deterministic_inference": True}, "--enable-deterministic-inference"),
                       ({"enable_mixed_chunk": True}, "--enable-mixed-chunk"), ({"pp_size": 2}, "--pp-size")]:
        problems = modes.refusals(args(disable_cuda_graph=False, **over))
        assert len(problems) == 1 and flag in problems[0]


def test_an_eager_server_is_unaffected_and_silent(monkeypatch, capsys):
    monkeypatch.setenv(modes.ALLOW_CUDA_GRAPH_ENV, "1")
    assert modes.refusals(args()) == []
    assert "WARNING" not in capsys.readouterr().err
