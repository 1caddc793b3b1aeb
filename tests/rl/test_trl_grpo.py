"""TRL's real GRPOTrainer trains SmolLM2 for 2 steps against a real ESamp server (CPU) through
``sglang_esamp.rl.trl``: after step 1 the server serves the trainer's weights, ESamp did the sampling, and TRL's
importance-sampling correction ran on the sampled logprobs."""
import math

import pytest
import requests
import torch

from tests.server_utils import running_server

pytestmark = pytest.mark.slow
N = 4
# SGLang (torch_native attention) and HF (sdpa), both float32 on CPU: measured max |difference| 1.1e-5 over the
# probe text; step 1 (lr 1e-4) moved the same logprobs by 1.5
LOGPROB_TOL = 2e-3
PROBE = [{"role": "user", "content": "What is 12 + 30? Reply with the number only."}]
PROBE_ANSWER = "The answer is 42."


def text_hash_reward(completions, **_):
    """Differs between any two different completions, so step 1 has a non-zero advantage and a gradient."""
    return [sum(map(ord, c[-1]["content"])) % 101 / 100.0 for c in completions]


def forward_logprobs(model, ids, start):
    """The model's log-probability of ``ids[i]`` for i >= start, at temperature 1."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return lp[start - 1:]


def server_logprobs(base, ids, start):
    body = {"input_ids": ids, "return_logprob": True, "logprob_start_len": 0,
            "sampling_params": {"max_new_tokens": 1, "temperature": 1.0}}
    r = requests.post(base + "/generate", json=body, timeout=300)
    assert r.status_code == 200, r.text
    got = r.json()["meta_info"]["input_token_logprobs"]       # entry i: token i given the tokens before it
    assert len(got) == len(ids) and got[0][0] is None
    return torch.tensor([t[0] for t in got[start:]])


def test_grpo_trainer_trains_against_the_esamp_server(smollm2_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sglang_esamp.rl.tasks import sum_prompts
    from sglang_esamp.rl.trl import ESampRollout, attach

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    prompt = tok.encode(tok.apply_chat_template(PROBE, add_generation_prompt=True, tokenize=False),
                        add_special_tokens=False)
    probe = prompt + tok.encode(PROBE_ANSWER, add_special_tokens=False)
    initial = forward_logprobs(model, probe, len(prompt))
    after_step_1 = {}

    class AfterStep1(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 1:
                after_step_1["lp"] = forward_logprobs(model, probe, len(prompt))

    config = GRPOConfig(output_dir=str(tmp_path / "trainer"), max_steps=2, learning_rate=1e-4,
                        per_device_train_batch_size=N, num_generations=N, max_completion_length=8,
                        vllm_importance_sampling_mode="token_truncate", logging_steps=1, save_strategy="no",
                        report_to="none", use_cpu=True, bf16=False, seed=0, disable_tqdm=True)
    with running_server(["--dtype", "float32", "--esamp-bank-slots", "2", "--max-total-tokens", "4096",
                         "--log-level", "warning"],
                        tmp_path / "server.log") as (base, _proc):
        rollout = ESampRollout(base, esamp={"beta": 0.8, "init": "random", "logprobs": "sampled"}, seed=7)
        try:
            before = rollout.stats()["total"]
            trainer = GRPOTrainer(model=model, reward_funcs=text_hash_reward, args=config,
                                  train_dataset=Dataset.from_list(sum_prompts(2)), processing_class=tok,
                                  rollout_func=rollout, callbacks=[AfterStep1()])
            attach(trainer, rollout)
            trainer.train()
            after = rollout.stats()["total"]
            served = server_logprobs(base, probe, len(prompt))
        finally:
            rollout.close()

    # the weights: pushed once (before step 2's rollouts), and the server's logprobs are the step-1 trainer's
    assert rollout.pushes == [1]
    assert after["weight_updates"] - before.get("weight_updates", 0) == 1
    moved = (after_step_1["lp"] - initial).abs().max().item()
    off = (served - after_step_1["lp"]).abs().max().item()
    print(f"probe logprobs: step 1 moved them by {moved:.2e}; server vs step-1 trainer {off:.2e}")
    assert moved > 10 * LOGPROB_TOL, moved                     # step 1 changed the model measurably
    assert off < LOGPROB_TOL, off
    # ESamp did the sampling: the distiller trained and reweighted the rollouts' rows (2 requests x N x <= 8 tokens)
    assert after["updates"] - before.get("updates", 0) > 0
    assert after["rows_trained"] - before.get("rows_trained", 0) > 0
    assert after["candidate_rows_reweighted"] - before.get("candidate_rows_reweighted", 0) > 0
    # TRL's importance-sampling correction ran on the sampled logprobs, with finite ratios, at both steps
    logged = [e for e in trainer.state.log_history if "reward" in e]
    assert len(logged) == 2
    for e in logged:
        ratios = [e[f"sampling/importance_sampling_ratio/{k}"] for k in ("min", "mean", "max")]
        assert all(math.isfinite(r) and r > 0 for r in ratios), ratios
        assert ratios[0] <= ratios[1] <= ratios[2] <= config.vllm_importance_sampling_clip_max
        assert e["sampling/sampling_logp_difference/mean"] > 0   # ESamp's proposal is not the policy
