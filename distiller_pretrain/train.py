"""Train the latent distiller offline on a recording, with a DeepSpeed engine (ZeRO 0/1/2, bf16 on CPU).

    python -m distiller_pretrain.train --recording runs/smollm2/recording --out runs/smollm2/train \
        --preset paper --steps 3000 --batch-size 256 --lr 1e-3 --zero-stage 1
    python -m distiller_pretrain.train --config configs/pretrain/smollm2.yaml [--steps N ...]
    deepspeed --num_gpus 2 -m distiller_pretrain.train --config ...       # or: torchrun --nproc_per_node 2 -m ...

The model trained is ``sglang_esamp.algo.distiller.distiller.Distiller`` (the module the server uses; one preset = one
architecture); loss = per-row ‖h_tgt − ĥ‖² summed over H, mean over rows (DESIGN §1). Torch AdamW is the client
optimizer (no C++ optimizer build) and the shm comm op is off on CPU (gloo only). Held-out rows (split by corpus
document) give the validation loss next to the identity / mean / affine baselines on the same rows.
Outputs in --out: metrics.jsonl, checkpoints/ (DeepSpeed, for --resume), distiller.safetensors (fp32, plain
torch) and summary.json, which ``distiller_pretrain.export`` turns into the server's warm-start file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .cli_config import parse_args

DS_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distiller_pretrain.train", description=__doc__.splitlines()[0])
    p.add_argument("--recording", help="recording directory (default: RUN_DIR/recording)")
    p.add_argument("--out", help="training output directory (default: RUN_DIR/train)")
    p.add_argument("--run-dir", help="run directory used for default paths")
    p.add_argument("--model", help="(optional) model name/path; if given it must match the recording's model")
    p.add_argument("--taps", help="(optional) tap preset; if given it must match the recording's taps")
    p.add_argument("--preset", default="paper", help="distiller preset: paper | tllm")
    p.add_argument("--zero-stage", type=int, default=None, choices=[0, 1, 2],
                   help="ZeRO stage (default: the --deepspeed-config's, else 1)")
    p.add_argument("--deepspeed-config", help="DeepSpeed JSON (default: configs/deepspeed/zero{stage}.json)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=256, help="rows per micro-batch per process")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="cosine decays to lr * this")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warmup (default: 5%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of corpus documents held out")
    p.add_argument("--max-val-rows", type=int, default=20_000)
    p.add_argument("--max-rows", type=int, default=None, help="use only the first N recorded rows")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=0, help="DeepSpeed checkpoint every N steps (0: end only)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--wandb-project", default="esamp-distiller", help="W&B project ('' to skip W&B)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help="set by the deepspeed launcher")
    return p


def resolve_paths(p: argparse.ArgumentParser, args):
    for name, sub in (("recording", "recording"), ("out", "train")):
        if not getattr(args, name):
            if not args.run_dir:
                p.error(f"--{name} is required (or --run-dir / run_dir: in the --config YAML)")
            setattr(args, name, str(Path(args.run_dir) / sub))
    for flag, v in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--grad-accum", args.grad_accum)):
        if v < 1:
            p.error(f"{flag} must be >= 1")
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be in (0, 1)")
    if args.lr <= 0:
        p.error("--lr must be positive")
    return args


def deepspeed_config(args) -> dict:
    stage = args.zero_stage if args.zero_stage is not None else 1
    path = Path(args.deepspeed_config) if args.deepspeed_config else DS_CONFIG_DIR / f"zero{stage}.json"
    if not path.is_file():
        raise SystemExit(f"--deepspeed-config: no such file: {path}")
    cfg = json.loads(path.read_text())
    cfg.pop("train_batch_size", None)  # derived from micro batch x accumulation x world size
    cfg["train_micro_batch_size_per_gpu"] = args.batch_size
    cfg["gradient_accumulation_steps"] = args.grad_accum
    cfg["gradient_clipping"] = args.grad_clip
    cfg.setdefault("zero_optimization", {})
    if args.zero_stage is not None or "stage" not in cfg["zero_optimization"]:
        cfg["zero_optimization"]["stage"] = stage
    if cfg["zero_optimization"]["stage"] not in (0, 1, 2):
        raise SystemExit(f"--deepspeed-config {path}: ZeRO stage {cfg['zero_optimization']['stage']}; "
                         f"this trainer supports 0, 1 and 2")
    cfg["bf16"] = {"enabled": args.precision == "bf16"}
    cfg.pop("fp16", None)  # rejected on CPUs without AVX512-FP16, and bf16 is what we train in
    return cfg


def lr_lambda(steps: int, warmup: int, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def full_fp32_state(engine) -> dict:
    """The fp32 master weights in the ``Distiller.export_state()`` layout, whatever the ZeRO stage."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    masters = {}  # ZeRO 0 + bf16 keeps fp32 masters in the wrapper's fp32_groups, aligned with fp16_groups
    for g16, g32 in zip(getattr(engine.optimizer, "fp16_groups", []), getattr(engine.optimizer, "fp32_groups", [])):
        for a, b in zip(g16, g32):
            masters[id(a)] = b
    state = {}
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param)
        if full is None:
            full = masters.get(id(param), param)
        state[name.removeprefix("params.").replace("__", ".")] = full.detach().float().cpu().clone()
    return state


def _check_recording(args, manifest):
    if args.taps and manifest["taps"]["preset"] != args.taps:
        raise SystemExit(f"--taps {args.taps}: the recording {args.recording} was made at taps "
                         f"'{manifest['taps']['preset']}'")
    if args.model:
        from sglang_esamp.models import model_fingerprint, resolve_model

        fp = model_fingerprint(resolve_model(args.model))
        if fp["config_sha256"] != manifest["model"]["config_sha256"]:
            raise SystemExit(f"--model {args.model}: the recording {args.recording} is of model "
                             f"'{manifest['model']['model_id']}' (config {manifest['model']['config_sha256']})")


def train(args) -> dict:
    """Run training in this process (its process group stays alive; the CLI tears it down). Returns the summary
    on rank 0 (None on other ranks)."""
    return _train(args)[0]


def _train(args):
    from . import ds_env

    rank, world = ds_env.init_distributed()
    import deepspeed
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from tqdm import tqdm

    from sglang_esamp.algo.config import DISTILLER_PRESETS
    from sglang_esamp.algo.distiller.distiller import Distiller, DistillerShape

    from .baselines import baseline_losses, mean_loss, row_sq_err
    from .data import batch_indices, load_split
    from .metrics import MetricsSink
    from .shards import read_manifest

    torch.set_num_threads(args.threads)
    if args.preset not in DISTILLER_PRESETS:
        raise SystemExit(f"--preset: unknown '{args.preset}'; allowed {sorted(DISTILLER_PRESETS)}")
    manifest = read_manifest(args.recording)
    if manifest is None:
        raise SystemExit(f"--recording: {args.recording} has no manifest.json (run distiller_pretrain.record)")
    _check_recording(args, manifest)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    t_load = time.time()
    data = load_split(args.recording, args.val_fraction, args.max_rows, args.max_val_rows)
    t_load = time.time() - t_load
    shape = DistillerShape(hidden=data.hidden, **DISTILLER_PRESETS[args.preset])
    baselines = baseline_losses(data.train_src, data.train_tgt, data.val_src, data.val_tgt)

    torch.manual_seed(args.seed)
    model = Distiller(shape, generator=torch.Generator().manual_seed(args.seed))
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=args.eps,
                                  weight_decay=args.weight_decay)
    sched = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.steps, warmup, args.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=sched,
                                           config=deepspeed_config(args))
    device = engine.device
    ckpt_dir = out / "checkpoints"
    start = 0
    if args.resume and (ckpt_dir / "latest").exists():
        engine.load_checkpoint(str(ckpt_dir))
        start = engine.global_steps
    run_config = {**{k: v for k, v in vars(args).items() if k != "local_rank"}, "world_size": world,
                  "shape": shape.to_dict(), "train_rows": len(data.train_src), "val_rows": len(data.val_src),
                  "model": manifest["model"], "taps": manifest["taps"]}
    sink = MetricsSink(out / "metrics.jsonl", enabled=rank == 0, wandb_project=args.wandb_project or None,
                       run_name=f"{manifest['model']['model_id']}-{args.preset}", config=run_config)
    sink.log({"event": "start", "baselines": baselines, "resume_step": start, "load_seconds": round(t_load, 2),
              **{f"baseline/{k}": v for k, v in baselines.items()}}, step=start)

    def evaluate() -> float:
        # each rank scores its share of the held-out rows; sums are all-reduced
        engine.eval()
        chunks = list(range(0, len(data.val_src), 4096))[rank::world]
        total = torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            for i in chunks:
                x = data.val_src[i:i + 4096].to(device=device, dtype=torch.float32)
                pred = engine.module(x)
                total[0] += row_sq_err(pred, data.val_tgt[i:i + 4096].to(device)).double().sum().cpu()
                total[1] += len(x)
        dist.all_reduce(total)
        engine.train()
        return float(total[0] / total[1])

    bar = tqdm(total=args.steps, initial=start, desc="train", unit="step", disable=rank != 0 or args.no_progress)
    n_train = len(data.train_src)
    t0, last_t, last_step, val = time.time(), time.time(), start, None
    loss_acc = torch.zeros(2, dtype=torch.float64)
    for step in range(start, args.steps):
        for micro in range(args.grad_accum):
            idx = batch_indices(n_train, args.batch_size, step * args.grad_accum + micro, args.seed, rank, world)
            x = data.train_src[idx].to(device=device, dtype=torch.float32)
            y = data.train_tgt[idx].to(device=device, dtype=torch.float32)
            loss = row_sq_err(engine(x), y).mean()
            engine.backward(loss)
            engine.step()
            loss_acc += torch.tensor([float(loss.detach()), 1.0], dtype=torch.float64)
        done = step + 1
        bar.update(1)
        if done % args.log_every == 0 or done == args.steps:
            dist.all_reduce(loss_acc)
            now = time.time()
            rate = (done - last_step) / max(now - last_t, 1e-9)
            rec = {"train/loss": float(loss_acc[0] / loss_acc[1]), "lr": engine.get_lr()[0],
                   "steps_per_s": round(rate, 2),
                   "rows_per_s": round(rate * args.batch_size * args.grad_accum * world, 1)}
            sink.log(rec, step=done)
            bar.set_postfix(loss=f"{rec['train/loss']:.4g}")
            loss_acc.zero_()
            last_t, last_step = now, done
        if done % args.eval_every == 0 or done == args.steps:
            val = evaluate()
            sink.log({"val/loss": val, "val/rel_identity": val / baselines["identity"],
                      "val/rel_mean": val / baselines["mean"], "val/rel_affine": val / baselines["affine"]},
                     step=done)
        if (args.save_every and done % args.save_every == 0) or done == args.steps:
            engine.save_checkpoint(str(ckpt_dir), tag=f"step{done}")
    bar.close()
    train_seconds = time.time() - t0

    # the exported weights are the fp32 masters; score exactly those with the plain-torch module
    state = full_fp32_state(engine)
    summary = None
    if rank == 0:
        plain = Distiller(shape)
        plain.load_export_state(state)
        with torch.no_grad():
            val_fp32 = mean_loss(plain, data.val_src, data.val_tgt)
        steps_run = args.steps - start
        summary = {
            "val_loss": val_fp32, "val_loss_engine": val, "baselines": baselines,
            "val_rel_identity": val_fp32 / baselines["identity"], "val_rel_mean": val_fp32 / baselines["mean"],
            "val_rel_affine": val_fp32 / baselines["affine"],
            "steps": args.steps, "steps_this_run": steps_run, "train_seconds": round(train_seconds, 2),
            "steps_per_s": round(steps_run / max(train_seconds, 1e-9), 2),
            "global_batch": args.batch_size * args.grad_accum * world, "world_size": world,
            "zero_stage": engine.zero_optimization_stage(), "precision": args.precision, "lr": args.lr,
            "train_rows": n_train, "val_rows": len(data.val_src), "val_fraction": args.val_fraction,
            "preset": args.preset, "shape": shape.to_dict(), "taps": manifest["taps"], "model": manifest["model"],
            "recording": {"path": str(Path(args.recording).resolve()), "rows": manifest["rows"],
                          "storage_dtype": manifest["storage_dtype"], "model_dtype": manifest["model_dtype"],
                          "corpus": manifest["corpus"]},
        }
        save_file(state, str(out / "distiller.safetensors"))
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        sink.log({"event": "end", "val/loss_fp32": val_fp32}, step=args.steps)
        sink.summary({"val_loss": val_fp32, **{f"baseline_{k}": v for k, v in baselines.items()}})
        print(f"[train] val loss {val_fp32:.4g} | identity {baselines['identity']:.4g} | mean "
              f"{baselines['mean']:.4g} | affine {baselines['affine']:.4g} | {summary['steps_per_s']} steps/s",
              file=sys.stderr)
    sink.close()
    dist.barrier()
    return summary, engine


def main(argv=None):
    from . import ds_env

    p = build_parser()
    args = resolve_paths(p, parse_args(p, "train", argv))
    engine = None
    try:
        _, engine = _train(args)
    finally:
        ds_env.teardown(engine)


if __name__ == "__main__":
    main()
