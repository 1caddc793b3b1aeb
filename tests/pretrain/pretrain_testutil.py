"""Helpers shared by the warm-start pipeline tests (a uniquely named module: several test dirs have a conftest)."""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "distiller_pretrain" / "corpus" / "smollm2_generations.jsonl"


def record_args(**kw):
    """argparse Namespace for record.record() with the CLI's defaults."""
    from distiller_pretrain.record import build_parser

    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        elif v is not False and v is not None:
            argv += [flag, str(v)]
    return build_parser().parse_args(argv + ["--no-progress"])


def train_args(**kw):
    from distiller_pretrain.train import build_parser, resolve_paths

    p = build_parser()
    argv = []
    for k, v in kw.items():
        argv += ["--" + k.replace("_", "-")] + ([] if v is True else [str(v)])
    return resolve_paths(p, p.parse_args(argv + ["--no-progress", "--wandb-project", ""]))


def python_env():
    """Environment for child processes: this interpreter's venv, no inherited rendezvous variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
