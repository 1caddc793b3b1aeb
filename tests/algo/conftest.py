"""Fixtures for the algorithm-core tests: one CPU thread, SmolLM2 loaded once (fp32)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct in fp32 on CPU (a local converted copy, never a hub download)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_esamp.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="session")
def chat_ids():
    """chat_ids(tok, text) -> the prompt token ids of one user turn with the generation prompt."""
    def make(tok, text):
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        return list(ids["input_ids"] if not isinstance(ids, list) else ids)
    return make
