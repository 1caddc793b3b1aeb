"""A model's identity for warm-start files: a name plus a hash of its architecture config.

The hash covers config.json with volatile keys removed (dtype, transformers version, architecture-neutral
generation settings), so the same model converted twice, or loaded by SGLang vs transformers, matches.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

_VOLATILE = {"torch_dtype", "dtype", "transformers_version", "_name_or_path", "use_cache", "output_hidden_states"}


def model_fingerprint(model_dir: str) -> dict:
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    stable = {k: v for k, v in cfg.items() if k not in _VOLATILE}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
    marker = d / "esamp_model.json"
    name = json.loads(marker.read_text())["name"] if marker.exists() else d.name
    return {"model_id": name, "config_sha256": digest, "hidden_size": cfg.get("hidden_size"),
            "num_hidden_layers": cfg.get("num_hidden_layers"), "architectures": cfg.get("architectures")}
