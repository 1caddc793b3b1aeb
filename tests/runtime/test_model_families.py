"""ESamp on every model family it taps: a tiny random model per family on the real SGLang Engine (CPU, fp32);
the SGLang taps equal the HF model's own hidden states at the same positions, and an ESamp request trains."""
import json
import os

import pytest
import torch

from sglang_esamp.algo.reference.hf_taps import capture_taps
from sglang_esamp.algo.reference.tap_spec import tap_spec
from sglang_esamp.models.tiny import ARCHS

pytestmark = pytest.mark.slow
TOKENS = 6


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    from sglang_esamp.models import build_tiny_model

    root = tmp_path_factory.mktemp("families")
    return {a: build_tiny_model(str(root / f"tiny-{a}"), arch=a, layers=4, hidden=128, seed=0) for a in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_sglang_taps_equal_hf_taps_and_esamp_trains(arch, family_models, tmp_path):
    import sglang_esamp
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = family_models[arch]
    trace = tmp_path / "taps.jsonl"
    os.environ["SGLANG_ESAMP_TAP_TRACE"] = str(trace)
    try:
        llm = sglang_esamp.Engine(model_path=path, esamp={"bank_slots": 2}, dtype="float32", log_level="error",
                                  max_total_tokens=2048, disable_radix_cache=True)
    finally:
        del os.environ["SGLANG_ESAMP_TAP_TRACE"]
    try:
        prompt = AutoTokenizer.from_pretrained(path).encode("Return the value of the")
        out = llm.generate(input_ids=prompt, sampling_params={"temperature": 1.0, "max_new_tokens": TOKENS,
                                                              "ignore_eos": True, "esamp": {"beta": 0.5}})
        state = llm.get_server_info()["internal_states"][0]["esamp"]
    finally:
        llm.shutdown()
    meta = out["meta_info"]["esamp"]
    assert meta["steps"] == TOKENS - 1 and meta["rows_trained"] >= meta["steps"]   # every decode step trained
    assert state["counters"]["tap_misses"] == 0 and state["counters"]["nonfinite_losses"] == 0
    rows = [json.loads(x) for x in trace.read_text().splitlines()]
    assert len(rows) == TOKENS - 1
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.tensor([prompt + out["output_ids"]])
    with torch.no_grad(), capture_taps(hf, tap_spec("paper")) as taps:
        hf(ids)
    for k, row in enumerate(rows, start=1):   # decode step k reads the hidden states of input token len(prompt)+k-1
        t = len(prompt) + k - 1
        for role, key in (("source", "h_src"), ("target", "h_tgt")):
            want = taps[role][0, t]
            got = torch.tensor(row[key])
            err = (got - want).abs().max().item() / want.abs().max().item()
            assert err < 2e-3, f"{arch} {role} step {k}: relative error {err:.2e}"
