"""Hidden-state taps on SGLang decoders with ``model.layers[i]``: install them, and copy the step's ESamp rows.

Tap names (``algo.reference.tap_spec``) resolve to:
  ``layers[i].input_layernorm`` -> where the layer has ``attn_boundary`` (Llama, Qwen2, Qwen3, Mistral, ... in
                                   SGLang 0.5.23): the return value of ``attn_boundary.prepare``: SGLang finishes the
                                   residual stream there and returns the attention's compute input, i.e. the
                                   normalized output of layer i's input norm (a forward hook on a decoder layer
                                   would see only its MLP delta: SGLang keeps the residual in the batch).
                                   Otherwise (Gemma3, Granite, ...): a forward hook on ``layers[i].input_layernorm``,
                                   whose output is the normed tensor or the fused ``(normed, residual)`` pair; the
                                   module does not see the ForwardBatch, so a pre-hook on the inner ``model.model``
                                   (called for every forward) keeps the running one.
  ``lm_head_input``             -> a forward pre-hook on ``model.logits_processor``: its ``hidden_states`` argument
                                   is exactly the final-norm vector the LM head multiplies.
A model whose logits processor transforms the logits (``final_logit_softcapping``, ``logit_scale``) is refused:
ESamp's distiller logits ``W . h_hat`` would not be on the LLM's scale.
Where a tap writes: the whole decode batch into the runtime's static ``tap_buffers.TapBuffers`` (with the batch's
positions as a freshness stamp), never into the step object, so the copy is graph-capturable (a replay refills the
buffers) and eager steps use the same path; ``step.read_taps`` reads the plan's rows from there. Eager decode
steps without an ``ESampStep`` write nothing (stock traffic pays nothing); while a CUDA graph is captured every
decode forward writes. The ForwardBatch (for the positions, and for taps on modules that do not receive it) is
kept by a pre-hook on the inner ``model.model``, called for every forward, and dropped after the logits processor.
The SGLang symbols used here are listed in ``sglang_esamp.hooks``.
"""
from __future__ import annotations

from typing import Callable, List

import torch

from ..algo.reference.tap_spec import LM_HEAD_INPUT, TapSpec, parse_layer_norm_tap
from . import step_state
from .tap_buffers import TapBuffers, capturing

# leading parameter of LogitsProcessor.forward we read (hooks.py lists and checks it)
LOGITS_PROCESSOR_HIDDEN = (1, "hidden_states")


class UnsupportedModelError(RuntimeError):
    pass


def _decoder_layers(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or len(layers) == 0:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__} has no model.layers; supported: decoders with "
                                    "model.layers[i] (an input norm or attn_boundary) and a logits processor, e.g. "
                                    "Llama/Qwen2/Qwen3/Mistral/Gemma3")
    return layers


def check_logits_processor(model) -> None:
    lp = getattr(model, "logits_processor", None)
    if lp is None:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__} has no logits_processor")
    cap = getattr(lp, "final_logit_softcapping", None)
    scale = getattr(lp, "logit_scale", None)
    if cap is not None:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__} soft-caps its logits (final_logit_softcapping="
                                    f"{cap}); ESamp's distiller logits are linear in the LM head and would not match")
    if scale is not None and scale != 1:
        raise UnsupportedModelError(f"ESamp: {type(model).__name__} scales its logits (logit_scale={scale}); not "
                                    "supported by ESamp's candidate logits")


def _forward_batch_in(args, kwargs):
    for v in (*args, *kwargs.values()):
        if hasattr(v, "forward_mode") and hasattr(v, "sampling_info"):
            return v
    return None


def _arg(args, kwargs, where):
    index, name = where
    return args[index] if len(args) > index else kwargs.get(name)


class TapSet:
    """Installs the two taps on a loaded SGLang model, writing into ``buffers``; ``remove()`` undoes them."""

    def __init__(self, model, spec: TapSpec, buffers: TapBuffers):
        self.buffers = buffers
        self.drop_write: Callable[[str], bool] = lambda role: False   # fault injection (skip_taps)
        self._undo: List[Callable[[], None]] = []
        self._batch = None       # the running ForwardBatch (positions; taps on modules that do not receive it)
        self._tracking = False
        layers = _decoder_layers(model)
        check_logits_processor(model)
        for role, name in (("source", spec.source), ("target", spec.target)):
            if name == LM_HEAD_INPUT:
                self._tap_logits_processor(model, role)
            else:
                layer = layers[parse_layer_norm_tap(name, len(layers))]
                if hasattr(getattr(layer, "attn_boundary", None), "prepare"):
                    self._tap_layer_input(layer, role)
                elif isinstance(getattr(layer, "input_layernorm", None), torch.nn.Module):
                    self._track_batch(model)
                    self._tap_input_norm(layer.input_layernorm, role)
                else:
                    raise UnsupportedModelError(f"ESamp tap {name}: {type(layer).__name__} has neither "
                                                "attn_boundary.prepare nor an input_layernorm module")

    def _store(self, role: str, batch, value) -> None:
        mode = getattr(batch, "forward_mode", None)
        if mode is None or not mode.is_decode():
            return
        if step_state.current(getattr(batch, "sampling_info", None)) is None and not capturing():
            return  # no ESamp row in this step
        if not isinstance(value, torch.Tensor):
            raise UnsupportedModelError(f"ESamp tap '{role}' got {type(value).__name__}, not a tensor (quantized "
                                        "attention input formats are not supported)")
        if not self.drop_write(role):
            self.buffers.write(role, value.detach(), batch.positions)

    def _track_batch(self, model):
        """For taps on modules that do not receive the ForwardBatch (installed once)."""
        if self._tracking:
            return
        self._tracking = True

        def pre(_mod, args, kwargs):
            self._batch = _forward_batch_in(args, kwargs)

        def done(_mod, _args, _out):
            self._batch = None
        handles = [model.model.register_forward_pre_hook(pre, with_kwargs=True),
                   model.logits_processor.register_forward_hook(done, always_call=True)]
        self._undo.extend(h.remove for h in handles)

    def _tap_logits_processor(self, model, role):
        self._track_batch(model)

        def pre_hook(_mod, args, kwargs):
            self._store(role, self._batch, _arg(args, kwargs, LOGITS_PROCESSOR_HIDDEN))
        handle = model.logits_processor.register_forward_pre_hook(pre_hook, with_kwargs=True)
        self._undo.append(handle.remove)

    def _tap_layer_input(self, layer, role):
        boundary = layer.attn_boundary
        original = boundary.prepare

        def prepare(hidden_states, forward_batch, *args, **kwargs):
            out = original(hidden_states, forward_batch, *args, **kwargs)
            self._store(role, forward_batch, out)
            return out
        boundary.prepare = prepare
        self._undo.append(lambda: setattr(boundary, "prepare", original))

    def _tap_input_norm(self, norm, role):
        def hook(_mod, _args, out):
            self._store(role, self._batch, out[0] if isinstance(out, (tuple, list)) else out)
        handle = norm.register_forward_hook(hook)
        self._undo.append(handle.remove)

    def remove(self):
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
