"""sglang_esamp.rl.rollouts: a GRPO batch folded into ESamp requests and the answers unfolded into TRL's fields."""
import pytest

from sglang_esamp.rl.rollouts import Sampling, completion_fields, group_prompts, prompt_token_ids
from sglang_esamp.rl.tasks import last_int, sum_prompts, sum_reward


def test_group_prompts_folds_the_repeats_and_refuses_other_batches():
    a, b = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]
    assert group_prompts([a, a, a, b, b, b], 3) == [a, b]
    with pytest.raises(ValueError, match="groups of 3"):
        group_prompts([a, a, b, b], 3)
    with pytest.raises(ValueError, match="not repeated"):
        group_prompts([a, b, a, b], 2)


def test_chat_template_at_the_boundary(smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    ids = prompt_token_ids(tok, [{"role": "user", "content": "What is 2 + 3?"}])
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>assistant\n") and "What is 2 + 3?" in text
    assert prompt_token_ids(tok, "plain text") == tok.encode("plain text", add_special_tokens=False)


def test_request_carries_seed_n_and_esamp_with_signals():
    s = Sampling(max_new_tokens=8, temperature=0.8, min_p=0.1, esamp={"beta": 0.8, "logprobs": "sampled"})
    sp = s.request(4, 123)
    assert sp["n"] == 4 and sp["sampling_seed"] == 123 and sp["min_p"] == 0.1 and sp["max_new_tokens"] == 8
    assert sp["esamp"] == {"beta": 0.8, "logprobs": "sampled", "return_tokens": True}
    assert "esamp" not in Sampling(max_new_tokens=8, esamp=None).request(2, 1)


def _out(prompt_len, ids, stream, tokens=True):
    meta = {"prompt_tokens": prompt_len, "output_token_logprobs": [[-0.5, t, None] for t in ids],
            "esamp": {"seed_stream": stream}}
    if tokens:
        meta["esamp"]["tokens"] = {"novelty": [None] + [1.0] * (len(ids) - 1), "logit_shift": [0.0] * len(ids),
                                   "candidates": [3] * len(ids), "reweighted": [False] * len(ids)}
    return {"output_ids": ids, "meta_info": meta}


def test_completion_fields_unfold_in_batch_order_and_check_it():
    prompts = [[1, 2], [3, 4, 5]]
    outs = [_out(2, [7, 8], 0), _out(2, [9], 1), _out(3, [10, 11, 12], 0), _out(3, [13], 1)]
    f = completion_fields(outs, prompts, 2)
    assert f["prompt_ids"] == [[1, 2], [1, 2], [3, 4, 5], [3, 4, 5]]
    assert f["completion_ids"] == [[7, 8], [9], [10, 11, 12], [13]]
    assert f["logprobs"][2] == [-0.5] * 3 and f["esamp_candidates"][0] == [3, 3]
    with pytest.raises(RuntimeError, match="sibling"):
        completion_fields([outs[1], outs[0], *outs[2:]], prompts, 2)
    with pytest.raises(RuntimeError, match="does not answer prompt"):
        completion_fields([*outs[2:], *outs[:2]], prompts, 2)
    with pytest.raises(RuntimeError, match="expected 4"):
        completion_fields(outs[:3], prompts, 2)
    no_signals = completion_fields([_out(2, [7], 0, tokens=False), _out(2, [8], 1, tokens=False)], [[1, 2]], 2)
    assert "esamp_novelty" not in no_signals


def test_sum_task_reward():
    rows = sum_prompts(3, seed=5)
    assert rows == sum_prompts(3, seed=5) and all(2 <= r["answer"] <= 98 for r in rows)
    assert last_int("It is 1,234.") == 1234 and last_int("none") is None
    done = [[{"role": "assistant", "content": "The answer is 42"}], [{"role": "assistant", "content": "41"}]]
    assert sum_reward(done, [42, 42]) == [1.0, 0.0]
