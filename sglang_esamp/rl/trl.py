"""TRL's ``GRPOTrainer`` with ESamp rollouts (docs/rl.md, "Training with TRL").

    rollout = ESampRollout("http://127.0.0.1:30000", esamp={"beta": 0.8, "init": "random", "logprobs": "sampled"})
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data, rollout_func=rollout)
    attach(trainer, rollout)   # TRL's importance-sampling correction against the logprobs ESamp returns
    trainer.train()

``ESampRollout`` is the ``rollout_func(prompts, trainer)`` TRL calls once per generation batch. It folds the batch's
``num_generations`` repeats of each prompt into one request with ``n = num_generations`` (the siblings share one
distiller), applies the chat template, gives every request a ``sampling_seed`` (``seed`` + a running request
count: a rerun regenerates the same rollouts), takes temperature / top-p / top-k / min-p / repetition penalty /
max_completion_length from the trainer's ``GRPOConfig``, and returns ``prompt_ids``, ``completion_ids``,
``logprobs`` and, with ``signals``, the per-token ESamp columns as extra fields ``esamp_novelty``,
``esamp_logit_shift``, ``esamp_candidates``, ``esamp_reweighted`` (TRL hands extra fields to the reward
functions as keyword arguments, one entry per completion). Before generating it pushes the trainer's weights to
the server whenever ``trainer.state.global_step`` has moved since the last push.

``attach``: TRL applies its importance-sampling correction (``vllm_importance_sampling_*`` in ``GRPOConfig``) to
the rollout logprobs only when ``trainer.use_vllm`` is set, and on the ``rollout_func`` path the only other thing
that flag does is call ``trainer.vllm_generation.sync_weights()`` when the step moved. ``attach`` sets the flag and
puts a weight pusher for the ESamp backend in that slot; nothing of vLLM is imported or started.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from .backends import backend_for
from .rollouts import Sampling, completion_fields, group_prompts, prompt_token_ids

DEFAULT_ESAMP = {"logprobs": "sampled"}    # the behaviour policy's logprobs: what TRL's correction needs


class ESampRollout:
    """``rollout_func`` for ``GRPOTrainer`` against an ESamp server URL or an in-process ``sglang_esamp.Engine``.

    ``esamp``: the request's ``esamp`` field (``{"beta": 0, ...}`` for plain rollouts through the same seeded
    sampler; ``None`` sends no field: SGLang's own sampler, unseeded on CPU). ``sampling``: SGLang sampling
    parameters that override those taken from the trainer's config.
    The server must start from the trainer's initial weights: the first push happens after the first step.
    """

    def __init__(self, target: Any, esamp: Optional[Mapping] = DEFAULT_ESAMP, seed: int = 0, signals: bool = True,
                 sampling: Optional[Mapping] = None, weights_dir: Optional[str] = None):
        self.backend = backend_for(target, weights_dir)
        self.esamp = None if esamp is None else dict(esamp)
        self.seed = int(seed)
        self.signals = signals
        self.overrides = dict(sampling or {})
        self.requests = 0                      # requests sent so far: the next one's seed is seed + requests
        self.synced_step = 0                   # the trainer step whose weights the server holds
        self.pushes: List[int] = []            # the steps pushed, in order

    def sampling_for(self, trainer) -> Sampling:
        a = trainer.args
        params = {"max_new_tokens": a.max_completion_length, "temperature": a.temperature,
                  "top_p": a.top_p if a.top_p is not None else 1.0,
                  "top_k": a.top_k if a.top_k else -1,
                  "min_p": a.min_p or 0.0, "repetition_penalty": a.repetition_penalty,
                  **self.overrides}
        return Sampling(esamp=self.esamp, signals=self.signals and self.esamp is not None, **params)

    def sync(self, trainer) -> bool:
        """Push the trainer's weights if its step moved since the last push; whether it pushed."""
        step = trainer.state.global_step
        if step == self.synced_step:
            return False
        self.backend.load_weights(trainer.accelerator.unwrap_model(trainer.model))
        self.synced_step = step
        self.pushes.append(step)
        return True

    def __call__(self, prompts: List[Any], trainer) -> Dict[str, list]:
        self.sync(trainer)
        n = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        groups = group_prompts(prompts, n)
        kwargs = getattr(trainer.args, "chat_template_kwargs", None)
        prompt_ids = [prompt_token_ids(trainer.processing_class, p, kwargs) for p in groups]
        sampling = self.sampling_for(trainer)
        params = [sampling.request(n, self.seed + self.requests + g) for g in range(len(groups))]
        self.requests += len(groups)
        return completion_fields(self.backend.generate(prompt_ids, params), prompt_ids, n)

    def stats(self) -> dict:
        return self.backend.stats()

    def close(self) -> None:
        self.backend.close()


class _WeightPush:
    """Stands where TRL keeps its vLLM client: TRL calls ``sync_weights`` when the step moved."""

    def __init__(self, rollout: ESampRollout, trainer):
        self.rollout, self.trainer = rollout, trainer

    def sync_weights(self):
        self.rollout.sync(self.trainer)


def attach(trainer, rollout: ESampRollout) -> None:
    """Turn on TRL's importance-sampling correction for ``rollout``'s logprobs (see the module's docstring).

    Whether and how the correction applies is ``GRPOConfig``'s: ``vllm_importance_sampling_correction``,
    ``_mode``, ``_clip_min``/``_clip_max``; TRL logs the ratios as ``sampling/importance_sampling_ratio/*``.
    """
    if trainer.rollout_func is not rollout:
        raise ValueError("attach(trainer, rollout): the trainer was not built with this rollout_func")
    if getattr(trainer, "vllm_generation", None) is not None:
        raise ValueError("the trainer already generates with vLLM")
    if not hasattr(trainer, "vllm_importance_sampling_correction"):   # read from TRL 1.16 (the rl extra's pin)
        raise RuntimeError("this TRL's GRPOTrainer has no vllm_importance_sampling_correction: attach() is written "
                           "against trl==1.16.0")
    trainer.vllm_generation = _WeightPush(rollout, trainer)
    trainer._last_loaded_step = trainer.state.global_step
    trainer.use_vllm = True
