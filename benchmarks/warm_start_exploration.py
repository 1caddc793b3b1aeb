"""Does the offline warm start change exploration? Reference decoder on SmolLM2, paired arms (DESIGN §4/§5).

    python benchmarks/warm_start_exploration.py --warm-start runs/.../export/X.safetensors [--seeds 32] [--n 8]
        [--tokens 32] [--out benchmarks/results/warm_start_exploration]

Arms, each on the same groups with the same seeds (common random numbers, so differences are paired):
  plain       T=1 sampling with the prompt's filter, no ESamp
  sharpen     (1+beta)*l/T on the same candidates, no distiller term (the sharpening control)
  esamp       ESamp, beta 0.25, random-init distiller (online only)
  esamp_warm  ESamp, beta 0.25, distiller initialised from the warm-start file
Diversity = distinct-2 over each group's n samples (tokens before EOS). Prints paired differences (mean ± SE,
wins) and saves JSON + a bar plot.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SETTINGS = {"min-p 0.1": dict(min_p=0.1), "no filter": dict()}
PROMPTS = ["Write a one-sentence story.", "Invent a name for a new planet and describe it in one sentence."]


def distinct_n(rows, eos, n=2):
    grams, total = set(), 0
    for r in rows:
        r = r[:r.index(eos)] if eos in r else r
        for i in range(len(r) - n + 1):
            grams.add(tuple(r[i:i + n]))
            total += 1
    return len(grams) / max(1, total)


def paired(a, b):
    d = [x - y for x, y in zip(a, b)]
    return {"mean": statistics.mean(d), "se": statistics.stdev(d) / len(d) ** 0.5, "wins": sum(x > 0 for x in d),
            "groups": len(d)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm-start", required=True)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--out", default="benchmarks/results/warm_start_exploration")
    a = p.parse_args()
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_esamp.algo.config import ESampConfig
    from sglang_esamp.algo.reference.decoder import ReferenceDecoder, SamplingSettings
    from sglang_esamp.algo.distiller.warm_start import load_for_server
    from sglang_esamp.models import resolve_model

    torch.set_num_threads(1)
    path = resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = ESampConfig(bank_slots=a.seeds)
    shape = cfg.distiller_shape(model.config.hidden_size)
    warm = load_for_server(a.warm_start, model_dir=path, shape=shape, taps=cfg.taps)
    decoders = {"plain": (ReferenceDecoder(model, cfg), dict(esamp=False)),
                "sharpen": (ReferenceDecoder(model, cfg), dict(sharpen_only=True)),
                "esamp": (ReferenceDecoder(model, cfg), dict(esamp=True)),
                "esamp_warm": (ReferenceDecoder(model, cfg, warm_start_state=warm), dict(esamp=True))}
    seeds = list(range(1000, 1000 + a.seeds))
    results = {}
    jobs = [(pr, sn) for pr in PROMPTS for sn in SETTINGS]
    for prompt, sname in tqdm(jobs, desc="settings"):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok.encode(text, add_special_tokens=False)
        sampling = SamplingSettings(temperature=1.0, **SETTINGS[sname])
        per_arm = {}
        for arm, (dec, kw) in decoders.items():
            res = dec.generate_groups(ids, a.n, a.tokens, seeds=seeds, beta=a.beta, sampling=sampling,
                                      eos_token_id=eos, stop_at_eos=True, **kw)
            per_arm[arm] = [distinct_n(r.tokens.tolist(), eos) for r in res]
        key = f"{prompt} | {sname}"
        results[key] = {"distinct2": {k: statistics.mean(v) for k, v in per_arm.items()},
                        "esamp_warm - plain": paired(per_arm["esamp_warm"], per_arm["plain"]),
                        "esamp - plain": paired(per_arm["esamp"], per_arm["plain"]),
                        "esamp_warm - esamp": paired(per_arm["esamp_warm"], per_arm["esamp"]),
                        "esamp_warm - sharpen": paired(per_arm["esamp_warm"], per_arm["sharpen"])}
        r = results[key]
        print(f"\n{key}: " + ", ".join(f"{k} {v:.4f}" for k, v in r["distinct2"].items()))
        for k in ("esamp - plain", "esamp_warm - plain", "esamp_warm - esamp", "esamp_warm - sharpen"):
            print(f"  {k:<22} {r[k]['mean']:+.4f} ± {r[k]['se']:.4f}  wins {r[k]['wins']}/{r[k]['groups']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"settings": vars(a), "seeds": seeds, "results": results},
                                                   indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    arms = list(decoders)
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        ax.bar([i + j * width for i in range(len(results))], [r["distinct2"][arm] for r in results.values()],
               width, label=arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(results))])
    ax.set_xticklabels([k.replace(" | ", "\n")[:60] for k in results], fontsize=6)
    ax.set_ylabel("distinct-2 within group")
    ax.set_ylim(min(min(r["distinct2"].values()) for r in results.values()) - 0.05, 1.0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"saved {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
