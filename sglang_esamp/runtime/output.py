"""``meta_info.esamp`` on every response of an ESamp request, through SGLang's customized-output extension.

Scheduler side (here): ``ESampOutputStreamer`` (selected by hooking ``Scheduler.get_output_streamer_class``) adds
one request-level value per emitted request under the key ``esamp`` (``GroupMembers.report``; None for requests
without ESamp). A finishing request reports the stats its group had when it left (the group's slot may already be
released by then). The tokenizer side (``serve.tokenizer_hooks.set_meta_info``) keeps the latest dict.
"""
from __future__ import annotations

from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

from ..wire.request import META_KEY
from .runtime import current_runtime


class ESampOutputStreamer(SchedulerOutputStreamer):
    has_additional_customized_info = True

    def build_additional_customized_info(self, reqs):
        rt = current_runtime()
        values = []
        for req in reqs:
            m = rt.members.member_of(req) if rt is not None else None   # also a request that never decoded
            values.append(rt.members.report(m) if m else None)
        return {META_KEY: values}

    def is_request_level_customized_info_key(self, key: str) -> bool:
        return key == META_KEY or super().is_request_level_customized_info_key(key)


def output_streamer_class(result, *args, **kwargs):
    """AFTER hook on Scheduler.get_output_streamer_class."""
    if result is SchedulerOutputStreamer:
        return ESampOutputStreamer
    if issubclass(result, ESampOutputStreamer):
        return result
    # another extension already chose a subclass: combine both
    return type(f"ESamp{result.__name__}", (ESampOutputStreamer, result), {})
