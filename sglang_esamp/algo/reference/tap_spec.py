"""Where the distiller reads (source) and what it predicts (target), as named tap points.

Tap names are model-agnostic strings resolved by each adapter (HF transformers in ``hf_taps``, SGLang in
``runtime``):
  ``layers[i].input_layernorm``  the normalized output of decoder layer i's input norm (element 0 of a fused
                                 ``(normed, residual)`` result); for i >= 1 that is the normalized residual
                                 stream after layer i-1.
  ``lm_head_input``              the final-norm output, exactly the vector the LM head multiplies.
Presets (DESIGN §1): ``paper`` = layers[1].input_layernorm -> lm_head_input (default);
``tllm`` = layers[0].input_layernorm -> layers[-1].input_layernorm (parity with the authors' vLLM code).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LM_HEAD_INPUT = "lm_head_input"
_LAYER_NORM_RE = re.compile(r"^layers\[(-?\d+)\]\.input_layernorm$")


@dataclass(frozen=True)
class TapSpec:
    source: str
    target: str

    def validate(self):
        for field, name in (("source", self.source), ("target", self.target)):
            if name != LM_HEAD_INPUT and not _LAYER_NORM_RE.match(name):
                raise ValueError(f"taps.{field}: unknown tap '{name}'; expected '{LM_HEAD_INPUT}' or "
                                 f"'layers[i].input_layernorm'")
        return self

    def to_dict(self):
        return {"source": self.source, "target": self.target}


TAP_PRESETS = {
    "paper": TapSpec("layers[1].input_layernorm", LM_HEAD_INPUT),
    "tllm": TapSpec("layers[0].input_layernorm", "layers[-1].input_layernorm"),
}


def parse_layer_norm_tap(name: str, num_layers: int) -> int:
    """'layers[i].input_layernorm' -> absolute layer index (negative counts from the end)."""
    m = _LAYER_NORM_RE.match(name)
    if not m:
        raise ValueError(f"not a layer tap: {name}")
    i = int(m.group(1))
    if i < 0:
        i += num_layers
    if not 0 <= i < num_layers:
        raise ValueError(f"tap {name}: layer index out of range for a {num_layers}-layer model")
    return i


def tap_spec(preset_or_spec) -> TapSpec:
    if isinstance(preset_or_spec, TapSpec):
        return preset_or_spec.validate()
    if preset_or_spec not in TAP_PRESETS:
        raise ValueError(f"taps: unknown preset '{preset_or_spec}'; allowed: {sorted(TAP_PRESETS)}")
    return TAP_PRESETS[preset_or_spec]
