"""Build the shipped self-generated corpus: the model's own sampled answers to the committed prompts.

    python -m distiller_pretrain.make_corpus --model smollm2-135m-instruct \
        --prompts distiller_pretrain/corpus/prompts.txt --samples 3 --max-new-tokens 256 \
        --out distiller_pretrain/corpus/smollm2_generations.jsonl

Why self-generated: at serving time the distiller sees decode rows of the model's own samples, so the model's
own text under its chat template is the closest offline stand-in, and it is ours to ship (Apache-2.0 model,
CC0 prompts). Output rows: {"prompt", "response", "sample", "model", "seed"} (JSON lines, the format
`record` reads). Resumable: rows already in --out are kept and skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def read_prompts(path: str) -> list:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _done_keys(out: Path) -> set:
    if not out.exists():
        return set()
    keys = set()
    for ln in out.read_text(encoding="utf-8").splitlines():
        if ln.strip():
            r = json.loads(ln)
            keys.add((r["prompt"], r["sample"]))
    return keys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="offline model name or a local HF directory")
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=3, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    a = p.parse_args(argv)
    if a.samples < 1:
        p.error("--samples must be >= 1")

    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_esamp.models import resolve_model

    torch.set_num_threads(a.threads)
    model_dir = resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"  # generation continues from the right edge
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, a.dtype)).eval()
    name = json.loads((Path(model_dir) / "esamp_model.json").read_text())["name"] \
        if (Path(model_dir) / "esamp_model.json").exists() else Path(model_dir).name

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(out)
    todo = [(pr, s) for s in range(a.samples) for pr in read_prompts(a.prompts) if (pr, s) not in done]
    bar = tqdm(total=len(todo), desc="generate", unit="answer")
    t0, n_tok = time.time(), 0
    with open(out, "a", encoding="utf-8") as f:
        for i in range(0, len(todo), a.batch_size):
            batch = todo[i:i + a.batch_size]
            # one seed per batch position keeps a resumed run reproducible batch by batch
            torch.manual_seed(a.seed * 1_000_003 + len(done) + i)
            texts = [tok.apply_chat_template([{"role": "user", "content": pr}], tokenize=False,
                                             add_generation_prompt=True) for pr, _ in batch]
            enc = tok(texts, return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=a.max_new_tokens, do_sample=True,
                                     temperature=a.temperature, top_p=a.top_p, top_k=0,
                                     pad_token_id=tok.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            for (pr, s), ids in zip(batch, new):
                text = tok.decode(ids, skip_special_tokens=True).strip()
                n_tok += int((ids != tok.pad_token_id).sum())
                f.write(json.dumps({"prompt": pr, "response": text, "sample": s, "model": name,
                                    "seed": a.seed}, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{n_tok / (time.time() - t0):.0f}")
    bar.close()
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)", file=sys.stderr)


if __name__ == "__main__":
    main()
