"""A tiny verifiable task for RL on a small model: sums of two digits, with a programmatic reward.

SmolLM2-135M-Instruct answers them right some of the time (measured on the ESamp server at T 1.0, 16 prompts x 8:
15 % right, 11 of 16 groups with both right and wrong answers; with numbers up to 49: 4 %, 5 of 16), so a group
of rollouts often has mixed rewards: the groups that give GRPO a learning signal. The reward is 1 when the last
integer of the completion is the sum, else 0.
"""
from __future__ import annotations

import random
import re
from typing import Dict, List

INSTRUCTION = "What is {a} + {b}? Reply with the number only."
_INT = re.compile(r"-?\d+")


def sum_prompts(count: int, seed: int = 0, low: int = 1, high: int = 9) -> List[Dict]:
    """``count`` conversational prompts (TRL's ``{"prompt": [messages], ...}`` rows) with their ``answer``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(low, high), rng.randint(low, high)
        rows.append({"prompt": [{"role": "user", "content": INSTRUCTION.format(a=a, b=b)}], "answer": a + b})
    return rows


def completion_text(completion) -> str:
    """TRL passes a conversational completion as ``[{"role": "assistant", "content": ...}]``."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def last_int(text: str):
    found = _INT.findall(text.replace(",", ""))
    return int(found[-1]) if found else None


def sum_reward(completions, answer, **_) -> List[float]:
    """TRL reward function: 1.0 when the completion's last integer is the sum."""
    return [float(last_int(completion_text(c)) == int(a)) for c, a in zip(completions, answer)]
