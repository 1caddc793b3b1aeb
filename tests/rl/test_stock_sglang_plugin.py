"""An SGLang started the way a training framework starts it (verl, slime, AReaL: SGLang's own entry points, not
ESamp's launcher) picks ESamp up through the ``sglang.srt.plugins`` entry point; a request opts in with its
``esamp`` field. Here: ``python -m sglang.launch_server`` with the CPU flags written out (SmolLM2, CPU)."""
import pytest
import requests

from tests.server_utils import running_server

pytestmark = pytest.mark.slow
PROMPT = "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
CPU_FLAGS = ["--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph",
             "--max-total-tokens", "8192", "--sleep-on-idle", "--log-level", "warning"]


def test_stock_launch_server_serves_esamp_requests(smollm2_path, tmp_path):
    with running_server(["--model-path", smollm2_path, *CPU_FLAGS], tmp_path / "server.log",
                        env_extra={"SGLANG_USE_CPU_ENGINE": "1"}, module="sglang.launch_server") as (base, _):
        before = requests.get(base + "/esamp/stats", timeout=60).json()["total"]
        sp = {"n": 2, "max_new_tokens": 8, "temperature": 1.0, "ignore_eos": True, "sampling_seed": 11,
              "esamp": {"beta": 0.8, "init": "random", "logprobs": "sampled"}}
        r = requests.post(base + "/generate", json={"text": PROMPT, "sampling_params": sp, "return_logprob": True},
                          timeout=300)
        assert r.status_code == 200, r.text
        outs = r.json()
        after = requests.get(base + "/esamp/stats", timeout=60).json()["total"]
        bad = requests.post(base + "/generate", json={"text": PROMPT, "sampling_params": {
            "max_new_tokens": 2, "esamp": {"beta": "high"}}}, timeout=60)
    metas = [o["meta_info"]["esamp"] for o in outs]
    assert [m["seed_stream"] for m in metas] == [0, 1] and len({m["group"] for m in metas}) == 1
    assert all(m["steps"] > 0 and m["init"] == "random" for m in metas)     # the siblings' distiller trained
    assert all(len(o["meta_info"]["output_token_logprobs"]) == 8 for o in outs)
    assert after["updates"] > before.get("updates", 0) and after["candidate_rows_reweighted"] > 0
    assert bad.status_code == 400 and "esamp.beta" in bad.text             # the request field is validated too
