"""Repeated siblings: are n samples of one prompt more diverse with ESamp than without (SmolLM2, CPU)?

Common random numbers: every arm runs the same groups with the same seeds, so each group sees the same Gumbel noise
in every arm and the arms differ only by the rule. Three arms: plain sampling, ESamp (beta 0.25, paper preset,
random init, online), and the sharpening control ((1+beta)*l/T on the same candidates, no distiller term).
Diversity = distinct-2 over the group's n samples (tokens before EOS), compared per group (paired).

Setting: a short creative prompt with min-p 0.1 (the model is uncertain but a filter is on, as in DESIGN's
measurement), T = 1, n = 8 siblings, 32 new tokens, 16 groups (seeds 200-215), model in bf16 for speed. The
prompt/filter were picked on exploration seeds 0-5; the seed set is the largest that keeps each test near a
minute. These are honest assertions ("measurably" = paired mean gain > 2 standard errors): on SmolLM2 with a
randomly initialised distiller and ~32 decode steps the distiller barely learns (its loss falls ~5-15 %), and in
every run so far ESamp was not measurably more diverse than plain sampling (differences within +-1 SE or
negative), while it was consistently, but not always significantly, more diverse than its sharpening control.
The tests state the claims and print the numbers; they fail while the claims do not hold. With the shipped
warm-start distiller (sglang_esamp/warm_starts) the claims do hold: those two tests are plain assertions.
"""
import statistics

import pytest

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.reference import ReferenceDecoder, SamplingSettings
from sglang_esamp.algo.warm_start import load_for_server
from sglang_esamp.models import resolve_model
from sglang_esamp.warm_starts import shipped_path

pytestmark = pytest.mark.slow

PROMPT = "Write a one-sentence story."
SEEDS = list(range(200, 216))
N, TOKENS, BETA = 8, 32, 0.25
SAMPLING = SamplingSettings(temperature=1.0, min_p=0.1)


def distinct2(rows, eos):
    grams = []
    for r in rows.tolist():
        r = r[:r.index(eos)] if eos in r else r
        grams += [tuple(r[i:i + 2]) for i in range(len(r) - 1)]
    return len(set(grams)) / max(1, len(grams))


@pytest.fixture(scope="module")
def arms(smollm2_bf16, chat_ids):
    """Lazily computed arms: arm name -> per-group distinct-2."""
    model, tok = smollm2_bf16
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = ESampConfig(bank_slots=len(SEEDS))
    dec = ReferenceDecoder(model, cfg)
    warm = load_for_server(shipped_path("smollm2-135m-instruct", cfg.distiller, cfg.taps),
                           model_dir=resolve_model("smollm2-135m-instruct"),
                           shape=cfg.distiller_shape(model.config.hidden_size), taps=cfg.taps)
    warm_dec = ReferenceDecoder(model, cfg, warm_start_state=warm)
    ids = chat_ids(tok, PROMPT)
    kwargs = {"plain": dict(esamp=False), "esamp": dict(esamp=True), "sharpen": dict(sharpen_only=True),
              "esamp_warm": dict(esamp=True)}
    cache = {}

    def get(name):
        if name not in cache:
            res = (warm_dec if name == "esamp_warm" else dec).generate_groups(ids, N, TOKENS, seeds=SEEDS, beta=BETA, sampling=SAMPLING, eos_token_id=eos,
                                      stop_at_eos=True, **kwargs[name])
            cache[name] = [distinct2(r.tokens, eos) for r in res]
            if name == "esamp":
                losses = [s.losses[0] for s in res[0].steps if s.losses]
                print(f"\n[esamp] group 0 loss: first {losses[0]:.0f}, last {losses[-1]:.0f} "
                      f"({len(losses)} updates); counters: {res[0].stats}")
        return cache[name]
    return get


def _compare(a, b, label):
    diffs = [x - y for x, y in zip(a, b)]
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
    print(f"\n{label}: distinct-2 {statistics.mean(a):.4f} vs {statistics.mean(b):.4f}, paired diff {mean:+.4f} "
          f"± {se:.4f} (SE), wins {sum(d > 0 for d in diffs)}/{len(diffs)}; seeds {SEEDS[0]}-{SEEDS[-1]}, "
          f"n={N}, {TOKENS} tokens, min-p 0.1, beta {BETA}")
    return mean, se


NOT_YET = ("measured on SmolLM2 with a random-init distiller over 32 decode steps: ESamp - plain distinct-2 = "
           "+0.0030 ± 0.0103 (16 groups, bf16) and -0.0093 ± 0.0067 (24 groups, fp32); ESamp - sharpening control "
           "+0.0136 ± 0.0094 and +0.0062 ± 0.0041. The claim does not hold at this scale yet (see the issue note); "
           "strict: the day it holds, this xfail turns red and must be removed.")


@pytest.mark.xfail(strict=True, reason=NOT_YET)
def test_esamp_is_measurably_more_diverse_than_plain_sampling(arms):
    """The paper's claim at this scale; "measurably" = the paired mean gain exceeds two standard errors."""
    mean, se = _compare(arms("esamp"), arms("plain"), "ESamp vs plain sampling")
    assert mean > 2 * se, f"ESamp - plain distinct-2 = {mean:+.4f} ± {se:.4f}: not measurably more diverse"


@pytest.mark.xfail(strict=True, reason=NOT_YET)
def test_esamp_is_measurably_more_diverse_than_its_sharpening_control(arms):
    """The novelty term, not the (1+beta) sharpening, is what ESamp adds: it must beat sharpening alone."""
    mean, se = _compare(arms("esamp"), arms("sharpen"), "ESamp vs sharpening control")
    assert mean > 2 * se, f"ESamp - sharpening distinct-2 = {mean:+.4f} ± {se:.4f}: not measurably more diverse"


def test_warm_started_esamp_is_measurably_more_diverse_than_plain_sampling(arms):
    """With the shipped warm start (DESIGN §1: the lever that can work) the claim holds at this scale."""
    mean, se = _compare(arms("esamp_warm"), arms("plain"), "ESamp (warm start) vs plain sampling")
    assert mean > 2 * se, f"warm ESamp - plain distinct-2 = {mean:+.4f} ± {se:.4f}: not measurably more diverse"


def test_warm_start_beats_random_init_and_the_sharpening_control(arms):
    for other in ("esamp", "sharpen"):
        mean, se = _compare(arms("esamp_warm"), arms(other), f"ESamp (warm start) vs {other}")
        assert mean > 2 * se, f"warm ESamp - {other} distinct-2 = {mean:+.4f} ± {se:.4f}"
