"""Diversity on what the model generated: the code body without the echoed prompt, whole-text (chunked) MiniLM
embeddings, distinct-n per sample pair -- on fixed texts."""
import numpy as np
import pytest

from sglang_esamp.bench.quality.embeddings import chunk_spans, pool
from sglang_esamp.bench.quality.generated import code_body, generated_text
from sglang_esamp.bench.quality.metrics import distinct_n, distinct_n_pairs

PROMPT = '''from typing import List


def helper(x: int) -> int:
    return x + 1


def below_zero(operations: List[int]) -> bool:
    """ Detect if the balance falls below zero.
    >>> below_zero([1, 2, -4, 5])
    True
    """
'''

REPLY = '''Here is the function:

```python
from typing import List
import math


def helper(x: int) -> int:
    return x + 1


def below_zero(operations: List[int]) -> bool:
    """ Detect if the balance falls below zero.
    >>> below_zero([1, 2, -4, 5])
    True
    """
    balance = 0
    for op in operations:  # running sum
        balance += op
        if balance < 0:
            return True
    return False


print(below_zero([1, -2]))
```

The function keeps a running balance and returns True as soon as it drops below zero.
'''


def test_code_body_keeps_what_the_model_wrote_and_drops_the_echoed_prompt():
    body = code_body(REPLY, PROMPT, "below_zero")
    assert body == ("import math\n"
                    "balance = 0\nfor op in operations:  # running sum\n    balance += op\n    if balance < 0:\n"
                    "        return True\nreturn False\n"
                    "print(below_zero([1, -2]))")
    assert generated_text("humaneval", {"prompt": PROMPT, "entry_point": "below_zero"}, REPLY) == body
    assert generated_text("gsm8k", {}, REPLY) == REPLY                  # other tasks: the whole reply


def test_a_rewritten_helper_keeps_its_new_body_and_an_echo_only_reply_leaves_nothing():
    rewritten = REPLY.replace("    return x + 1", "    y = x\n    return y + 1")
    assert code_body(rewritten, PROMPT, "below_zero").splitlines()[1:3] == ["y = x", "return y + 1"]
    echo = "```python\n" + PROMPT + "```"
    assert code_body(echo, PROMPT, "below_zero") == ""


def test_code_that_does_not_parse_drops_the_lines_it_shares_with_the_prompt():
    broken = "```python\nfrom typing import List\n\ndef below_zero(operations: List[int]) -> bool:\n" \
             "    balance = 0\n    for op in operations\n        balance += op\n```"
    assert code_body(broken, PROMPT, "below_zero") == \
        "\n    balance = 0\n    for op in operations\n        balance += op".strip("\n")


def test_distinct_n_per_pair_does_not_grow_with_the_group():
    a, b = "the cat sat on the mat", "the cat sat on a rug"
    assert distinct_n_pairs([a, b], 2) == pytest.approx(distinct_n([a, b], 2)) == pytest.approx(7 / 10)
    # eight copies of the same two texts: pooled distinct-2 falls with n, the pairwise figure does not
    group = [a, b] * 4
    pairs = [distinct_n([x, y], 2) for i, x in enumerate(group) for y in group[i + 1:]]
    assert distinct_n_pairs(group, 2) == pytest.approx(np.mean(pairs))
    assert distinct_n(group, 2) == pytest.approx(7 / 40)
    assert distinct_n_pairs(group, 2) > 0.5
    assert distinct_n_pairs(["one", "two"], 2) is None                  # no bigram in any pair


def test_chunk_spans_cut_consecutive_windows_of_tokens():
    offsets = [(0, 3), (4, 7), (8, 9), (10, 15), (16, 20)]
    assert chunk_spans(offsets, 2) == [(0, 7, 2), (8, 15, 2), (16, 20, 1)]
    assert chunk_spans(offsets, 5) == [(0, 20, 5)]
    assert chunk_spans([], 4) == []
    with pytest.raises(ValueError):
        chunk_spans(offsets, 0)


def test_pool_is_the_token_weighted_mean_renormalised():
    e = np.array([[1.0, 0.0], [0.0, 1.0]])
    v = pool(e, [3, 1])
    assert v == pytest.approx(np.array([3.0, 1.0]) / np.sqrt(10.0))
    assert pool(e[:1], [7]) == pytest.approx(e[0])


@pytest.fixture(scope="module")
def embedder():
    from sglang_esamp.bench.quality.embeddings import Embedder

    return Embedder()


def test_chunked_embedding_sees_past_the_window_and_equals_the_plain_one_within_it(embedder):
    window = embedder.model.max_seq_length - 2
    head = " ".join(f"word{i % 50} is here." for i in range(150))          # longer than one window
    a, b = head + " The end is a story about a dog.", head + " Completely unrelated: quantum chromodynamics."
    assert len(embedder.spans(a)) >= 2 and sum(n for _, _, n in embedder.spans(a)) > window
    plain = embedder.encode([a, b])
    assert float(plain[0] @ plain[1]) == pytest.approx(1.0, abs=1e-5)   # the tails differ, truncation cuts them
    full = embedder.encode([a, b], chunked=True)
    assert float(full[0] @ full[1]) < 0.9999
    assert np.linalg.norm(full, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    short = ["a short reply", "another short one"]
    assert embedder.encode(short, chunked=True) == pytest.approx(embedder.encode(short), abs=1e-5)
