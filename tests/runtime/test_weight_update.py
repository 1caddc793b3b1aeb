"""After SGLang's own weight update (``Engine.update_weights_from_tensor``), ESamp reads the new LM head and stops
using the warm start made for the old weights (the real Engine, SmolLM2 with the shipped warm start, CPU)."""
import pytest
import torch

from sglang_esamp.runtime.digest import tensor_digest

pytestmark = pytest.mark.slow
PROMPT = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
SP = {"temperature": 1.0, "max_new_tokens": 8, "n": 2, "ignore_eos": True, "esamp": {"beta": 0.5}}


def test_weight_update_is_picked_up(smollm2_path):
    import sglang_esamp
    from safetensors import safe_open

    llm = sglang_esamp.Engine(model_path=smollm2_path, esamp={"bank_slots": 4, "warm_start": "shipped"},
                              log_level="error", max_total_tokens=4096)
    state = lambda: llm.get_server_info()["internal_states"][0]["esamp"]  # noqa: E731
    try:
        before = state()
        assert before["warm_start_active"] and before["counters"]["weight_updates"] == 0
        assert all(o["meta_info"]["esamp"]["init"] == "warm" for o in llm.generate(PROMPT, SP))
        with safe_open(f"{smollm2_path}/model.safetensors", framework="pt") as f:
            embed = f.get_tensor("model.embed_tokens.weight")
        new = embed.float() * 1.5          # tied head: the LM head is the embedding
        llm.begin_weight_update()          # SGLang 0.5.23: tensor updates run inside a session
        out = llm.update_weights_from_tensor([("model.embed_tokens.weight", new)])
        llm.end_weight_update()
        assert out[0], out
        after = state()
        dtype = getattr(torch, after["lm_head_dtype"].replace("torch.", ""))
        assert after["lm_head_digest"] == tensor_digest(new.to(dtype)) != before["lm_head_digest"]
        assert after["counters"]["weight_updates"] == 1 and after["counters"]["warm_starts_dropped"] == 1
        assert not after["warm_start_active"]
        outs = llm.generate(PROMPT, SP)    # new groups: random init, and ESamp still trains
        assert all(o["meta_info"]["esamp"]["init"] == "random" and o["meta_info"]["esamp"]["steps"] > 0
                   for o in outs)
    finally:
        llm.shutdown()
