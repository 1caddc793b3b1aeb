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
    ({"disable_cuda_graph": False}, "--cuda-graph-backend-decode"),
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


@pytest.mark.parametrize("over,refused", [
    ({"disable_cuda_graph": False}, True),                                   # SGLang's default: decode graphs on
    ({"disable_cuda_graph": False, "cuda_graph_backend_decode": "disabled"}, False),   # the current flag
    ({"disable_cuda_graph": False, "disable_decode_cuda_graph": True}, False),
    ({"disable_cuda_graph": False, "cuda_graph_backend_prefill": "disabled"}, True),  # prefill off only
    ({"cuda_graph_backend_decode": "breakable"}, True),                      # the per-phase flag wins
    ({"cuda_graph_config": {"decode": {"backend": "full"}}, "cuda_graph_backend_decode": "disabled"}, True),
    ({"disable_cuda_graph": False, "cuda_graph_config": {"decode": {"backend": "disabled"}}}, False),
    ({"disable_cuda_graph": False, "cuda_graph_config": {"prefill": {"backend": "disabled"}}}, True),
    ({"disable_cuda_graph": False, "device": "cpu"}, False),                 # no CUDA graphs on a CPU device
    ({"device": "cpu", "enable_torch_compile": True}, True),                 # ... but SGLang's CPU graph runner
])
def test_the_decode_graph_is_read_in_sglangs_precedence(over, refused):
    problems = refusals(args(**over))
    assert bool(problems) == refused, problems
    if refused:
        assert "--cuda-graph-backend-decode" in problems[0] or "--enable-torch-compile" in problems[0]


@pytest.mark.parametrize("flags,refused", [
    ([], True),
    (["--disable-cuda-graph"], False),
    (["--cuda-graph-backend-decode", "disabled"], False),
    (["--disable-decode-cuda-graph"], False),
    (["--cuda-graph-backend-prefill", "disabled"], True),
    (["--cuda-graph-config", '{"decode": {"backend": "disabled"}}'], False),
])
def test_sglangs_own_parser_spellings_of_the_decode_graph(flags, refused, smollm2_path, monkeypatch):
    """The real ServerArgs, as launch_server checks them (a GPU user's default device: cuda)."""
    from sglang.srt.server_args import prepare_server_args

    monkeypatch.delenv("SGLANG_ESAMP_ALLOW_CUDA_GRAPH", raising=False)
    server_args = prepare_server_args(["--model-path", smollm2_path, "--device", "cuda"] + flags)
    assert bool(refusals(server_args)) == refused
