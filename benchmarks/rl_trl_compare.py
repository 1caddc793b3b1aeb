"""ESamp rollouts against plain rollouts in a real GRPO run: TRL's GRPOTrainer, SmolLM2-135M-Instruct, CPU.

Every run is ``examples/trl_grpo.py`` against one ESamp server (float32), which is reset to the model's own weights
before each run, so both arms see the same prompts in the same order and the same sampling seeds; they differ only
in the request's ``esamp`` (``beta`` 0 = the same seeded sampler without the distiller). Per arm and seed: the mean
reward and the share of groups with mixed rewards (1 - TRL's ``frac_reward_zero_std``) at every step, TRL's
importance ratios and ``step_time``. Writes the JSON and a plot.

    python benchmarks/rl_trl_compare.py --steps 8 --seeds 0 1 --output benchmarks/results/rl/trl_grpo_compare
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("trl_grpo_example", ROOT / "examples" / "trl_grpo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.8)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--output", default="benchmarks/results/rl/trl_grpo_compare")
    return ap.parse_args(argv)


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs, steps):
    """Per arm: per step mean and sd over seeds; over all steps: per-seed means, then mean and sd over seeds."""
    out = {}
    for arm, by_seed in runs.items():
        per_step = []
        for s in range(steps):
            rows = [r[s] for r in by_seed.values() if s < len(r)]
            per_step.append({k: mean_sd([r[k] for r in rows]) for k in ("reward", "mixed", "is_mean", "step_s")})
        overall = {}
        for k in ("reward", "mixed", "is_mean", "is_min", "is_max", "step_s"):
            overall[k] = mean_sd([statistics.fmean(r[k] for r in rows) for rows in by_seed.values()])
        overall["mixed_step1"] = mean_sd([rows[0]["mixed"] for rows in by_seed.values()])
        overall["reward_step1"] = mean_sd([rows[0]["reward"] for rows in by_seed.values()])
        overall["reward_last_half"] = mean_sd([statistics.fmean(r["reward"] for r in rows[len(rows) // 2:])
                                               for rows in by_seed.values()])
        out[arm] = {"per_step": per_step, "overall": overall}
    return out


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for arm, s in summary.items():
        steps = list(range(1, len(s["per_step"]) + 1))
        for ax, key, label in zip(axes, ("reward", "mixed", "step_s"),
                                  ("mean reward", "groups with mixed rewards", "step time (s)")):
            m = [p[key][0] for p in s["per_step"]]
            sd = [p[key][1] for p in s["per_step"]]
            ax.errorbar(steps, m, yerr=sd, marker="o", capsize=3, label=arm)
            ax.set_xlabel("GRPO step")
            ax.set_title(label)
    axes[0].legend()
    fig.suptitle("TRL GRPOTrainer, SmolLM2-135M-Instruct, sums task, CPU: mean +- sd over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    example = load_example()
    from sglang_esamp.models import resolve_model
    from sglang_esamp.serve.local_server import local_server

    model_dir = resolve_model("smollm2-135m-instruct")
    arms = {"plain": 0.0, f"esamp b{args.beta:g} random": args.beta}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.json")     # finished runs, kept across a crash: a rerun skips them
    runs = {arm: {} for arm in arms}
    same = lambda a: {k: v for k, v in a.items() if k != "seeds"} == {k: v for k, v in vars(args).items()  # noqa
                                                                     if k != "seeds"}
    for kept_path in (out.with_suffix(".json"), partial):   # also runs of the final JSON: more seeds added later
        kept = json.loads(kept_path.read_text()) if kept_path.exists() else None
        if kept and same(kept["args"]):
            for arm in arms:
                runs[arm].update({int(k): v for k, v in kept["runs"].get(arm, {}).items() if int(k) in args.seeds})
    with tempfile.TemporaryDirectory() as d, local_server(
            ["--model-path", model_dir, "--dtype", "float32", "--esamp-bank-slots", str(args.prompts),
             "--max-total-tokens", "8192", "--log-level", "warning"], Path(d) / "server.log") as url:
        for seed in args.seeds:
            for arm, beta in arms.items():
                if seed in runs[arm]:
                    continue
                print(f"[compare] {arm}, seed {seed}", file=sys.stderr, flush=True)
                runs[arm][seed] = example.main(
                    ["--url", url, "--steps", str(args.steps), "--prompts", str(args.prompts), "--n", str(args.n),
                     "--max-tokens", str(args.max_tokens), "--beta", str(beta), "--lr", str(args.lr),
                     "--seed", str(seed)])
                partial.write_text(json.dumps({"args": vars(args), "runs": runs}))
    summary = summarise(runs, args.steps)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary},
                                                   indent=1))
    plot(summary, out.with_suffix(".png"))
    partial.unlink(missing_ok=True)
    print(f"\n{'arm':<22} {'reward':>15} {'reward 2nd half':>16} {'mixed':>13} {'mixed step 1':>13} "
          f"{'IS mean':>13} {'step s':>13}   (mean +- sd over {len(args.seeds)} seeds)")
    for arm, s in summary.items():
        o = s["overall"]
        cells = [o[k] for k in ("reward", "reward_last_half", "mixed", "mixed_step1", "is_mean", "step_s")]
        print(f"{arm:<22} " + " ".join(f"{m:>7.3f} +- {sd:.3f}" for m, sd in cells))


if __name__ == "__main__":
    main()
