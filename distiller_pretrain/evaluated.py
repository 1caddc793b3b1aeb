"""What the evaluation commands (``eval_logits``, ``online_trace``) start from: a recording's manifest and the
warm start to score, checked against each other (the model it was made for, the taps), with a CLI error naming the
flag when they do not fit."""
from __future__ import annotations

from typing import Optional, Tuple


def recording_and_warm_start(parser, recording: str, warm_start: str,
                             model: Optional[str] = None) -> Tuple[dict, object, dict]:
    """(manifest, DistillerShape, warm-start state); ``model``: the weights it must fit (default: the recording's
    own, by fingerprint)."""
    from sglang_esamp.algo.distiller.distiller import DistillerShape
    from sglang_esamp.algo.distiller.warm_start import load_warm_start, read_warm_start_metadata

    from .shards import read_manifest

    manifest = read_manifest(recording)
    if manifest is None:
        parser.error(f"--recording {recording}: no manifest.json")
    shape = DistillerShape(**read_warm_start_metadata(warm_start)["shape"])
    state = load_warm_start(warm_start, shape, model_dir_or_fingerprint=model or manifest["model"],
                            taps=manifest["taps"])
    return manifest, shape, state
