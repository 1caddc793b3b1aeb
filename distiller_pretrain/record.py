"""Record ``(h_src, h_tgt)`` pairs at the server's taps into Arrow shards with a manifest.

    python -m distiller_pretrain.record --model smollm2-135m-instruct \
        --corpus distiller_pretrain/corpus/smollm2_generations.jsonl --out runs/smollm2/recording \
        --taps paper --max-rows 150000 --dtype float16
    python -m distiller_pretrain.record --config configs/pretrain/smollm2.yaml [--max-rows N ...]

The model runs in HF transformers with ``sglang_esamp.algo.reference.hf_taps`` (the same tap semantics as the SGLang
runtime). Rows are decode rows (see ``corpus.py``). Rerunning with the same arguments resumes from the
manifest; a larger ``--max-rows`` extends a finished recording. A rerun with a different model, taps, dtype or
corpus is refused (pick another ``--out``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List

import numpy as np

from .cli_config import parse_args
from .corpus import Sequence, iter_sequences, load_corpus
from .shards import FORMAT_VERSION, STORAGE_DTYPES, ShardWriter, read_manifest, write_manifest

# manifest keys that must match for a resume, and the flag that sets each
_RESUME_KEYS = {"model": "--model", "taps": "--taps", "storage_dtype": "--dtype", "model_dtype": "--model-dtype",
                "corpus": "--corpus", "max_len": "--max-len", "include_prompt": "--include-prompt",
                "text_field": "--text-field"}


def _comparable(key, value):
    # a corpus is the same corpus when its content hash matches, wherever the files now live
    if key == "corpus" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("files", "path")}
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distiller_pretrain.record", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="offline model name (sglang_esamp.models) or a local HF directory")
    p.add_argument("--corpus", help="saved HF dataset dir, dir of .jsonl/.json/.txt, or comma-separated files")
    p.add_argument("--out", help="recording directory (default: RUN_DIR/recording)")
    p.add_argument("--run-dir", help="run directory used for default paths")
    p.add_argument("--taps", default="paper", help="tap preset: paper | tllm")
    p.add_argument("--max-rows", type=int, default=None, help="stop after this many rows (default: whole corpus)")
    p.add_argument("--dtype", default="float16", choices=STORAGE_DTYPES, help="storage dtype of the vectors")
    p.add_argument("--model-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="dtype the model runs in (bfloat16 = what the CPU server runs)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward")
    p.add_argument("--max-len", type=int, default=1024, help="truncate sequences to this many tokens")
    p.add_argument("--shard-rows", type=int, default=50_000, help="rows per Arrow shard (a resume unit)")
    p.add_argument("--include-prompt", action="store_true", help="also record prompt positions")
    p.add_argument("--text-field", default="text", help="column holding plain text rows")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--no-progress", action="store_true")
    return p


def load_hf_model(model_dir: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    return model, tok


def forward_batch(model, spec, seqs: List[Sequence], pad_id: int):
    """Right-padded forward through the taps -> per-row (src, tgt, doc, pos, token) of the recorded positions."""
    import torch

    from sglang_esamp.algo.reference.hf_taps import capture_taps

    t = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s.ids)] = torch.tensor(s.ids)
        mask[b, :len(s.ids)] = 1
    with torch.inference_mode(), capture_taps(model, spec) as cap:
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    src, tgt, doc, pos, tok = [], [], [], [], []
    for b, s in enumerate(seqs):
        src.append(cap["source"][b, s.start:s.end])
        tgt.append(cap["target"][b, s.start:s.end])
        doc.append(np.full(s.end - s.start, s.doc))
        pos.append(np.arange(s.start, s.end))
        tok.append(np.asarray(s.ids[s.start:s.end]))
    return torch.cat(src), torch.cat(tgt), np.concatenate(doc), np.concatenate(pos), np.concatenate(tok)


def _batches(seqs, size):
    batch = []
    for s in seqs:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def record(args) -> dict:
    """Run (or resume) a recording; returns the final manifest."""
    import torch
    from tqdm import tqdm

    from sglang_esamp.algo.reference.tap_spec import tap_spec
    from sglang_esamp.models import model_fingerprint, resolve_model

    torch.set_num_threads(args.threads)
    try:
        spec = tap_spec(args.taps)
    except ValueError as e:
        raise SystemExit(f"--taps: {e}") from None
    if args.max_rows is not None and args.max_rows <= 0:
        raise SystemExit("--max-rows must be positive")
    model_dir = resolve_model(args.model)
    fp = model_fingerprint(model_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds, corpus_id = load_corpus(args.corpus, cache_dir=str(out / ".hf_cache"))

    want = {"model": fp, "taps": {"preset": args.taps, **spec.to_dict()}, "storage_dtype": args.dtype,
            "model_dtype": args.model_dtype, "corpus": corpus_id, "max_len": args.max_len,
            "include_prompt": bool(args.include_prompt), "text_field": args.text_field}
    manifest = read_manifest(out)
    if manifest is None:
        manifest = {"format_version": FORMAT_VERSION, **want, "hidden": fp["hidden_size"], "model_dir": str(Path(model_dir).resolve()),
                    "rows": 0, "docs_done": 0, "complete": False, "shards": [], "seconds": 0.0}
    else:
        for key, flag in _RESUME_KEYS.items():
            if _comparable(key, manifest.get(key)) != _comparable(key, want[key]):
                raise SystemExit(f"{flag}: {out} was recorded with {key}={manifest.get(key)!r}, this run asks for "
                                 f"{want[key]!r}; use another --out to start a new recording")
    for stray in out.glob("*.tmp"):  # a shard that was being written when a previous run died
        stray.unlink()
    limit = args.max_rows if args.max_rows is not None else float("inf")
    if manifest["complete"] or manifest["rows"] >= limit:
        print(f"[record] {out}: nothing to do ({manifest['rows']} rows, complete={manifest['complete']})",
              file=sys.stderr)
        return manifest

    model, tok = load_hf_model(model_dir, args.model_dtype)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    writer = ShardWriter(out, manifest["hidden"], args.dtype, index=len(manifest["shards"]))
    bar = tqdm(total=None if args.max_rows is None else args.max_rows, initial=manifest["rows"], unit="row",
               desc="record", disable=args.no_progress)
    t0, new_rows, pending_docs = time.time(), 0, manifest["docs_done"]

    def flush():
        entry = writer.close_shard()
        if entry:
            manifest["shards"].append(entry)
            manifest["rows"] += entry["rows"]
        manifest["docs_done"] = pending_docs
        manifest["seconds"] = round(manifest["seconds"] + time.time() - t_flush[0], 2)
        t_flush[0] = time.time()
        write_manifest(out, manifest)

    t_flush = [t0]
    exhausted = True
    seqs = iter_sequences(ds, tok, start_doc=manifest["docs_done"], max_len=args.max_len,
                          include_prompt=args.include_prompt, text_field=args.text_field)
    for batch in _batches(seqs, args.batch_size):
        src, tgt, doc, pos, token = forward_batch(model, spec, batch, pad_id)
        room = limit - (manifest["rows"] + writer.rows)
        if len(doc) > room:  # the tail of the last document is dropped; a resume starts at the next one
            room = int(room)
            src, tgt, doc, pos, token = src[:room], tgt[:room], doc[:room], pos[:room], token[:room]
        writer.write(src, tgt, doc, pos, token)
        pending_docs = batch[-1].doc + 1 if len(doc) == sum(s.end - s.start for s in batch) else int(doc[-1]) + 1
        new_rows += len(doc)
        bar.update(len(doc))
        bar.set_postfix(rows_s=f"{new_rows / (time.time() - t0):.0f}")
        if writer.rows >= args.shard_rows:
            flush()
        if manifest["rows"] + writer.rows >= limit:
            exhausted = pending_docs >= len(ds)
            break
    flush()
    manifest["complete"] = exhausted
    manifest["last_session_rows_per_s"] = round(new_rows / max(time.time() - t0, 1e-9), 1)
    write_manifest(out, manifest)
    bar.close()
    print(f"[record] {out}: {manifest['rows']} rows in {len(manifest['shards'])} shards "
          f"(+{new_rows} at {manifest['last_session_rows_per_s']} rows/s)", file=sys.stderr)
    return manifest


def main(argv=None):
    p = build_parser()
    args = parse_args(p, "record", argv, required=("model", "corpus"))
    if not args.out:
        if not args.run_dir:
            p.error("--out is required (or --run-dir / run_dir: in the --config YAML)")
        args.out = str(Path(args.run_dir) / "recording")
    record(args)


if __name__ == "__main__":
    main()
