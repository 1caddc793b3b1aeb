import json
import math

import pytest

from sglang_esamp.algo.config import ESampConfig, ESampParamError
from sglang_esamp.wire.request import ESampRequest


def test_defaults_are_the_paper_settings():
    c = ESampConfig()
    s = c.distiller_shape(576)
    assert (s.blocks, s.width, s.out_ln, s.gate_bias_init) == (2, 384, False, 0.0)
    assert (c.optimizer, c.lr, c.eps, c.grad_clip, c.default_beta) == ("adam", 4e-4, 1e-4, 0.5, 0.25)
    assert (c.candidate_cap, c.greedy, c.temperature_form, c.train_rows, c.taps) == (1024, "skip", "tllm", "all",
                                                                                     "paper")
    g = c.divergence_guard()
    assert (g.factor, g.norm_factor, g.min_steps) == (c.divergence_factor, c.divergence_norm_factor,
                                                     c.divergence_min_steps)
    assert ESampConfig(divergence_factor=0, divergence_norm_factor=0).divergence_guard().factor == 0.0


def test_tllm_preset_and_overrides():
    s = ESampConfig(distiller="tllm").distiller_shape(64)
    assert (s.blocks, s.width, s.out_ln, s.gate_bias_init) == (1, 64, True, 1.0)
    s = ESampConfig(distiller="tllm", width=32, blocks=3, out_ln=False, gate_bias=0.5).distiller_shape(64)
    assert (s.blocks, s.width, s.out_ln, s.gate_bias_init) == (3, 32, False, 0.5)


@pytest.mark.parametrize("kwargs, field, fragment", [
    (dict(distiller="big"), "esamp.distiller", "must be one of ['paper', 'tllm']"),
    (dict(optimizer="adamw"), "esamp.optimizer", "must be one of ['adam', 'sgd']"),
    (dict(lr=0.0), "esamp.lr", "must be in (0, 1]"),
    (dict(lr=float("nan")), "esamp.lr", "must be a finite number"),
    (dict(eps=-1.0), "esamp.eps", "must be in (0, 1]"),
    (dict(betas=(0.9, 1.0)), "esamp.betas[1]", "must be in [0, 1)"),
    (dict(betas=(0.9,)), "esamp.betas", "must be a pair"),
    (dict(grad_clip=-0.1), "esamp.grad_clip", "must be in [0, 1e+06]"),
    (dict(bank_slots=0), "esamp.bank_slots", "must be 'auto' or a number of slots in [1, 65536], got 0"),
    (dict(bank_slots=True), "esamp.bank_slots", "must be 'auto' or a number of slots in [1, 65536], got True"),
    (dict(bank_slots="lots"), "esamp.bank_slots", "must be 'auto' or a number of slots in [1, 65536], got 'lots'"),
    (dict(default_beta=5), "esamp.default_beta", "must be in [0, 4], got 5"),
    (dict(candidate_cap=0), "esamp.candidate_cap", "must be in [1,"),
    (dict(greedy="maybe"), "esamp.greedy", "must be one of ['skip', 'apply']"),
    (dict(temperature_form="x"), "esamp.temperature_form", "must be one of ['tllm', 'scaled']"),
    (dict(train_rows="some"), "esamp.train_rows", "must be one of ['all', 'first_per_group']"),
    (dict(taps="layer7"), "esamp.taps", "must be one of"),
    (dict(warm_start=""), "esamp.warm_start", "non-empty path"),
    (dict(session_ttl_s=0), "esamp.session_ttl_s", "must be in (0,"),
    (dict(bank_slots=16, session_max=17), "esamp.session_max", "must be in [0, 16], got 17"),
    (dict(param_dtype="int8"), "esamp.param_dtype", "must be one of"),
    (dict(width=0), "esamp.width", "must be in [1,"),
    (dict(out_ln="yes"), "esamp.out_ln", "must be true, false or null"),
    (dict(divergence_factor=0.5), "esamp.divergence_factor", "must be 0 (off) or >= 1, got 0.5"),
    (dict(divergence_factor=-1.0), "esamp.divergence_factor", "must be in [0,"),
    (dict(divergence_norm_factor=float("inf")), "esamp.divergence_norm_factor", "must be a finite number"),
    (dict(divergence_min_steps=-1), "esamp.divergence_min_steps", "must be in [0,"),
    (dict(divergence_min_steps=2.5), "esamp.divergence_min_steps", "must be an integer"),
])
def test_config_validation_names_the_field(kwargs, field, fragment):
    with pytest.raises(ESampParamError) as e:
        ESampConfig(**kwargs)
    assert e.value.field == field
    assert str(e.value).startswith(field + " ")
    assert fragment in str(e.value)


def test_from_dict_roundtrip_and_unknown_keys():
    c = ESampConfig(bank_slots=8, optimizer="sgd", betas=(0.8, 0.99))
    d = json.loads(json.dumps(c.to_dict()))
    assert ESampConfig.from_dict(d) == c
    with pytest.raises(ESampParamError, match=r"esamp has unknown keys \['learning_rate'\]"):
        ESampConfig.from_dict({"learning_rate": 1e-3})


def test_describe_prints_every_knob_and_the_shape():
    text = ESampConfig().describe(hidden=576, memory="16 slots x 1 MiB")
    for k in ESampConfig().to_dict():
        assert k in text
    assert "params/slot" in text and "16 slots x 1 MiB" in text


def test_request_beta_range_message():
    with pytest.raises(ESampParamError) as e:
        ESampRequest.parse({"beta": 5})
    assert str(e.value) == "esamp.beta must be in [0, 4], got 5"
    assert e.value.field == "esamp.beta"
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 4.0001, True, "0.3", [0.25]])
def test_request_beta_rejects_non_numbers_and_out_of_range(bad):
    with pytest.raises(ESampParamError) as e:
        ESampRequest.parse({"beta": bad})
    assert e.value.field == "esamp.beta"


def test_request_parsing_forms():
    c = ESampConfig(default_beta=0.3)
    assert ESampRequest.parse(None) is None
    assert ESampRequest.parse(True).effective_beta(c) == 0.3
    assert ESampRequest.parse(False).effective_beta(c) == 0.0
    r = ESampRequest.parse({"beta": 0, "session": "abc"})
    assert r.effective_beta(c) == 0.0 and r.session == "abc" and r.enabled
    assert ESampRequest.parse({"beta": 4}).beta == 4.0
    assert ESampRequest.parse({"enabled": False, "beta": 1.0}).effective_beta(c) == 0.0
    with pytest.raises(ESampParamError, match=r"esamp has unknown keys \['alpha'\]"):
        ESampRequest.parse({"beta": 0.1, "alpha": 1})
    with pytest.raises(ESampParamError, match="esamp must be true, false or an object, got str"):
        ESampRequest.parse("yes")
    with pytest.raises(ESampParamError, match="esamp.enabled must be true or false"):
        ESampRequest.parse({"enabled": 1})


def test_request_session_rules():
    assert ESampRequest.parse({"session": "s" * 256}).session == "s" * 256
    with pytest.raises(ESampParamError, match=r"esamp.session must be at most 256 characters, got 257"):
        ESampRequest.parse({"session": "s" * 257})
    with pytest.raises(ESampParamError, match="esamp.session must be a non-empty string"):
        ESampRequest.parse({"session": ""})
    with pytest.raises(ESampParamError, match="esamp.session must be a non-empty string"):
        ESampRequest.parse({"session": 12})
    assert math.isclose(ESampRequest.parse({"beta": 0.25}).beta, 0.25)


def test_sharpen_false_is_an_esamp_option_and_conflicts_with_the_sharpening_control():
    assert ESampRequest.parse({"beta": 0.8, "sharpen": False}).sharpen is False
    assert ESampRequest.parse({"beta": 0.8}).to_wire() == {"beta": 0.8}          # the default stays off the wire
    with pytest.raises(ESampParamError, match="esamp.sharpen"):
        ESampRequest.parse({"beta": 0.8, "sharpen": False, "sharpen_only": True})
    with pytest.raises(ESampParamError, match="esamp.sharpen"):
        ESampRequest.parse({"sharpen": "no"})
