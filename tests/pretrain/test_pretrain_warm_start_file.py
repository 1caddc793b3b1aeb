"""The warm-start file format and its refusals (no training needed: a file written by save_warm_start)."""
import json

import pytest
import torch
from safetensors.torch import save_file

from sglang_esamp.algo.distiller.distiller import Distiller, DistillerShape
from sglang_esamp.algo.distiller.warm_start import (WarmStartMismatch, load_for_server, load_warm_start,
                                          read_warm_start_metadata, save_warm_start)

FP = {"model_id": "tiny-qwen2", "config_sha256": "0123456789abcdef", "hidden_size": 32}
TAPS = {"preset": "paper", "source": "layers[1].input_layernorm", "target": "lm_head_input"}
SHAPE = DistillerShape(hidden=32)


@pytest.fixture()
def warm_file(tmp_path):
    d = Distiller(SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.01)  # not the init: a loaded file must carry these exact values
    path = tmp_path / "w.safetensors"
    save_warm_start(path, d.export_state(), {"model": FP, "taps": TAPS, "preset": "paper",
                                             "shape": SHAPE.to_dict(), "training": {"val_loss": 1.0}})
    return path, d.export_state()


def test_right_file_loads_exactly(warm_file):
    path, state = warm_file
    got = load_warm_start(path, model_dir_or_fingerprint=FP, shape=SHAPE, taps="paper")
    assert sorted(got) == sorted(state) and all(torch.equal(got[k], state[k]) for k in state)
    d = Distiller(SHAPE)
    d.load_export_state(got)  # the layout the server's bank and the nn.Module take
    assert read_warm_start_metadata(path)["training"]["val_loss"] == 1.0
    # positional shape (the algo core's call) still works
    assert sorted(load_warm_start(path, SHAPE)) == sorted(state)


@pytest.mark.parametrize("kw,field", [
    (dict(model_dir_or_fingerprint={**FP, "config_sha256": "ffffffffffffffff"}), "model.config_sha256"),
    (dict(model_dir_or_fingerprint={**FP, "model_id": "other"}), "model.model_id"),
    (dict(shape=DistillerShape(hidden=32, blocks=1, width=64, out_ln=True, gate_bias_init=1.0)), "shape.blocks"),
    (dict(shape=DistillerShape(hidden=64)), "shape.hidden"),
    (dict(shape=DistillerShape(hidden=32, width=128)), "shape.width"),
    (dict(taps="tllm"), "taps.source"),
    (dict(taps={"source": "layers[1].input_layernorm", "target": "layers[-1].input_layernorm"}), "taps.target"),
])
def test_mismatch_is_refused_naming_the_field(warm_file, kw, field):
    path, _ = warm_file
    args = dict(model_dir_or_fingerprint=FP, shape=SHAPE, taps="paper")
    args.update(kw)
    with pytest.raises(WarmStartMismatch) as e:
        load_warm_start(path, **args)
    assert e.value.field == field and field in str(e.value) and str(path) in str(e.value)


def test_gate_bias_init_is_not_an_architecture_difference(warm_file):
    path, _ = warm_file
    load_warm_start(path, DistillerShape(hidden=32, gate_bias_init=1.0), taps="paper")


def test_files_without_identity_or_with_bad_values_are_refused(tmp_path, warm_file):
    plain = tmp_path / "plain.safetensors"
    save_file(Distiller(SHAPE).export_state(), str(plain))
    with pytest.raises(ValueError, match="not an ESamp warm-start file"):
        load_warm_start(plain, SHAPE)
    with pytest.raises(ValueError, match="not a safetensors file"):
        (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
        load_warm_start(tmp_path / "junk.safetensors", SHAPE)
    with pytest.raises(FileNotFoundError):
        load_warm_start(tmp_path / "missing.safetensors", SHAPE)
    path, state = warm_file
    state = dict(state)
    state["blocks.0.up"] = state["blocks.0.up"].clone()
    state["blocks.0.up"][0, 0] = float("nan")
    meta = read_warm_start_metadata(path)
    nan_file = tmp_path / "nan.safetensors"
    save_warm_start(nan_file, state, {k: v for k, v in meta.items() if k not in ("format", "format_version")})
    with pytest.raises(ValueError, match="non-finite"):
        load_warm_start(nan_file, SHAPE)
    with pytest.raises(ValueError, match="needs model_dir, shape and taps"):
        load_for_server(path, model_dir=None, shape=SHAPE, taps="paper")


def test_model_dir_is_fingerprinted(tiny_model, tmp_path):
    from sglang_esamp.models import model_fingerprint

    fp = model_fingerprint(tiny_model)
    path = tmp_path / "t.safetensors"
    shape = DistillerShape(hidden=fp["hidden_size"])
    save_warm_start(path, Distiller(shape).export_state(), {"model": fp, "taps": TAPS, "shape": shape.to_dict()})
    assert load_for_server(path, model_dir=tiny_model, shape=shape, taps="paper")
    other = tmp_path / "other-model"
    other.mkdir()
    conf = json.load(open(f"{tiny_model}/config.json"))
    conf["num_hidden_layers"] += 1
    (other / "config.json").write_text(json.dumps(conf))
    with pytest.raises(WarmStartMismatch, match="model"):
        load_for_server(path, model_dir=str(other), shape=shape, taps="paper")
