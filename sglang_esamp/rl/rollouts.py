"""From a trainer's prompt batch to ESamp requests, and from the answers to per-completion fields.

A GRPO batch lists each prompt ``n`` times in a row (TRL's ``RepeatSampler``). ``group_prompts`` folds the
repeats into one request per prompt with ``n`` parallel samples -- the ``n`` siblings that share one distiller,
which is what ESamp is for -- and ``completion_fields`` unfolds the answers back into the batch's order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

SIGNALS = ("novelty", "logit_shift", "candidates", "reweighted")   # meta_info.esamp.tokens columns (docs/rl.md)


def group_prompts(prompts: Sequence[Any], n: int) -> List[Any]:
    """The distinct prompts of a batch in which every prompt appears ``n`` times in a row."""
    if n < 1 or len(prompts) % n:
        raise ValueError(f"a batch of {len(prompts)} prompts is not made of groups of {n}")
    groups = [prompts[i] for i in range(0, len(prompts), n)]
    for g, first in enumerate(groups):
        if any(prompts[g * n + j] != first for j in range(1, n)):
            raise ValueError(f"prompt {g * n} is not repeated {n} times in a row (num_generations)")
    return groups


def prompt_token_ids(tokenizer, prompt: Any, chat_template_kwargs: Optional[Mapping] = None) -> List[int]:
    """A conversational prompt (a list of messages) through the chat template, a plain string as it is."""
    if isinstance(prompt, str):
        text = prompt
    else:
        text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False,
                                             **dict(chat_template_kwargs or {}))
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass(frozen=True)
class Sampling:
    """What every rollout request carries: SGLang's sampling parameters and the request's ``esamp`` value."""
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    esamp: Optional[Mapping] = None          # the ``esamp`` request field; None sends none (SGLang's own sampler)
    signals: bool = True                     # ask for the per-token signals (esamp.return_tokens)

    def request(self, n: int, seed: int) -> Dict[str, Any]:
        sp = {"n": n, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
              "top_k": self.top_k, "min_p": self.min_p, "repetition_penalty": self.repetition_penalty,
              "sampling_seed": seed}
        if self.esamp is not None:
            esamp = dict(self.esamp)
            if self.signals:
                esamp["return_tokens"] = True
            sp["esamp"] = esamp
        return sp


def completion_fields(outputs: Sequence[Mapping], prompt_ids: Sequence[List[int]], n: int) -> Dict[str, list]:
    """The flat answer list of a batched request (prompt-major, ``n`` per prompt) as per-completion columns.

    Checks the order it relies on: output ``g * n + j`` answers prompt ``g`` (its prompt length) and is sibling
    ``j`` (its ESamp seed stream, where the server reports one).
    """
    if len(outputs) != len(prompt_ids) * n:
        raise RuntimeError(f"expected {len(prompt_ids) * n} completions, the server returned {len(outputs)}")
    fields: Dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
    signals: Dict[str, list] = {f"esamp_{k}": [] for k in SIGNALS}
    have_signals = True
    for k, out in enumerate(outputs):
        g, j = divmod(k, n)
        meta = out["meta_info"]
        if meta.get("prompt_tokens") not in (None, len(prompt_ids[g])):
            raise RuntimeError(f"completion {k} does not answer prompt {g}: {meta['prompt_tokens']} prompt tokens")
        esamp = meta.get("esamp") or {}
        if esamp.get("seed_stream") not in (None, j):
            raise RuntimeError(f"completion {k} is sibling {esamp['seed_stream']}, expected {j}")
        ids = list(out["output_ids"])
        logprobs = [float(t[0]) for t in meta["output_token_logprobs"]]
        if len(logprobs) != len(ids):
            raise RuntimeError(f"completion {k}: {len(ids)} tokens but {len(logprobs)} logprobs")
        fields["prompt_ids"].append(list(prompt_ids[g]))
        fields["completion_ids"].append(ids)
        fields["logprobs"].append(logprobs)
        tokens = esamp.get("tokens")
        have_signals = have_signals and tokens is not None
        for key in SIGNALS:
            signals[f"esamp_{key}"].append(list(tokens[key]) if tokens else None)
    if have_signals:
        fields.update(signals)
    return fields
