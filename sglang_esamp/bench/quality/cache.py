"""The raw-sample cache: one JSON line per sample in ``OUTPUT/samples/<task>/<method>.jsonl[.gz]``.

Key = (task, problem, method, sample index, settings hash). The settings hash covers everything that defines a
sample: the served model, the prompt version, the method's sampling parameters, ``--max-tokens`` and ``n`` (the n
samples of one request share one distiller, so a group of 4 is not the first half of a group of 8). A run skips
every (problem, method) whose n samples are all cached, so a long run can be split into several runs (by
``--tasks``, ``--methods``, ``--limit``) or across machines, and merged by copying the files together.
New samples are appended to ``.jsonl`` as they finish (a killed run loses at most the requests in flight);
``pack`` folds them into ``.jsonl.gz`` (deterministic gzip, later lines win) at the end of every run, which is the
form to commit.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional


SAMPLE_FIELDS = ("task", "problem", "method", "index", "settings_hash", "text", "score", "completion_tokens",
                 "finish_reason", "esamp", "logprob_sum", "scored_tokens", "uncertain_positions", "gap_positions",
                 "request_latency_s")


def sample_view(rec: dict) -> dict:
    """A sample as results.json v1 inlined it: its fields above and ``nll`` (mean NLL per completion token)."""
    out = {k: rec.get(k) for k in SAMPLE_FIELDS}
    n = rec.get("scored_tokens") or 0
    out["nll"] = -rec["logprob_sum"] / n if n and rec.get("logprob_sum") is not None else None
    return out


def read_samples(output: Path) -> List[dict]:
    """Every sample of an OUTPUT folder (``samples/<task>/<method>.jsonl[.gz]``, later lines win), as
    ``sample_view``s sorted by task, method, problem and index: what results.json v1 carried under ``samples``."""
    cache = SampleCache(output)
    for path in sorted(cache.root.glob("*/*.jsonl*")):
        cache.load(path.parent.name, path.name.split(".jsonl")[0])
    return [sample_view(r) for r in sorted(cache.records.values(),
                                           key=lambda r: (r["task"], r["method"], r["problem"], r["index"]))]


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def sample_key(task: str, problem: str, method: str, index: int, shash: str) -> str:
    return f"{task}|{problem}|{method}|{index}|{shash}"


def _read_lines(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:   # a line cut by a killed run
                    continue
    except (EOFError, gzip.BadGzipFile):
        return


class SampleCache:
    def __init__(self, root: Path):
        self.root = Path(root) / "samples"
        self.records: Dict[str, dict] = {}
        self._loaded: set = set()
        self._lock = threading.RLock()     # --workers: one runner thread per server shares the cache

    def _file(self, task: str, method: str, suffix: str) -> Path:
        return self.root / task / (method + suffix)      # method names contain dots: no with_suffix here

    def load(self, task: str, method: str):
        with self._lock:
            if (task, method) in self._loaded:
                return
            self._loaded.add((task, method))
            for path in (self._file(task, method, ".jsonl.gz"), self._file(task, method, ".jsonl")):
                if path.exists():
                    for rec in _read_lines(path):
                        if "key" in rec:
                            self.records[rec["key"]] = rec

    def get(self, key: str) -> Optional[dict]:
        return self.records.get(key)

    def group(self, task: str, problem: str, method: str, n: int, shash: str) -> Optional[List[dict]]:
        """The n cached samples of one request, or None if any is missing."""
        self.load(task, method)
        recs = [self.records.get(sample_key(task, problem, method, i, shash)) for i in range(n)]
        return None if any(r is None for r in recs) else recs

    def add(self, records: Iterable[dict]):
        by_file: Dict[Path, List[dict]] = {}
        with self._lock:
            for rec in records:
                self.records[rec["key"]] = rec
                path = self._file(rec["task"], rec["method"], ".jsonl")
                by_file.setdefault(path, []).append(rec)
            for path, recs in by_file.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as f:
                    for rec in recs:
                        f.write(json.dumps(rec, sort_keys=True) + "\n")
                    f.flush()

    def pack(self) -> List[Path]:
        """Fold every ``.jsonl`` into its ``.jsonl.gz``; returns the packed files."""
        packed = []
        if not self.root.exists():
            return packed
        for plain in sorted(self.root.glob("*/*.jsonl")):
            gz = plain.parent / (plain.name + ".gz")
            merged: Dict[str, dict] = {}
            for path in (gz, plain):
                if path.exists():
                    for rec in _read_lines(path):
                        if "key" in rec:
                            merged[rec["key"]] = rec
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
                for key in sorted(merged):
                    f.write((json.dumps(merged[key], sort_keys=True) + "\n").encode("utf-8"))
            tmp = gz.parent / (gz.name + ".tmp")
            tmp.write_bytes(buf.getvalue())
            tmp.replace(gz)
            plain.unlink()
            packed.append(gz)
        return packed
