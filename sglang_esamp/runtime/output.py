"""``meta_info.esamp`` on every response of an ESamp request, through SGLang's customized-output extension.

Scheduler side: ``ESampOutputStreamer`` (selected by hooking ``Scheduler.get_output_streamer_class``) adds one
request-level value per emitted request under the key ``esamp``: ``{"beta", "group", "slot", "fallback", "steps",
"rows_trained", "mean_novelty", "last_loss"}`` (None for requests without ESamp). A finishing request reports the
stats its group had when it left (the group's slot may already be released by then).
Tokenizer side: SGLang accumulates customized values into lists; ``set_meta_info`` makes ``meta_info.esamp`` the
latest dict instead.
"""
from __future__ import annotations

from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

from .runtime import current_runtime

KEY = "esamp"


class ESampOutputStreamer(SchedulerOutputStreamer):
    has_additional_customized_info = True

    def build_additional_customized_info(self, reqs):
        rt = current_runtime()
        values = []
        for req in reqs:
            info = getattr(req, "_esamp_info", None) if rt is not None else None
            values.append(rt.groups.stats_for(info) if info else None)
        return {KEY: values}

    def is_request_level_customized_info_key(self, key: str) -> bool:
        return key == KEY or super().is_request_level_customized_info_key(key)


def output_streamer_class(result, *args, **kwargs):
    """AFTER hook on Scheduler.get_output_streamer_class."""
    if result is SchedulerOutputStreamer:
        return ESampOutputStreamer
    if issubclass(result, ESampOutputStreamer):
        return result
    # another extension already chose a subclass: combine both
    return type(f"ESamp{result.__name__}", (ESampOutputStreamer, result), {})


def set_meta_info(original, self, meta_info, state, customized_info, index, finish_reason, *args, **kwargs):
    """AROUND hook on TokenizerManager.update_request_meta_info."""
    if KEY in customized_info:
        value = customized_info[KEY][index]
        if value is not None:
            meta_info[KEY] = value
        customized_info = {k: v for k, v in customized_info.items() if k != KEY}
        if not customized_info:
            return None
    return original(self, meta_info, state, customized_info, index, finish_reason, *args, **kwargs)
