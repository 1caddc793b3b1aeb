"""Rewrite a results folder from schema v1 (every sample inlined in results.json) to v2 (no samples).

    python -m sglang_esamp.bench.quality.migrate benchmarks/results/quality/*/

v1's ``results.json`` (or ``results.json.gz``) carried every sample although ``samples/<task>/<method>.jsonl.gz``
already held them. A v2 document is the v1 document without ``samples``, with ``sample_files`` naming those files,
so every figure, table and frontier gap is unchanged. Before it writes anything, the migration checks that each
inlined sample is in the sample files with the same text, score and NLL: nothing the v1 file held is lost. The
folder's ``results.md`` and plots are left as they are; ``--report-only`` rebuilds all of them from the samples.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

from .cache import read_samples
from .report import SCHEMA, write_json

V1 = "sglang-esamp/bench_quality/v1"
CHECKED = ("text", "score", "completion_tokens", "finish_reason", "logprob_sum", "scored_tokens")


def read_results(folder: Path) -> dict:
    """``results.json``, else ``results.json.gz`` (one v1 folder was committed compressed)."""
    plain, packed = folder / "results.json", folder / "results.json.gz"
    if plain.exists():
        return json.loads(plain.read_text())
    with gzip.open(packed, "rt", encoding="utf-8") as f:
        return json.load(f)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return a == b


def missing_samples(doc: dict, folder: Path) -> List[str]:
    """The keys of inlined samples that the folder's sample files lack or hold differently (empty = all kept)."""
    files = {(s["task"], s["method"], s["problem"], s["index"], s["settings_hash"]): s for s in read_samples(folder)}
    bad = []
    for s in doc.get("samples") or []:
        key = (s["task"], s["method"], s["problem"], s["index"], s["settings_hash"])
        have = files.get(key)
        if have is None or not all(_same(s.get(k), have.get(k)) for k in CHECKED):
            bad.append("|".join(map(str, key)))
    return bad


def to_v2(doc: dict) -> dict:
    """The v2 form of a v1 document: the same keys in the same order, ``samples`` replaced by ``sample_files``."""
    if doc.get("schema") != V1:
        raise ValueError(f"not a v1 document: schema {doc.get('schema')!r}")
    out = {k: v for k, v in doc.items() if k != "samples"}
    out["schema"] = SCHEMA
    out["sample_files"] = {task: {m: f"samples/{task}/{m}.jsonl.gz" for m in t["methods"]}
                           for task, t in doc["tasks"].items()}
    return out


def migrate(folder: Path) -> Optional[str]:
    """Rewrite one folder in place; returns what it did, or raises if a sample would be lost."""
    doc = read_results(folder)
    if doc.get("schema") == SCHEMA:
        return None
    bad = missing_samples(doc, folder)
    if bad:
        raise RuntimeError(f"{folder}: {len(bad)} inlined sample(s) not in samples/ as they are in results.json "
                           f"(first: {bad[0]}); nothing rewritten")
    write_json(folder / "results.json", to_v2(doc))
    packed = folder / "results.json.gz"
    if packed.exists():
        packed.unlink()
    return f"{folder}: {len(doc.get('samples') or [])} inlined samples checked against samples/ and dropped"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sglang_esamp.bench.quality.migrate", description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args(argv)
    for folder in args.folders:
        print(migrate(folder) or f"{folder}: already {SCHEMA}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
