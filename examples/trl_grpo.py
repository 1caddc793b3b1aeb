"""GRPO with TRL's ``GRPOTrainer`` against an ESamp server: the trainer learns, ESamp samples its rollouts.

    python examples/trl_grpo.py                          # SmolLM2-135M-Instruct on CPU, starts its own server
    python examples/trl_grpo.py --beta 0                 # plain rollouts through the same seeded sampler
    python examples/trl_grpo.py --url http://127.0.0.1:30000 --wandb   # a running server; W&B offline

Defaults: the authors' setting for maths (beta 0.8, random init, behind T 0.8 / top-p 0.95 / min-p 0.1).
The task: sums of two digits (``sglang_esamp.rl.tasks``), reward 1 for the right number. Each step
sends ``--prompts`` prompts with ``n = --n`` rollouts each to the server (``esamp: {"beta", "init",
"logprobs": "sampled"}``, a ``sampling_seed`` per request), takes one GRPO step, and pushes the new weights back
through ``/update_weights_from_disk`` before the next rollouts. TRL corrects the off-policy rollouts with its
importance-sampling correction on the sampled logprobs (``--is-mode``, docs/rl.md). The table at the end has
per step the mean reward, the share of groups with mixed rewards (the groups with a GRPO signal), TRL's
importance ratios and the step's wall time, then the server's ESamp counters.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a model name of sglang_esamp.models or a path")
    ap.add_argument("--url", default=None, help="an ESamp server already serving --model (else one is started)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--n", type=int, default=8, help="rollouts per prompt (num_generations)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.8, help="ESamp's beta; 0 = plain rollouts")
    ap.add_argument("--init", choices=("random", "warm"), default="random")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--min-p", type=float, default=0.1)
    ap.add_argument("--logprobs", choices=("sampled", "llm"), default="sampled",
                    help="the rollout logprobs TRL corrects against (docs/rl.md: sampled)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--is-mode", default="token_truncate",
                    choices=("token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "off"))
    ap.add_argument("--is-clip", type=float, default=3.0, help="C_max of TRL's importance-sampling correction")
    ap.add_argument("--seed", type=int, default=0, help="data order, the trainer, and the rollouts' sampling seeds")
    ap.add_argument("--wandb", action="store_true", help="log to Weights & Biases, offline (WANDB_MODE=offline)")
    ap.add_argument("--output", default=None, help="write the per-step log and the summary as JSON here")
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n must be at least 2 (a GRPO group)")
    return args


@contextmanager
def esamp_server(args, model_dir, workdir):
    """The given server, or a local one serving ``model_dir`` in float32 (the trainer's dtype)."""
    if args.url:
        yield args.url
        return
    from sglang_esamp.serve.local_server import local_server

    log = Path(workdir) / "server.log"
    print(f"starting an ESamp server for {model_dir} (log: {log})", file=sys.stderr, flush=True)
    with local_server(["--model-path", model_dir, "--dtype", "float32", "--esamp-bank-slots", str(args.prompts),
                       "--max-total-tokens", "8192", "--log-level", "warning"], log) as url:
        yield url


def grpo_config(args, workdir):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(Path(workdir) / "trainer"), max_steps=args.steps, learning_rate=args.lr,
        per_device_train_batch_size=args.prompts * args.n, num_generations=args.n,
        max_completion_length=args.max_tokens, temperature=args.temperature, top_p=args.top_p, min_p=args.min_p,
        beta=0.0,
        vllm_importance_sampling_correction=args.is_mode != "off",
        vllm_importance_sampling_mode="token_truncate" if args.is_mode == "off" else args.is_mode,
        vllm_importance_sampling_clip_max=args.is_clip,
        logging_steps=1, save_strategy="no", report_to=["wandb"] if args.wandb else "none",
        run_name=f"trl-grpo-esamp-b{args.beta:g}-s{args.seed}", seed=args.seed, use_cpu=True, bf16=False,
        dataloader_num_workers=0, disable_tqdm=False)


def per_step(log_history):
    """TRL's per-step log: the mean reward, the share of groups with mixed rewards, the importance ratios."""
    rows = []
    for entry in log_history:
        if "reward" not in entry:
            continue
        step = int(entry["step"])
        rows.append({"step": step, "reward": entry["reward"], "mixed": 1.0 - entry["frac_reward_zero_std"],
                     "is_mean": entry.get("sampling/importance_sampling_ratio/mean"),
                     "is_min": entry.get("sampling/importance_sampling_ratio/min"),
                     "is_max": entry.get("sampling/importance_sampling_ratio/max"),
                     "length": entry.get("completions/mean_length"),
                     "step_s": entry.get("step_time")})
    return rows


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_summary(rows, counters, pushes, args):
    arm = "plain" if args.beta == 0 else f"esamp b{args.beta:g} {args.init}"
    arm += f", {args.logprobs} logprobs, IS {args.is_mode}"
    print(f"\nGRPO with TRL against the ESamp server ({arm}, {args.prompts} prompts x n={args.n}, seed {args.seed})")
    print(f"{'step':>4} {'reward':>7} {'mixed':>6} {'IS mean':>8} {'IS min':>7} {'IS max':>7} {'tokens':>7} "
          f"{'step s':>7}")
    for r in rows:
        print(f"{r['step']:>4} {r['reward']:>7.3f} {r['mixed']:>6.2f} {fmt(r['is_mean'], '>8.3f')} "
              f"{fmt(r['is_min'], '>7.3f')} {fmt(r['is_max'], '>7.3f')} {fmt(r['length'], '>7.1f')} "
              f"{fmt(r['step_s'], '>7.1f')}")
    keys = ("weight_updates", "updates", "rows_trained", "sampled_rows", "candidate_rows_reweighted")
    print("weights pushed after steps: " + (", ".join(map(str, pushes)) or "none") + "; server: "
          + ", ".join(f"{k} {counters.get(k, 0)}" for k in keys))


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")   # rollout_func is experimental in TRL; docs/rl.md
    if args.wandb:
        os.environ.setdefault("WANDB_MODE", "offline")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from sglang_esamp.models import MODELS, resolve_model
    from sglang_esamp.rl.tasks import sum_prompts, sum_reward
    from sglang_esamp.rl.trl import ESampRollout, attach

    model_dir = resolve_model(args.model) if args.model in MODELS else args.model
    torch.manual_seed(args.seed)
    data = Dataset.from_list(sum_prompts(args.steps * args.prompts, seed=args.seed))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    esamp = {"beta": args.beta, "logprobs": args.logprobs}
    if args.beta > 0:
        esamp["init"] = args.init
    with tempfile.TemporaryDirectory(prefix="trl-grpo-") as workdir, esamp_server(args, model_dir, workdir) as url:
        rollout = ESampRollout(url, esamp=esamp, seed=args.seed * 100003)
        try:
            if args.url:                # a server kept from an earlier run: start from the model's own weights
                rollout.backend.load_checkpoint(model_dir)
            trainer = GRPOTrainer(model=model, reward_funcs=sum_reward, args=grpo_config(args, workdir),
                                  train_dataset=data, processing_class=tokenizer, rollout_func=rollout)
            attach(trainer, rollout)
            trainer.train()
            counters = rollout.stats()["total"]
        finally:
            rollout.close()
        if args.wandb:
            import wandb

            wandb.finish()
    rows = per_step(trainer.state.log_history)
    print_summary(rows, counters, rollout.pushes, args)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"args": vars(args), "steps": rows, "pushes": rollout.pushes,
                                                 "counters": counters}, indent=1))
    return rows


if __name__ == "__main__":
    main()
