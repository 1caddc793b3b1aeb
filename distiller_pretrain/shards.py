"""Arrow shards of recorded ``(h_src, h_tgt)`` pairs plus their JSON manifest.

Layout of a recording directory:
  manifest.json          model fingerprint, taps, H, storage dtype, rows, corpus identity, shard list, progress
  shard-00000.arrow ...  HF-datasets Arrow files, columns
                         src, tgt: fixed-size lists of H values (float16, or bfloat16 bits stored as int16 —
                                   Arrow has no bfloat16 type);
                         doc, pos, token: int32 (corpus row, token position, input token id) for splits/checks.
Shards are written one record batch per model forward (``ArrowWriter.write_table``, zero-copy from numpy) into a
temporary file that is renamed when the shard is complete, so a killed recording leaves only whole shards behind,
and the manifest (rewritten atomically after each shard) says how far the corpus was consumed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
STORAGE_DTYPES = ("float16", "bfloat16")


def _features(hidden: int, storage: str):
    from datasets import Features, List, Value

    elem = Value("float16") if storage == "float16" else Value("int16")
    return Features({"src": List(elem, length=hidden), "tgt": List(elem, length=hidden), "doc": Value("int32"),
                     "pos": Value("int32"), "token": Value("int32")})


def to_storage(t: torch.Tensor, storage: str) -> np.ndarray:
    """[R, H] tensor -> numpy array in the storage dtype (bf16 as its raw 16-bit pattern)."""
    if storage == "float16":
        x = t.to(torch.float16)
        if not torch.isfinite(x).all():
            raise OverflowError("activations overflow float16; record with --dtype bfloat16")
        return x.contiguous().numpy()
    return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy()


def from_storage(t: torch.Tensor, storage: str) -> torch.Tensor:
    return t if storage == "float16" else t.view(torch.bfloat16)


class ShardWriter:
    """Appends batches to the current shard; ``close_shard`` finalizes and names it."""

    def __init__(self, directory: Path, hidden: int, storage: str, index: int):
        if storage not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype {storage!r}; allowed {STORAGE_DTYPES}")
        self.dir, self.hidden, self.storage, self.index = Path(directory), hidden, storage, index
        self._writer = None
        self.rows = 0

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}.arrow"

    def write(self, src: torch.Tensor, tgt: torch.Tensor, doc: np.ndarray, pos: np.ndarray, token: np.ndarray):
        import pyarrow as pa
        from datasets.arrow_writer import ArrowWriter

        if self._writer is None:
            self._writer = ArrowWriter(features=_features(self.hidden, self.storage),
                                       path=str(self.dir / (self.name + ".tmp")))
        n, h = src.shape

        def fixed(a: np.ndarray):
            return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), h)

        table = pa.table({"src": fixed(to_storage(src, self.storage)), "tgt": fixed(to_storage(tgt, self.storage)),
                          "doc": pa.array(doc.astype(np.int32)), "pos": pa.array(pos.astype(np.int32)),
                          "token": pa.array(token.astype(np.int32))})
        self._writer.write_table(table)
        self.rows += n

    def close_shard(self) -> Optional[dict]:
        """Finalize the shard; returns its manifest entry (None if nothing was written)."""
        if self._writer is None:
            return None
        self._writer.finalize()
        os.replace(self.dir / (self.name + ".tmp"), self.dir / self.name)
        entry = {"file": self.name, "rows": self.rows}
        self._writer, self.rows = None, 0
        self.index += 1
        return entry


def read_manifest(directory) -> Optional[dict]:
    p = Path(directory) / MANIFEST
    return json.loads(p.read_text()) if p.exists() else None


def write_manifest(directory, manifest: dict):
    p = Path(directory) / MANIFEST
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, p)


def open_recording(directory):
    """The recording as one memory-mapped HF ``Dataset`` (no copy) plus its manifest."""
    from datasets import Dataset, concatenate_datasets

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"{directory}: no {MANIFEST}; not a recording directory")
    if not manifest["shards"]:
        raise ValueError(f"{directory}: the recording has no rows")
    parts = [Dataset.from_file(str(directory / s["file"])) for s in manifest["shards"]]
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), manifest


def load_pairs(directory, max_rows: Optional[int] = None, chunk: int = 32768) -> Dict[str, torch.Tensor]:
    """Read rows into RAM: src/tgt as float16 or bfloat16 tensors [N, H], doc/pos/token as int64 [N].

    Contiguous slices through the torch formatter run at ~1 GB/s; in-RAM batches then cost nothing to gather.
    """
    ds, manifest = open_recording(directory)
    storage = manifest["storage_dtype"]
    n = len(ds) if max_rows is None else min(max_rows, len(ds))
    vec = ds.with_format("torch", columns=["src", "tgt"],
                         dtype=torch.float16 if storage == "float16" else torch.int16)
    ids = ds.with_format("numpy", columns=["doc", "pos", "token"])
    out: Dict[str, List[torch.Tensor]] = {k: [] for k in ("src", "tgt", "doc", "pos", "token")}
    for i in range(0, n, chunk):
        part = vec[i:min(n, i + chunk)]
        out["src"].append(from_storage(part["src"], storage))
        out["tgt"].append(from_storage(part["tgt"], storage))
        meta = ids[i:min(n, i + chunk)]
        for k in ("doc", "pos", "token"):
            out[k].append(torch.from_numpy(np.asarray(meta[k], dtype=np.int64)))
    return {k: torch.cat(v) for k, v in out.items()}
