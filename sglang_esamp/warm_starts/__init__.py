"""Warm-start distillers shipped with the package (made by distiller_pretrain from the shipped corpus).

``--esamp-warm-start shipped`` picks the file made for the served model, distiller preset and taps; it is an error
when none is shipped for that combination. Today, both with the paper preset and paper taps, 4000 DeepSpeed steps
on the shipped corpus (docs/warm_start.md has the tables and the measured effect on exploration):
  * SmolLM2-135M-Instruct: 94k recorded rows; held-out loss 0.48x the identity baseline, 0.64x the mean, 0.91x
    affine (``python -m distiller_pretrain.pipeline --config configs/pretrain/smollm2.yaml``);
  * Qwen2.5-Coder-0.5B-Instruct (8.3 MB): 89k rows; held-out loss 0.48x identity, 0.59x mean, 0.86x affine
    (``... --config configs/pretrain/qwen2.5-coder-0.5b.yaml``).
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
