"""Corpus input for recording: a HF ``datasets`` corpus -> token sequences and the positions to record.

Accepted ``--corpus`` values: a directory written by ``Dataset.save_to_disk`` (or a DatasetDict: the 'train'
split), a directory of .jsonl/.json/.txt files, or a comma-separated list of such files. Nothing is downloaded.

Row kinds and the rows recorded (decode rows are what the server trains on, DESIGN §1):
  {"prompt", "response"} or {"messages": [..., {"role": "assistant", ...}]}: the prompt is rendered with the
      model's chat template (generation prompt on) and tokenized separately from the response, exactly as a
      server sees it; recorded positions are the response tokens (each is a decode step's input token).
      ``include_prompt`` adds the prompt positions too (except position 0).
  {"text"} (or ``text_field``): plain text; every position except 0 (position 0 is an attention-sink outlier
      that decoding never feeds).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".txt": "text"}


@dataclass
class Sequence:
    doc: int            # index of the corpus row
    ids: List[int]      # full token sequence (already truncated to max_len)
    start: int          # first recorded position
    end: int            # one past the last recorded position


def _files(spec: str) -> List[Path]:
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in _FILE_BUILDERS)
        if not files:
            raise ValueError(f"--corpus {spec}: directory has no dataset and no .jsonl/.json/.txt files")
        return files
    files = [Path(s) for s in spec.split(",") if s]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"--corpus: no such file or directory: {f}")
        if f.suffix not in _FILE_BUILDERS:
            raise ValueError(f"--corpus {f}: unsupported extension; use .jsonl, .json, .txt or a saved dataset")
    return files


def _is_saved_dataset(p: Path) -> bool:
    return p.is_dir() and any((p / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json"))


def load_corpus(spec: str, cache_dir: Optional[str] = None):
    """-> (datasets.Dataset, identity dict for the manifest)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only, never the hub
    import datasets

    p = Path(spec)
    if _is_saved_dataset(p):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise ValueError(f"--corpus {spec}: DatasetDict without a 'train' split ({list(ds)})")
            ds = ds["train"]
        return ds, {"kind": "saved_dataset", "path": str(p.resolve()), "fingerprint": ds._fingerprint,
                    "rows": len(ds)}
    files = _files(spec)
    kinds = {_FILE_BUILDERS[f.suffix] for f in files}
    if len(kinds) != 1:
        raise ValueError(f"--corpus: mixes text and json files ({[str(f) for f in files]}); use one kind")
    ds = datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train", cache_dir=cache_dir)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return ds, {"kind": "files", "files": [str(f.resolve()) for f in files], "sha256": digest.hexdigest()[:16],
                "rows": len(ds)}


def iter_sequences(ds, tokenizer, *, start_doc: int = 0, max_len: int = 1024, include_prompt: bool = False,
                   text_field: str = "text") -> Iterator[Sequence]:
    """Token sequences for corpus rows ``start_doc...`` (rows with nothing to record are skipped)."""
    cols = set(ds.column_names)
    if {"prompt", "response"} <= cols:
        kind = "prompt_response"
    elif "messages" in cols:
        kind = "messages"
    elif text_field in cols:
        kind = "text"
    else:
        raise ValueError(f"--corpus: rows need 'prompt'+'response', 'messages' or '{text_field}' columns "
                         f"(set --text-field); found {sorted(cols)}")
    for doc in range(start_doc, len(ds)):
        row = ds[doc]
        if kind == "text":
            ids = tokenizer(row[text_field])["input_ids"][:max_len]
            seq = Sequence(doc, ids, 1, len(ids))
        else:
            if kind == "prompt_response":
                chat = [{"role": "user", "content": row["prompt"]}]
                reply = row["response"]
            else:
                msgs = row["messages"]
                if not msgs or msgs[-1]["role"] != "assistant":
                    raise ValueError(f"--corpus row {doc}: 'messages' must end with an assistant message")
                chat, reply = msgs[:-1], msgs[-1]["content"]
            prompt_ids = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
            if hasattr(prompt_ids, "keys"):  # transformers 5 may return a BatchEncoding
                prompt_ids = prompt_ids["input_ids"]
            reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
            ids = (list(prompt_ids) + list(reply_ids))[:max_len]
            seq = Sequence(doc, ids, 1 if include_prompt else len(prompt_ids), len(ids))
        if seq.end > seq.start:
            yield seq
