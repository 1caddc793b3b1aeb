"""What TRL's importance-sampling correction sees with ESamp rollouts, before any training (docs/rl.md).

For the same prompts and seeds, one real ESamp server (float32, CPU) returns rollouts with ``esamp.logprobs`` =
``sampled`` (the distribution each token was drawn from) and ``llm`` (the LLM's own); the trainer's forward
(transformers, float32, the same weights) gives ``log pi_old``. TRL's ratio is ``exp(log pi_old - log sampling)``
per token (``token_*`` modes) or its product over the completion (``sequence_*`` modes), truncated or masked
outside ``[C_min, C_max]`` (TRL's defaults: ``sequence_mask``, C_max 3, no C_min). Reported per arm and
logprobs choice: quantiles of both ratios and the share TRL would clip or mask.

    python benchmarks/rl_is_ratios.py --output benchmarks/results/rl/is_ratios.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ARMS = {
    "plain": {"esamp": {"beta": 0.0}, "sampling": {}},
    "esamp b0.8 random": {"esamp": {"beta": 0.8, "init": "random"}, "sampling": {}},
    "plain, T .8 / top-p .95 / min-p .1": {"esamp": {"beta": 0.0},
                                           "sampling": {"temperature": 0.8, "top_p": 0.95, "min_p": 0.1}},
    "esamp b0.8 random, T .8 / top-p .95 / min-p .1": {"esamp": {"beta": 0.8, "init": "random"},
                                                       "sampling": {"temperature": 0.8, "top_p": 0.95, "min_p": 0.1}},
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--clip", type=float, default=3.0, help="TRL's vllm_importance_sampling_clip_max")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--output", default="benchmarks/results/rl/is_ratios.json")
    return ap.parse_args(argv)


def quantiles(values, qs=(0.01, 0.1, 0.5, 0.9, 0.99)):
    v = sorted(values)
    return {f"q{int(q * 100):02d}": v[min(len(v) - 1, int(q * len(v)))] for q in qs}


def old_logprobs(model, prompt_ids, completion_ids, temperature):
    """log pi_old of each completion token, as TRL computes it: log_softmax(logits / T) of the trainer's model."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion_ids)[:, None])[:, 0].tolist()


def ratio_stats(log_ratios, clip):
    """Token- and sequence-level ratios, and the share outside [1/clip, clip]."""
    tokens = [math.exp(x) for seq in log_ratios for x in seq]
    seqs = [math.exp(min(sum(seq), 50.0)) for seq in log_ratios]
    return {"token": {**quantiles(tokens), "mean": sum(tokens) / len(tokens),
                      "share_above_clip": sum(t > clip for t in tokens) / len(tokens),
                      "share_below_1/clip": sum(t < 1 / clip for t in tokens) / len(tokens)},
            "sequence": {**quantiles(seqs), "mean": sum(seqs) / len(seqs),
                         "share_above_clip": sum(s > clip for s in seqs) / len(seqs),
                         "share_below_1/clip": sum(s < 1 / clip for s in seqs) / len(seqs)},
            "tokens": len(tokens), "sequences": len(seqs)}


def measure(url, model, tokenizer, prompts, args):
    from sglang_esamp.rl.rollouts import Sampling, completion_fields, prompt_token_ids
    from sglang_esamp.rl.backends import ServerBackend
    from sglang_esamp.rl.tasks import sum_reward

    backend = ServerBackend(url)
    prompt_ids = [prompt_token_ids(tokenizer, p["prompt"]) for p in prompts]
    out = {}
    for arm, spec in ARMS.items():
        t = spec["sampling"].get("temperature", 1.0)
        got = {}
        for mode in ("sampled", "llm"):
            sampling = Sampling(max_new_tokens=args.max_tokens, esamp={**spec["esamp"], "logprobs": mode},
                                signals=False, **spec["sampling"])
            params = [sampling.request(args.n, args.seed * 1000 + g) for g in range(len(prompts))]
            got[mode] = completion_fields(backend.generate(prompt_ids, params), prompt_ids, args.n)
        same = [a == b for a, b in zip(got["sampled"]["completion_ids"], got["llm"]["completion_ids"])]
        old = [old_logprobs(model, p, c, t) for p, c in zip(got["sampled"]["prompt_ids"],
                                                            got["sampled"]["completion_ids"])]
        texts = tokenizer.batch_decode(got["sampled"]["completion_ids"], skip_special_tokens=True)
        answers = [p["answer"] for p in prompts for _ in range(args.n)]
        rewards = sum_reward(texts, answers)
        groups = [rewards[g * args.n:(g + 1) * args.n] for g in range(len(prompts))]
        row = {"reward": sum(rewards) / len(rewards),
               "mixed_groups": sum(0 < sum(g) < len(g) for g in groups) / len(groups),
               "same_tokens_both_requests": sum(same) / len(same)}
        for mode in ("sampled", "llm"):
            lr = [[o - s for o, s in zip(olds, lps)]
                  for olds, lps, ok in zip(old, got[mode]["logprobs"], same) if mode == "sampled" or ok]
            row[mode] = ratio_stats(lr, args.clip)
        out[arm] = row
        print(f"{arm}: reward {row['reward']:.3f}, mixed {row['mixed_groups']:.2f}; sampled token ratio median "
              f"{row['sampled']['token']['q50']:.3f}, seq > C {row['sampled']['sequence']['share_above_clip']:.2f},"
              f" seq < 1/C {row['sampled']['sequence']['share_below_1/clip']:.2f}; llm token ratio q01-q99 "
              f"{row['llm']['token']['q01']:.3f}-{row['llm']['token']['q99']:.3f}", file=sys.stderr, flush=True)
    backend.close()
    return out


def main(argv=None):
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_esamp.models import resolve_model
    from sglang_esamp.rl.tasks import sum_prompts
    from sglang_esamp.serve.local_server import local_server

    model_dir = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = sum_prompts(args.prompts, seed=args.seed)
    with tempfile.TemporaryDirectory() as d, local_server(
            ["--model-path", model_dir, "--dtype", "float32", "--esamp-bank-slots", str(args.prompts),
             "--max-total-tokens", "8192", "--log-level", "warning"], Path(d) / "server.log") as url:
        results = measure(url, model, tokenizer, prompts, args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "model": "smollm2-135m-instruct",
                                             "results": results}, indent=1))
    print(f"\n{'arm':<48} {'logprobs':>8} {'tok q01':>8} {'tok q50':>8} {'tok q99':>8} {'tok>C':>6} "
          f"{'seq q50':>8} {'seq>C':>6} {'seq<1/C':>8}")
    for arm, row in results.items():
        for mode in ("sampled", "llm"):
            tk, sq = row[mode]["token"], row[mode]["sequence"]
            print(f"{arm:<48} {mode:>8} {tk['q01']:>8.3f} {tk['q50']:>8.3f} {tk['q99']:>8.3f} "
                  f"{tk['share_above_clip']:>6.3f} {sq['q50']:>8.3f} {sq['share_above_clip']:>6.3f} "
                  f"{sq['share_below_1/clip']:>8.3f}")


if __name__ == "__main__":
    main()
