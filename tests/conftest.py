"""Test-wide settings: one thread (2 threads collapse under load on these machines), CPU SGLang, no W&B, offline."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_path():
    from sglang_esamp.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from sglang_esamp.models import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("models") / "tiny-qwen2"), arch="qwen2", layers=4,
                            hidden=128, seed=0)
