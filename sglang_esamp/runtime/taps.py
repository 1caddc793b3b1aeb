"""Hidden-state taps on SGLang's Llama/Qwen2 models (decode rows only), stored on the ForwardBatch.

Tap names (``algo.taps``) resolve to:
  ``layers[i].input_layernorm`` -> the return value of ``layers[i].attn_boundary.prepare``: SGLang finishes the
                                   residual stream there and returns the attention's compute input, i.e. the
                                   normalized output of layer i's input norm (a forward hook on a decoder layer
                                   would see only its MLP delta: SGLang keeps the residual in the batch).
  ``lm_head_input``             -> a forward pre-hook on ``model.logits_processor``: its ``hidden_states`` argument
                                   is exactly the final-norm vector the LM head multiplies.
Values are stored with the step's plan on its SamplingBatchInfo (``step_holder``) and taken off again by the
sampler step (``take_step_state``), so a step reads its own batch's rows and nothing leaks into a later step. Rows are the batch's
rows in order (``forward_batch.rids``); the runtime maps them to requests explicitly.
"""
from __future__ import annotations

from typing import Callable, List

import torch

from ..algo.taps import LM_HEAD_INPUT, TapSpec, parse_layer_norm_tap

ATTR = {"source": "_esamp_tap_source", "target": "_esamp_tap_target"}
PLAN_ATTR = "_esamp_plan"  # set by runtime.step before the forward: taps copy only when a step has ESamp rows


class UnsupportedModelError(RuntimeError):
    pass


def _decoder_layers(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or len(layers) == 0:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__} has no model.layers; supported: Llama/Qwen2-style "
                                    "decoders (LlamaForCausalLM, Qwen2ForCausalLM)")
    return layers


def step_holder(forward_batch):
    """Where a step's ESamp state lives: the batch's SamplingBatchInfo. The model may run on a shallow copy of the
    ForwardBatch that ModelRunner.sample never sees; both share the SamplingBatchInfo."""
    info = getattr(forward_batch, "sampling_info", None)
    return info if info is not None else forward_batch


def _store(role: str, forward_batch, value):
    mode = getattr(forward_batch, "forward_mode", None)
    if mode is None or not mode.is_decode():
        return
    holder = step_holder(forward_batch)
    if getattr(holder, PLAN_ATTR, None) is None:
        return  # no ESamp row in this step: keep stock traffic free of copies
    if not isinstance(value, torch.Tensor):
        raise UnsupportedModelError(f"ESamp tap '{role}' got {type(value).__name__}, not a tensor (quantized "
                                    "attention input formats are not supported)")
    setattr(holder, ATTR[role], value.detach().clone())


def take_step_state(forward_batch):
    """(plan, source, target) of this step, removed from the holder so nothing leaks into a later step."""
    holder = step_holder(forward_batch)
    out = tuple(getattr(holder, a, None) for a in (PLAN_ATTR, ATTR["source"], ATTR["target"]))
    for a in (PLAN_ATTR, ATTR["source"], ATTR["target"]):
        if hasattr(holder, a):
            delattr(holder, a)
    return out


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
            hidden = args[1] if len(args) > 1 else kwargs.get("hidden_states")
            meta = args[3] if len(args) > 3 else kwargs.get("logits_metadata")
            _store(role, meta, hidden)
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
