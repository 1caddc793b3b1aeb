"""A deterministic tiny random decoder (Qwen2, Llama, Qwen3, Mistral, Gemma3) with an offline-trained BPE tokenizer.

For fast tests of the mechanics (no real weights needed): ~1 M parameters, builds in a few seconds, fully
offline (the tokenizer is trained on the standard library's docstrings). One per model family ESamp taps, so each
family's SGLang taps can be checked against the HF ones. Usage:
    python -m sglang_esamp.models.tiny OUT_DIR [--arch qwen2|llama|qwen3|mistral|gemma3] [--layers 4] [--hidden 128]
"""
from __future__ import annotations

import argparse
import json
import pydoc
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _training_text():
    import builtins, collections, json as _json, os, re, string  # noqa: E401 - deterministic corpus sources
    for mod in (builtins, collections, _json, os, re, string, pydoc):
        for name in sorted(dir(mod)):
            doc = getattr(getattr(mod, name), "__doc__", None)
            if isinstance(doc, str):
                yield doc


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


ARCHS = ("qwen2", "llama", "qwen3", "mistral", "gemma3")


def _config(arch: str, common: dict, head_dim: int):
    import transformers as tf

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; known: {', '.join(ARCHS)}")
    if arch == "gemma3":   # text-only Gemma3 (Gemma3ForCausalLM): sliding + global layers, (1 + w) norms
        return tf.Gemma3TextConfig(**common, head_dim=head_dim, sliding_window=64, query_pre_attn_scalar=head_dim,
                                   rope_theta=10000.0, final_logit_softcapping=None, attn_logit_softcapping=None)
    cls = {"qwen2": tf.Qwen2Config, "llama": tf.LlamaConfig, "qwen3": tf.Qwen3Config, "mistral": tf.MistralConfig}[arch]
    extra = {"head_dim": head_dim} if arch in ("qwen3", "mistral") else {}
    return cls(**common, rope_theta=10000.0, **extra)


def build_tiny_model(out_dir: str, arch: str = "qwen2", layers: int = 4, hidden: int = 128, heads: int = 4,
                     kv_heads: int = 2, intermediate: int = 256, vocab: int = 2048, seed: int = 0,
                     dtype: str = "bfloat16") -> str:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    if (out / "esamp_model.json").exists():
        return str(out)
    tok = build_tokenizer(vocab)
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id)
    cfg = _config(arch, common, hidden // heads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).save_pretrained(out)
    cfg_path = out / "config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_json.setdefault("rope_theta", 10000.0)
    cfg_path.write_text(json.dumps(cfg_json, indent=2, sort_keys=True))
    (out / "esamp_model.json").write_text(json.dumps({"name": f"tiny-{arch}", "seed": seed}))
    return str(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--arch", choices=ARCHS, default="qwen2")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    a = p.parse_args(argv)
    print(build_tiny_model(a.out_dir, arch=a.arch, layers=a.layers, hidden=a.hidden, vocab=a.vocab, seed=a.seed,
                           dtype=a.dtype))


if __name__ == "__main__":
    main()
