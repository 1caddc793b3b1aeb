"""Tap capture on a Hugging Face transformers causal LM (Llama/Qwen2-style ``model.model.layers``).

Same semantics as the SGLang taps (``algo.reference.tap_spec``): module forward hooks capture the normalized element of an
input norm, and a pre-hook on ``lm_head`` captures exactly the LM-head input. Used by the reference decoder
and by offline recording.
"""
from __future__ import annotations

import contextlib
from typing import Dict

import torch

from .tap_spec import LM_HEAD_INPUT, TapSpec, parse_layer_norm_tap


def _decoder_layers(model):
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no model.layers; only Llama/Qwen2-style decoders are supported")
    return layers


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@contextlib.contextmanager
def capture_taps(model, spec: TapSpec):
    """Yields a dict that, after each forward, holds 'source' and 'target' tensors [B, T, H]."""
    captured: Dict[str, torch.Tensor] = {}
    handles = []
    layers = _decoder_layers(model)

    def install(role, name):
        if name == LM_HEAD_INPUT:
            head = model.get_output_embeddings()

            def pre_hook(_mod, args):
                captured[role] = args[0].detach()
            handles.append(head.register_forward_pre_hook(pre_hook))
        else:
            idx = parse_layer_norm_tap(name, len(layers))

            def hook(_mod, _args, out):
                captured[role] = _first(out).detach()
            handles.append(layers[idx].input_layernorm.register_forward_hook(hook))

    install("source", spec.source)
    install("target", spec.target)
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
