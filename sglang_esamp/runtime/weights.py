"""ESamp after SGLang replaces the served weights (RL trainers do this between rollout batches).

AFTER hooks on the model runner's ``WeightUpdater`` (``update_weights_from_disk``, ``update_weights_from_tensor``,
``load_weights_from_distributed``, ``update_weights_from_ipc``, ``end_weight_update``; listed in
``sglang_esamp.hooks``):
  1. the LM head is read again from the model (a loader may replace the parameter object instead of copying into
     it, and ESamp's candidate logits must use the head the LLM now uses);
  2. a warm start made for the old weights stops being used. From disk, the new checkpoint's fingerprint
     (``models.model_fingerprint``, which hashes the weights) is compared with the warm start's and the warm start
     is kept only if it matches; from tensors, IPC or a distributed broadcast the new weights are unknown, so it is
     dropped. Dropping logs a warning and counts ``warm_starts_dropped``; groups that start afterwards get a random
     init (their ``meta_info.esamp.init`` says ``random``); live groups keep their distillers, which go on
     adapting online.
Counted: ``weight_updates``. ``lm_head_digest`` (in the runtime's snapshot) identifies the head ESamp reads.
A failed update is treated as a change too: SGLang says such weights may be partially updated.
"""
from __future__ import annotations


def _runtime_for(updater):
    from .runtime import current_runtime

    rt = current_runtime()
    get_runner = getattr(updater, "get_model_runner", None)
    if rt is None or get_runner is None or get_runner() is not rt.model_runner:
        return None   # no ESamp, or a draft model's updater
    return rt


def after_disk_update(result, updater, *args, **kwargs):
    rt = _runtime_for(updater)
    if rt is not None:
        model_path = args[0] if args else kwargs.get("model_path")
        ok = bool(result[0]) if isinstance(result, tuple) and result else False
        rt.weights_changed(f"update_weights_from_disk({model_path})", new_model_dir=model_path if ok else None)
    return result


def after_tensor_update(result, updater, *args, **kwargs):
    rt = _runtime_for(updater)
    if rt is not None:
        rt.weights_changed("an in-memory weight update (tensor / IPC / distributed)", new_model_dir=None)
    return result


def after_end_update(result, updater, *args, **kwargs):
    """The end of a weight-update session post-processes the weights (it may repack them): read the head again."""
    rt = _runtime_for(updater)
    if rt is not None:
        rt.refresh_lm_head()
    return result
