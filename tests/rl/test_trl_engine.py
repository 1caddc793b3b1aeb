"""The same adapter on an in-process ``sglang_esamp.Engine``: TRL's GRPOTrainer for 2 steps, the weights pushed
through ``Engine.update_weights_from_tensor`` after step 1 (the Engine's LM head is then bit for bit the
trainer's), ESamp sampling the rollouts (SmolLM2, CPU)."""
import math

import pytest
import torch

pytestmark = pytest.mark.slow
N = 2


def text_hash_reward(completions, **_):
    """Differs between any two different completions: every step has a gradient."""
    return [sum(map(ord, c[-1]["content"])) % 101 / 100.0 for c in completions]


def test_grpo_trainer_with_an_in_process_engine(smollm2_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    import sglang_esamp
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sglang_esamp.runtime.digest import tensor_digest
    from sglang_esamp.rl.tasks import sum_prompts
    from sglang_esamp.rl.trl import ESampRollout, attach

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    heads = {}

    class Head(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            heads[state.global_step] = model.get_output_embeddings().weight.detach().clone()

    config = GRPOConfig(output_dir=str(tmp_path / "trainer"), max_steps=2, learning_rate=1e-4,
                        per_device_train_batch_size=N, num_generations=N, max_completion_length=6,
                        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
                        disable_tqdm=True)
    llm = sglang_esamp.Engine(model_path=smollm2_path, esamp={"bank_slots": 2}, dtype="float32",
                              log_level="error", max_total_tokens=4096)
    try:
        rollout = ESampRollout(llm, esamp={"beta": 0.8, "init": "random", "logprobs": "sampled"}, seed=3)
        trainer = GRPOTrainer(model=model, reward_funcs=text_hash_reward, args=config,
                              train_dataset=Dataset.from_list(sum_prompts(2)), processing_class=tok,
                              rollout_func=rollout, callbacks=[Head()])
        attach(trainer, rollout)
        trainer.train()
        stats = rollout.stats()
    finally:
        llm.shutdown()
    rank = stats["ranks"][0]
    assert rollout.pushes == [1] and stats["total"]["weight_updates"] == 1
    dtype = getattr(torch, rank["lm_head_dtype"].replace("torch.", ""))
    assert rank["lm_head_digest"] == tensor_digest(heads[1].to(dtype)) != tensor_digest(heads[2].to(dtype))
    assert stats["total"]["updates"] > 0 and stats["total"]["candidate_rows_reweighted"] > 0
    for e in (e for e in trainer.state.log_history if "reward" in e):
        assert math.isfinite(e["sampling/importance_sampling_ratio/mean"])
