"""Warm-start distillers shipped with the package (made by distiller_pretrain from the shipped corpus).

``--esamp-warm-start shipped`` picks the file made for the served model, distiller preset and taps; it is an error
when none is shipped for that combination. Today: SmolLM2-135M-Instruct, paper preset, paper taps (94k recorded
rows, 4000 DeepSpeed steps; held-out loss 0.48x the identity baseline, 0.64x the mean; reproduce with
``python -m distiller_pretrain.pipeline --config configs/pretrain/smollm2.yaml``). Its measured effect on
exploration is in docs/warm_start.md.
"""
from __future__ import annotations

from pathlib import Path

SHIPPED = "shipped"
_DIR = Path(__file__).resolve().parent


def shipped_path(model_id: str, preset: str, taps: str) -> Path:
    path = _DIR / f"{model_id}.{preset}.{taps}.safetensors"
    if not path.exists():
        have = sorted(p.name for p in _DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"--esamp-warm-start shipped: no warm start is shipped for model '{model_id}', "
                                f"preset '{preset}', taps '{taps}' (shipped: {have}); make one with "
                                f"python -m distiller_pretrain.pipeline")
    return path
