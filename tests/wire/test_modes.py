"""Modes ESamp cannot serve are refused at startup, naming the flag; hooks SGLang failed to apply stop the start."""
import types

import pytest

from sglang_esamp.hooks import HOOKS, HookNotAppliedError, check_hooks_applied
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


def test_real_server_args_of_the_cpu_launcher_are_served(tiny_model_path):
    from sglang.srt.server_args import prepare_server_args

    from sglang_esamp.serve.cpu_defaults import apply_cpu_defaults

    check_server_mode(prepare_server_args(apply_cpu_defaults(["--model-path", tiny_model_path])))
    with pytest.raises(UnsupportedModeError, match="--enable-mixed-chunk"):
        check_server_mode(prepare_server_args(apply_cpu_defaults(["--model-path", tiny_model_path,
                                                                  "--enable-mixed-chunk"])))


def test_a_hook_sglang_did_not_apply_stops_the_start_naming_it():
    every = {t.path for t in HOOKS}
    check_hooks_applied(every)
    missing = HOOKS[2].path
    with pytest.raises(HookNotAppliedError, match=missing.replace(".", r"\.")):
        check_hooks_applied(every - {missing})
