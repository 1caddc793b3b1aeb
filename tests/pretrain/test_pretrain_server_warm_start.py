"""record -> train (ZeRO 1, one process) -> export -> `launch_server --esamp-warm-start` -> an ESamp request.

The tiny model keeps it fast. A file made for another preset is refused at server start with a clear error.
"""
import sys

import pytest
import requests

from pretrain_testutil import train_args

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from tests.server_utils import running_server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm_file(tiny_recording, tmp_path_factory):
    from distiller_pretrain.export import export
    from distiller_pretrain.train import train

    out = tmp_path_factory.mktemp("train") / "tiny"
    train(train_args(recording=tiny_recording, out=out, steps=30, batch_size=64, lr=3e-3, zero_stage=1,
                     val_fraction=0.2, eval_every=30, log_every=10, taps="paper"))
    return export(out, tmp_path_factory.mktemp("export") / "tiny.safetensors")


def test_server_serves_esamp_from_the_warm_start(tiny_model, warm_file, tmp_path):
    args = ["--model-path", tiny_model, "--esamp-warm-start", str(warm_file), "--esamp-bank-slots", "2",
            "--log-level", "warning"]
    with running_server(args, tmp_path / "server.log") as (base, _):
        r = requests.post(base + "/generate", json={"text": "Return the value", "sampling_params": {
            "temperature": 1.0, "max_new_tokens": 8, "n": 2, "ignore_eos": True, "esamp": {"beta": 0.25}}})
        assert r.status_code == 200, r.text
        metas = [o["meta_info"]["esamp"] for o in r.json()]
        assert all(m["steps"] > 0 and m["last_loss"] is not None for m in metas)
        rank = requests.get(base + "/esamp/stats").json()["ranks"][0]
        assert rank["config"]["warm_start"] == str(warm_file)
        assert rank["counters"]["updates"] > 0 and rank["counters"]["nonfinite_losses"] == 0


def test_server_refuses_a_warm_start_for_another_preset(tiny_model, warm_file, tmp_path):
    args = ["--model-path", tiny_model, "--esamp-warm-start", str(warm_file), "--esamp-distiller", "tllm",
            "--log-level", "warning"]
    with pytest.raises(RuntimeError, match="shape") as e:
        with running_server(args, tmp_path / "bad.log"):
            pass
    assert "warm start" in str(e.value)
