"""Modes ESamp cannot serve are refused at startup, naming the flag (the CPU launcher's own args: tests/serve)."""
import types

import pytest

from sglang_esamp.wire.modes import UnsupportedModeError, check_server_mode, refusals

SERVABLE = dict(disable_cuda_graph=True, speculative_algorithm=None, enable_deterministic_inference=False,
                enable_mixed_chunk=False, tp_size=1, pp_size=1)


def args(**over):
    return types.SimpleNamespace(**{**SERVABLE, **over})


def test_the_cpu_default_mode_is_served():
    assert refusals(args()) == []
    check_server_mode(args())


@pytest.mark.parametrize("over,flag", [
    ({"disable_cuda_graph": False}, "--disable-cuda-graph"),
    ({"speculative_algorithm": "EAGLE"}, "--speculative-algorithm"),
    ({"enable_deterministic_inference": True}, "--enable-deterministic-inference"),
    ({"enable_mixed_chunk": True}, "--enable-mixed-chunk"),
    ({"pp_size": 2}, "--pp-size"),
])
def test_each_unservable_mode_is_refused_naming_its_flag(over, flag):
    problems = refusals(args(**over))
    assert len(problems) == 1 and flag in problems[0]
    with pytest.raises(UnsupportedModeError, match=flag):
        check_server_mode(args(**over))
