"""Warm-start files: one pretrained distiller (``Distiller.export_state()`` layout) plus who it was made for.

Format: a safetensors file whose tensors are the distiller parameters without the slot dimension (fp32) and whose
header metadata holds one JSON string under ``esamp_warm_start``:
  {"format": "esamp-warm-start", "format_version": 1,
   "model": {"model_id", "config_sha256", "weights_sha256", ...},  # sglang_esamp.models.model_fingerprint
   "taps": {"preset", "source", "target"},
   "preset": "paper", "shape": DistillerShape.to_dict(),
   "training": {...}, "recording": {...}}                           # informational (val loss, baselines, ...)
The metadata travels inside the file so a file can never be separated from its identity; the exporter also writes
a sidecar ``.json`` copy for people. Plain torch + safetensors: the server imports this, never DeepSpeed.

``load_warm_start`` refuses, with a ``WarmStartMismatch`` naming the field, a file made for another model (model id,
config hash or weights hash), another distiller architecture (hidden/blocks/width/out_ln; ``gate_bias_init`` is only an init
and is not compared) or other taps.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch

from .distiller import DistillerShape, check_state_matches
from ..reference.tap_spec import TapSpec, tap_spec

FORMAT = "esamp-warm-start"
FORMAT_VERSION = 1
METADATA_KEY = "esamp_warm_start"
_SHAPE_FIELDS = ("hidden", "blocks", "width", "out_ln")


class WarmStartMismatch(ValueError):
    """The file was made for something other than what is being served; ``field`` says what."""

    def __init__(self, path, field: str, file_value, expected_value, hint: str = ""):
        self.field = field
        msg = (f"warm start {path} does not fit: {field} in the file is {file_value!r}, the server has "
               f"{expected_value!r}")
        super().__init__(msg + (f"; {hint}" if hint else ""))


def save_warm_start(path, state: Mapping[str, torch.Tensor], metadata: dict):
    """Write the file (used by ``distiller_pretrain.export``)."""
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    for key in ("model", "taps", "shape"):
        if key not in meta:
            raise ValueError(f"warm-start metadata needs '{key}'")
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})


def read_warm_start_metadata(path) -> dict:
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"warm start: no such file: {path}")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as e:  # not a safetensors file at all
        raise ValueError(f"warm start {path}: not a safetensors file ({e})") from None
    if raw is None:
        raise ValueError(f"warm start {path}: no '{METADATA_KEY}' metadata; not an ESamp warm-start file "
                         f"(make one with python -m distiller_pretrain.export)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"warm start {path}: format {meta.get('format')!r} v{meta.get('format_version')}, "
                         f"this server reads {FORMAT!r} v{FORMAT_VERSION}")
    return meta


def _fingerprint(model_dir_or_fingerprint) -> dict:
    if isinstance(model_dir_or_fingerprint, Mapping):
        return dict(model_dir_or_fingerprint)
    from ...models.fingerprint import model_fingerprint

    return model_fingerprint(str(model_dir_or_fingerprint))


def _taps(taps) -> TapSpec:
    if isinstance(taps, Mapping):
        return TapSpec(taps["source"], taps["target"]).validate()
    return tap_spec(taps)


def check_metadata(meta: dict, path, *, model_dir_or_fingerprint=None, shape: Optional[DistillerShape] = None,
                   taps: Union[str, TapSpec, Mapping, None] = None):
    """Raise ``WarmStartMismatch`` for the first field that differs; None arguments are not checked."""
    if model_dir_or_fingerprint is not None:
        want = _fingerprint(model_dir_or_fingerprint)
        have = meta["model"]
        for field in ("model_id", "config_sha256", "weights_sha256"):
            if field == "weights_sha256" and (field not in have or field not in want):
                continue   # a file from before weights were fingerprinted: config and name must do
            if have.get(field) != want.get(field):
                raise WarmStartMismatch(path, f"model.{field}", have.get(field), want.get(field),
                                        f"it was exported for model '{have.get('model_id')}' (config "
                                        f"{have.get('config_sha256')}); export one for the served model")
    if shape is not None:
        have = meta["shape"]
        want = shape.to_dict()
        for field in _SHAPE_FIELDS:
            if have.get(field) != want[field]:
                raise WarmStartMismatch(path, f"shape.{field}", have.get(field), want[field],
                                        f"it holds a '{meta.get('preset')}' distiller {have}; use the same "
                                        f"--esamp-distiller preset/overrides or export another preset")
    if taps is not None:
        want = _taps(taps)
        have = meta["taps"]
        for field in ("source", "target"):
            if have.get(field) != getattr(want, field):
                raise WarmStartMismatch(path, f"taps.{field}", have.get(field), getattr(want, field),
                                        f"it was recorded at taps '{have.get('preset')}'; use the same "
                                        f"--esamp-taps or record/export for these taps")


def load_warm_start(path, shape: Optional[DistillerShape] = None, *, model_dir_or_fingerprint=None,
                    taps: Union[str, TapSpec, Mapping, None] = None) -> Dict[str, torch.Tensor]:
    """-> fp32 state dict in the ``Distiller.export_state()`` layout, after checking the file's identity.

    ``model_dir_or_fingerprint``: the served model's HF directory or its ``model_fingerprint`` dict.
    ``shape``: the served ``DistillerShape``. ``taps``: preset name, ``TapSpec`` or {"source","target"}.
    Servers must pass all three (``load_for_server`` enforces it); an argument left None is not checked.
    """
    from safetensors.torch import load_file

    meta = read_warm_start_metadata(path)
    check_metadata(meta, path, model_dir_or_fingerprint=model_dir_or_fingerprint, shape=shape, taps=taps)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    check_state_matches(state, shape if shape is not None else DistillerShape(**meta["shape"]))
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"warm start {path}: non-finite values in {bad}")
    return state


def load_for_server(path, *, model_dir, shape: DistillerShape, taps) -> Dict[str, torch.Tensor]:
    """The server's entry point: every identity check is mandatory."""
    if model_dir is None or shape is None or taps is None:
        raise ValueError("load_for_server needs model_dir, shape and taps")
    return load_warm_start(path, shape, model_dir_or_fingerprint=model_dir, taps=taps)
