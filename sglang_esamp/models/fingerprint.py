"""A model's identity for warm-start files: a name, a hash of its architecture config and a hash of its weights.

The config hash covers config.json with volatile keys removed (dtype, transformers version, architecture-neutral
generation settings), so the same model converted twice, or loaded by SGLang vs transformers, matches. The weights
hash tells a fine-tuned checkpoint of the same architecture apart (a warm start trained for other weights): for a
model we converted from a checksum-verified GGUF it is that checksum (recorded in ``esamp_model.json``; converting
twice gives the same weights), otherwise the sha256 of the weight files' bytes (``*.safetensors``, ``*.bin``,
sorted by name).
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
    return {"model_id": name, "config_sha256": digest, "weights_sha256": weights_sha256(d),
            "hidden_size": cfg.get("hidden_size"), "num_hidden_layers": cfg.get("num_hidden_layers"),
            "architectures": cfg.get("architectures")}


def weights_sha256(model_dir) -> str:
    d = Path(model_dir)
    marker = d / "esamp_model.json"
    if marker.exists():
        source = json.loads(marker.read_text()).get("gguf_sha256")
        if source:
            return "gguf:" + source[:16]
    h = hashlib.sha256()
    files = sorted(p for p in d.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    for path in files:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:16] if files else "none"
