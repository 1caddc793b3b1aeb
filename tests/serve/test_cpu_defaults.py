"""The CPU launcher's defaults (serve/cpu_defaults.py): thread binding per rank, server args ESamp serves."""
import pytest

from sglang_esamp.serve.cpu_defaults import apply_cpu_defaults, bind_cpu_threads
from sglang_esamp.wire.modes import UnsupportedModeError, check_server_mode


def test_cpu_thread_binding_splits_the_cores_between_ranks(monkeypatch):
    monkeypatch.delenv("SGLANG_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    bind_cpu_threads(2)
    import os

    assert os.environ["SGLANG_CPU_OMP_THREADS_BIND"] == "0-1|2-3"
    monkeypatch.setenv("SGLANG_CPU_OMP_THREADS_BIND", "0|3")
    bind_cpu_threads(2)
    assert os.environ["SGLANG_CPU_OMP_THREADS_BIND"] == "0|3"          # the user's choice wins


def test_real_server_args_of_the_cpu_launcher_are_served(tiny_model_path):
    from sglang.srt.server_args import prepare_server_args

    check_server_mode(prepare_server_args(apply_cpu_defaults(["--model-path", tiny_model_path])))
    with pytest.raises(UnsupportedModeError, match="--enable-mixed-chunk"):
        check_server_mode(prepare_server_args(apply_cpu_defaults(["--model-path", tiny_model_path,
                                                                  "--enable-mixed-chunk"])))
