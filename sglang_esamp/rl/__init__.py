"""ESamp rollouts for RL trainers (docs/rl.md).

  rollouts.py  prompts -> token ids (the chat template), request groups, and the server's answers -> per-completion
               fields (prompt/completion ids, logprobs, per-token ESamp signals); no trainer, no SGLang
  backends.py  where the requests go: an ESamp server URL or an in-process ``sglang_esamp.Engine``, and how the
               trainer's weights reach it (SGLang's ``/update_weights_from_disk`` / ``update_weights_from_tensor``)
  trl.py       TRL's ``GRPOTrainer``: ``ESampRollout`` is its ``rollout_func``; ``attach`` turns on TRL's
               importance-sampling correction against the logprobs ESamp returns
Importing this package imports neither TRL nor SGLang.
"""
