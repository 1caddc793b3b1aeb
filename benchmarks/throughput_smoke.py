"""ESamp-off vs ESamp-on decode throughput on the same engine, alternating in one run (DESIGN §5, small scale).

    python benchmarks/throughput_smoke.py [--model smollm2-135m-instruct] [--prompts 4] [--n 4] [--tokens 64]
        [--min-p 0.05] [--rounds 3] [--threads 1] [--out benchmarks/results/throughput_smoke]

Each round runs the same batch twice (off, then on; the order alternates between rounds), with ignore_eos so both
arms generate the same number of tokens. Reports tok/s per arm, the on/off ratio per round and overall, and the
ESamp counters of the run (a fast "on" arm with zero updates would be a bug). Saves JSON and a PNG plot.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

PROMPTS = ["Write a short poem about the sea.", "Give me three ideas for a birthday party.",
           "Describe a city on Mars.", "Tell a one-paragraph story about a lost key.",
           "Explain why the sky is blue.", "Suggest a name for a coffee shop.", "Invent a new board game.",
           "Write a limerick about a cat."]
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/throughput_smoke")
    a = p.parse_args()
    if not 1 <= a.prompts <= len(PROMPTS):
        p.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch

    torch.set_num_threads(a.threads)
    import sglang_esamp

    llm = sglang_esamp.Engine(model_path=a.model, esamp={"bank_slots": max(4, a.prompts)}, log_level="error",
                              disable_radix_cache=True)
    prompts = [CHAT.format(x) for x in PROMPTS[:a.prompts]]
    base = {"temperature": 1.0, "min_p": a.min_p, "max_new_tokens": a.tokens, "n": a.n, "ignore_eos": True}
    arms = {"off": dict(base), "on": dict(base, esamp={"beta": a.beta})}
    llm.generate(prompts, dict(base, max_new_tokens=4))  # warm-up
    rows = []
    try:
        for r in range(a.rounds):
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            rec = {"round": r}
            for arm in order:
                t0 = time.perf_counter()
                outs = llm.generate(prompts, arms[arm])
                dt = time.perf_counter() - t0
                toks = sum(o["meta_info"]["completion_tokens"] for o in outs)
                rec[arm] = {"seconds": dt, "tokens": toks, "tok_s": toks / dt}
            rec["ratio_on_off"] = rec["on"]["tok_s"] / rec["off"]["tok_s"]
            rows.append(rec)
            print(f"round {r}: off {rec['off']['tok_s']:.1f} tok/s, on {rec['on']['tok_s']:.1f} tok/s, "
                  f"ratio {rec['ratio_on_off']:.3f}", flush=True)
        counters = llm.get_server_info()["internal_states"][0]["esamp"]["counters"]
    finally:
        llm.shutdown()
    tot = {arm: sum(x[arm]["tokens"] for x in rows) / sum(x[arm]["seconds"] for x in rows) for arm in ("off", "on")}
    result = {"settings": vars(a), "rounds": rows, "tok_s": tot, "ratio_on_off": tot["on"] / tot["off"],
              "esamp_counters": counters}
    if counters["updates"] == 0 or counters["candidate_rows_reweighted"] == 0:
        raise SystemExit(f"ESamp did no work in the 'on' arm: {counters}")
    print(f"overall: off {tot['off']:.1f} tok/s, on {tot['on']:.1f} tok/s, ratio {result['ratio_on_off']:.3f}; "
          f"updates {counters['updates']}, rows reweighted {counters['candidate_rows_reweighted']}, "
          f"candidates/row {counters['candidates_per_row_mean']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    xs = range(len(rows))
    ax.plot(xs, [x["off"]["tok_s"] for x in rows], "o-", label="ESamp off")
    ax.plot(xs, [x["on"]["tok_s"] for x in rows], "s-", label=f"ESamp on (beta {a.beta})")
    ax.set_xlabel("round")
    ax.set_ylabel("decode tok/s")
    ax.set_title(f"{a.model}: {a.prompts} prompts x n={a.n}, {a.tokens} tok; ratio {result['ratio_on_off']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"saved {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
