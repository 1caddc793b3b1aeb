"""Offline models: real SmolLM2 from its wheel (checksum-verified, converted once), the tiny builder."""
import json
from pathlib import Path

import pytest

from sglang_esamp.models import MODELS, get_model, model_fingerprint
from sglang_esamp.models.convert import _gguf_path, _sha256


def test_smollm2_resolves_to_a_converted_hf_dir(smollm2_path):
    d = Path(smollm2_path)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["hidden_size"] == 576 and cfg["num_hidden_layers"] == 30
    assert cfg["rope_theta"] == pytest.approx(100000.0)  # written at top level for older readers
    assert (d / "tokenizer.json").exists() and (d / "model.safetensors").exists()
    marker = json.loads((d / "esamp_model.json").read_text())
    assert marker["gguf_sha256"] == get_model("smollm2-135m-instruct").sha256


def test_gguf_checksum_is_the_pinned_one():
    m = get_model("smollm2-135m-instruct")
    assert _sha256(_gguf_path(m)) == m.sha256


def test_unknown_model_name_is_a_clear_error():
    from sglang_esamp.models import resolve_model

    with pytest.raises(KeyError, match="known"):
        resolve_model("no-such-model")
    assert set(MODELS) >= {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"}


def test_tiny_model_is_deterministic(tmp_path, tiny_model_path):
    from sglang_esamp.models import build_tiny_model
    from safetensors.torch import load_file

    again = build_tiny_model(str(tmp_path / "again"), arch="qwen2", layers=4, hidden=128, seed=0)
    a, b = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(Path(again) / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert model_fingerprint(tiny_model_path)["config_sha256"] == model_fingerprint(again)["config_sha256"]
    assert model_fingerprint(tiny_model_path)["model_id"] == "tiny-qwen2"
