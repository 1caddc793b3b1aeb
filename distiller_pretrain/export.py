"""Export a trained distiller as the server's warm-start file: one safetensors file + JSON metadata per model.

    python -m distiller_pretrain.export --train-dir runs/smollm2/train \
        --out runs/smollm2/export/smollm2-135m-instruct.paper.paper.safetensors
    python -m distiller_pretrain.export --config configs/pretrain/smollm2.yaml

The metadata (model id + config hash, taps, preset and DistillerShape, training summary with the held-out loss
and its baselines) is stored inside the safetensors header, where ``sglang_esamp.algo.distiller.warm_start`` checks it, and
copied to a sidecar ``<out>.json`` for people. The server loads it with ``--esamp-warm-start PATH``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .cli_config import parse_args

_TRAINING_KEYS = ("val_loss", "baselines", "val_rel_identity", "val_rel_mean", "val_rel_affine", "steps",
                  "global_batch", "world_size", "zero_stage", "precision", "lr", "train_rows", "val_rows",
                  "val_fraction", "train_seconds")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distiller_pretrain.export", description=__doc__.splitlines()[0])
    p.add_argument("--train-dir", help="output of distiller_pretrain.train (default: RUN_DIR/train)")
    p.add_argument("--out", help="warm-start file (default: RUN_DIR/export/<model>.<preset>.<taps>.safetensors)")
    p.add_argument("--run-dir", help="run directory used for default paths")
    p.add_argument("--model", help="(optional) check that this model name/path is the one trained for")
    return p


def default_name(summary: dict) -> str:
    return f"{summary['model']['model_id']}.{summary['preset']}.{summary['taps']['preset']}.safetensors"


def export(train_dir, out=None, model=None) -> Path:
    from safetensors.torch import load_file

    from sglang_esamp.algo.distiller.distiller import DistillerShape
    from sglang_esamp.algo.distiller.warm_start import load_warm_start, save_warm_start

    train_dir = Path(train_dir)
    summary_path, weights = train_dir / "summary.json", train_dir / "distiller.safetensors"
    if not summary_path.is_file() or not weights.is_file():
        raise SystemExit(f"--train-dir {train_dir}: needs summary.json and distiller.safetensors "
                         f"(run distiller_pretrain.train to the end first)")
    summary = json.loads(summary_path.read_text())
    if model is not None:
        from sglang_esamp.models import model_fingerprint, resolve_model

        fp = model_fingerprint(resolve_model(model))
        if fp["config_sha256"] != summary["model"]["config_sha256"]:
            raise SystemExit(f"--model {model}: config {fp['config_sha256']} is not the trained model's "
                             f"'{summary['model']['model_id']}' ({summary['model']['config_sha256']})")
    out = Path(out) if out else train_dir.parent / "export" / default_name(summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": summary["model"], "taps": summary["taps"], "preset": summary["preset"], "shape": summary["shape"],
        "training": {k: summary[k] for k in _TRAINING_KEYS if k in summary},
        "recording": summary.get("recording", {}), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    state = load_file(str(weights))
    save_warm_start(out, state, meta)
    # read it back through the server's loader: the file we hand out must pass the checks it will meet
    load_warm_start(out, DistillerShape(**summary["shape"]), model_dir_or_fingerprint=summary["model"],
                    taps=summary["taps"])
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    print(f"[export] {out} ({out.stat().st_size / 1e6:.2f} MB): {summary['model']['model_id']}, preset "
          f"{summary['preset']}, taps {summary['taps']['preset']}, val loss {summary['val_loss']:.4g} "
          f"(identity {summary['baselines']['identity']:.4g}, mean {summary['baselines']['mean']:.4g})",
          file=sys.stderr)
    return out


def main(argv=None):
    p = build_parser()
    args = parse_args(p, "export", argv)
    if not args.train_dir:
        if not args.run_dir:
            p.error("--train-dir is required (or --run-dir / run_dir: in the --config YAML)")
        args.train_dir = str(Path(args.run_dir) / "train")
    export(args.train_dir, args.out, args.model)


if __name__ == "__main__":
    main()
