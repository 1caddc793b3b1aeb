"""Plain decode speed of the served model through our Engine (ESamp off): tok/s at batch 1 and batch 16.

    python benchmarks/engine_speed.py [--model smollm2-135m-instruct] [--tokens 64] [--threads 1]
Greedy, ignore_eos, no radix-cache reuse; best of 3 runs per batch size. Prints a table and saves JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/engine_speed.json")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import sglang_esamp

    t0 = time.perf_counter()
    llm = sglang_esamp.Engine(model_path=a.model, log_level="error", disable_radix_cache=True)
    start_s = time.perf_counter() - t0
    sp = {"temperature": 0, "max_new_tokens": a.tokens, "ignore_eos": True}
    res = {"model": a.model, "threads": a.threads, "engine_start_s": start_s}
    try:
        llm.generate("warm up", dict(sp, max_new_tokens=4))
        for bs in (1, 16):
            best = 0.0
            for _ in range(3):
                t = time.perf_counter()
                outs = llm.generate([f"Count to ten, take {i}:" for i in range(bs)], sp)
                best = max(best, sum(o["meta_info"]["completion_tokens"] for o in outs) / (time.perf_counter() - t))
            res[f"tok_s_bs{bs}"] = best
            print(f"{a.model}: batch {bs:>2}: {best:.1f} tok/s (best of 3, {a.tokens} tokens, {a.threads} thread)")
    finally:
        llm.shutdown()
    print(f"engine start {start_s:.1f} s")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
