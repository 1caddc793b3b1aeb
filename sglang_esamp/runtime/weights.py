"""ESamp after SGLang replaces the served weights (RL trainers do this between rollout batches).

The shims on the model runner's ``WeightUpdater`` (``update_weights_from_disk``, ``update_weights_from_tensor``,
``load_weights_from_distributed``, ``update_weights_from_ipc``, ``end_weight_update``; ``shims.py``) call:
  1. ``refresh_lm_head``: the LM head is read again from the model (a loader may replace the parameter object
     instead of copying into it, and ESamp's candidate logits must use the head the LLM now uses);
  2. ``weights_changed``: besides that, a warm start made for the old weights stops being used. From disk, the new
     checkpoint's fingerprint (``models.model_fingerprint``, which hashes the weights) is compared with the warm
     start's and the warm start is kept only if it matches; from tensors, IPC or a distributed broadcast the new
     weights are unknown, so it is dropped. Dropping logs a warning and counts ``warm_starts_dropped``; groups that
     start afterwards get a random init (their ``meta_info.esamp.init`` says ``random``); live groups keep their
     distillers, which go on adapting online.
Counted: ``weight_updates``. ``lm_head_digest`` (in the runtime's snapshot) identifies the head ESamp reads.
A failed update is treated as a change too: SGLang says such weights may be partially updated.
"""
from __future__ import annotations

import logging
from typing import Optional

from .esamp_runtime import ESampRuntime, lm_head_of

logger = logging.getLogger("sglang_esamp")


def refresh_lm_head(rt: ESampRuntime) -> None:
    """Read the LM head from the model again (a weight loader may have replaced the parameter object)."""
    weight, bias = lm_head_of(rt.model_runner.model)
    rt.core.set_lm_head(weight, bias)
    rt.forget_lm_head_digest()


def weights_changed(rt: ESampRuntime, what: str, new_model_dir: Optional[str]) -> None:
    """After a weight update: read the LM head again; drop a warm start that no longer fits the weights
    (``new_model_dir``: the checkpoint now served, None = unknown in-memory weights)."""
    rt.counters.add("weight_updates")
    refresh_lm_head(rt)
    if rt.core.bank.warm_start is None:
        return
    if new_model_dir is not None and rt.warm_start_model is not None:
        from ..algo.distiller.warm_start import WarmStartMismatch, check_metadata

        try:
            check_metadata({"model": rt.warm_start_model}, rt.config.warm_start,
                           model_dir_or_fingerprint=new_model_dir)
            return   # the same weights (e.g. reloaded): the warm start still fits
        except WarmStartMismatch as e:
            reason = str(e)
    else:
        reason = "the new weights are not a checkpoint the warm start can be checked against"
    if rt.core.drop_warm_start():
        rt.counters.add("warm_starts_dropped")
        logger.warning("ESamp: warm start dropped after %s (%s); new groups start from random init", what, reason)
