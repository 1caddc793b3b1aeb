"""Hidden-state taps on SGLang's Llama/Qwen2-style models: install them, and copy the step's ESamp rows.

Tap names (``algo.taps``) resolve to:
  ``layers[i].input_layernorm`` -> the return value of ``layers[i].attn_boundary.prepare``: SGLang finishes the
                                   residual stream there and returns the attention's compute input, i.e. the
                                   normalized output of layer i's input norm (a forward hook on a decoder layer
                                   would see only its MLP delta: SGLang keeps the residual in the batch).
  ``lm_head_input``             -> a forward pre-hook on ``model.logits_processor``: its ``hidden_states`` argument
                                   is exactly the final-norm vector the LM head multiplies.
A tap copies only on decode steps that have an ``ESampStep`` (stock traffic pays nothing) and only the plan's rows,
into that step object (``step_state``). The SGLang symbols used here are listed in ``sglang_esamp.hooks``.
"""
from __future__ import annotations

from typing import Callable, List

import torch

from ..algo.taps import LM_HEAD_INPUT, TapSpec, parse_layer_norm_tap
from . import step_state

# leading parameters of LogitsProcessor.forward we read (hooks.py lists and checks them)
LOGITS_PROCESSOR_HIDDEN = (1, "hidden_states")
LOGITS_PROCESSOR_METADATA = (3, "logits_metadata")


class UnsupportedModelError(RuntimeError):
    pass


def _decoder_layers(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or len(layers) == 0:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__} has no model.layers; supported: Llama/Qwen2-style "
                                    "decoders (LlamaForCausalLM, Qwen2ForCausalLM)")
    return layers


def _store(role: str, batch_like, value):
    """``batch_like``: a ForwardBatch or LogitsMetadata (both carry forward_mode and sampling_info)."""
    mode = getattr(batch_like, "forward_mode", None)
    if mode is None or not mode.is_decode():
        return
    step = step_state.current(getattr(batch_like, "sampling_info", None))
    if step is None:
        return  # no ESamp row in this step
    if not isinstance(value, torch.Tensor):
        raise UnsupportedModelError(f"ESamp tap '{role}' got {type(value).__name__}, not a tensor (quantized "
                                    "attention input formats are not supported)")
    rows = value.detach().index_select(0, step.rows)
    if role == "source":
        step.h_src = rows
    else:
        step.h_tgt = rows


def _arg(args, kwargs, where):
    index, name = where
    return args[index] if len(args) > index else kwargs.get(name)


class TapSet:
    """Installs the two taps on a loaded SGLang model; ``remove()`` undoes them."""

    def __init__(self, model, spec: TapSpec):
        self._undo: List[Callable[[], None]] = []
        layers = _decoder_layers(model)
        for role, name in (("source", spec.source), ("target", spec.target)):
            if name == LM_HEAD_INPUT:
                self._tap_logits_processor(model, role)
            else:
                self._tap_layer_input(layers[parse_layer_norm_tap(name, len(layers))], role, name)

    def _tap_logits_processor(self, model, role):
        lp = getattr(model, "logits_processor", None)
        if lp is None:
            raise UnsupportedModelError(f"ESamp: {type(model).__name__} has no logits_processor")

        def pre_hook(_mod, args, kwargs):
            _store(role, _arg(args, kwargs, LOGITS_PROCESSOR_METADATA), _arg(args, kwargs, LOGITS_PROCESSOR_HIDDEN))
        handle = lp.register_forward_pre_hook(pre_hook, with_kwargs=True)
        self._undo.append(handle.remove)

    def _tap_layer_input(self, layer, role, name):
        boundary = getattr(layer, "attn_boundary", None)
        if boundary is None or not hasattr(boundary, "prepare"):
            raise UnsupportedModelError(f"ESamp tap {name}: {type(layer).__name__} has no attn_boundary.prepare")
        original = boundary.prepare

        def prepare(hidden_states, forward_batch, *args, **kwargs):
            out = original(hidden_states, forward_batch, *args, **kwargs)
            _store(role, forward_batch, out)
            return out
        boundary.prepare = prepare
        self._undo.append(lambda: setattr(boundary, "prepare", original))

    def remove(self):
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
