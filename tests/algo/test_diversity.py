"""Repeated siblings: are n samples of one prompt more diverse with ESamp than without (SmolLM2, CPU)?

Common random numbers: every arm runs the same groups with the same seeds, so each group sees the same Gumbel noise
in every arm and the arms differ only by the rule. The setting (prompt, min-p 0.1, n, length) was chosen on seeds
0-5 in exploration; these tests use fresh seeds. Diversity = distinct-2 over the group's samples (tokens before
EOS), compared pairwise per group. Three arms: plain sampling, ESamp (beta 0.25, random init, online), and the
sharpening control ((1+beta)*l/T on the same candidates, no distiller term).
"""
import statistics

import pytest

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.reference import ReferenceDecoder, SamplingSettings

pytestmark = pytest.mark.slow

PROMPT = "Write a one-sentence story."
SEEDS = list(range(100, 108))
N, TOKENS, BETA = 4, 32, 0.25
SAMPLING = SamplingSettings(temperature=1.0, min_p=0.1)


def distinct2(rows, eos):
    grams = []
    for r in rows.tolist():
        r = r[:r.index(eos)] if eos in r else r
        grams += [tuple(r[i:i + 2]) for i in range(len(r) - 1)]
    return len(set(grams)) / max(1, len(grams))


@pytest.fixture(scope="module")
def arms(smollm2, chat_ids):
    """Lazily computed arms: arm name -> per-group distinct-2 (each arm costs ~10-20 s on a shared CPU)."""
    model, tok = smollm2
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    dec = ReferenceDecoder(model, ESampConfig())
    ids = chat_ids(tok, PROMPT)
    kwargs = {"plain": dict(esamp=False), "esamp": dict(esamp=True), "sharpen": dict(sharpen_only=True)}
    cache = {}

    def get(name):
        if name not in cache:
            res = dec.generate_groups(ids, N, TOKENS, seeds=SEEDS, beta=BETA, sampling=SAMPLING, eos_token_id=eos,
                                      stop_at_eos=True, **kwargs[name])
            cache[name] = [distinct2(r.tokens, eos) for r in res]
        return cache[name]
    return get


def _compare(a, b, label):
    diffs = [x - y for x, y in zip(a, b)]
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
    print(f"\n{label}: distinct-2 {statistics.mean(a):.4f} vs {statistics.mean(b):.4f}, paired diff {mean:+.4f} "
          f"± {se:.4f} (SE), wins {sum(d > 0 for d in diffs)}/{len(diffs)}; seeds {SEEDS}, n={N}, {TOKENS} tokens")
    return mean


def test_esamp_is_more_diverse_than_its_sharpening_control(arms):
    """The novelty term, not the (1+beta) sharpening, is what adds diversity."""
    assert _compare(arms("esamp"), arms("sharpen"), "ESamp vs sharpening control") > 0


def test_esamp_is_more_diverse_than_plain_sampling(arms):
    assert _compare(arms("esamp"), arms("plain"), "ESamp vs plain sampling") > 0
