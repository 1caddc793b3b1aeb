"""ESamp refuses, with a clear error at startup, a model whose architecture it cannot tap."""
import types

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.runtime.esamp_runtime import attach
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
    with pytest.raises(UnsupportedModeError, match="--cuda-graph-backend-decode"):
        attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=True)
    assert attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=False) is None


class SoftCapped(torch.nn.Module):
    """Decoder-shaped (layers with an input norm) but with soft-capped logits, as Gemma2."""

    def __init__(self, cap=30.0, scale=None):
        super().__init__()
        self.config = types.SimpleNamespace(hidden_size=8)
        layer = torch.nn.Module()
        layer.input_layernorm = torch.nn.LayerNorm(8)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([layer] * 8)
        self.logits_processor = types.SimpleNamespace(final_logit_softcapping=cap, logit_scale=scale)
        self.lm_head = torch.nn.Linear(8, 16, bias=False)


@pytest.mark.parametrize("cap,scale,reason", [(30.0, None, "final_logit_softcapping"), (None, 0.5, "logit_scale")])
def test_models_whose_logits_processor_transforms_logits_are_refused_with_the_reason(cap, scale, reason):
    runner = types.SimpleNamespace(model=SoftCapped(cap, scale), is_draft_worker=False)
    with pytest.raises(UnsupportedModelError, match=reason):
        attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=True)


def test_a_layer_without_input_norm_or_boundary_is_refused_naming_both():
    m = SoftCapped(None, None)
    del m.model.layers[0].input_layernorm   # the one layer module, listed 8 times
    runner = types.SimpleNamespace(model=m, is_draft_worker=False)
    with pytest.raises(UnsupportedModelError, match="attn_boundary.prepare nor an input_layernorm"):
        attach(runner, ESampConfig(bank_slots=1, session_max=0), strict=True)
