"""ESamp refuses, with a clear error at startup, a model whose architecture it cannot tap."""
import types

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.runtime.runtime import attach
from sglang_esamp.runtime.taps import UnsupportedModelError


class NoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(hidden_size=8)
        self.lm_head = torch.nn.Linear(8, 16, bias=False)


def test_unsupported_architecture_fails_when_strict_and_serves_without_esamp_otherwise():
    runner = types.SimpleNamespace(model=NoLayers(), is_draft_worker=False)
    with pytest.raises(UnsupportedModelError, match="Llama/Qwen2"):
        attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=True)
    assert attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=False) is None


def test_graph_replay_mode_is_refused_at_startup_naming_the_flag():
    """CUDA graphs / SGLang's CPU graph runner replay the forward without its Python taps: refused, not inert."""
    from sglang_esamp.wire.modes import UnsupportedModeError

    runner = types.SimpleNamespace(model=NoLayers(), is_draft_worker=False,
                                   server_args=types.SimpleNamespace(disable_cuda_graph=False))
    with pytest.raises(UnsupportedModeError, match="--disable-cuda-graph"):
        attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=True)
    assert attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=False) is None
