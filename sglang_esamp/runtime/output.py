"""``meta_info.esamp`` on every response of an ESamp request, through SGLang's customized-output extension.

Scheduler side (here): ``ESampOutputStreamer`` (chosen by the ``output_streamer_class`` shim on
``Scheduler.get_output_streamer_class``) adds one request-level value per emitted request under the key ``esamp``
(``shims.meta_info`` -> ``Members.report``; None for requests without ESamp). A finishing request reports the
stats its group had when it left (the group's slot may already be released by then). The tokenizer side
(``serve.tokenizer_hooks.set_meta_info``) keeps the latest dict.
"""
from __future__ import annotations

from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

from ..wire.request import META_KEY


class ESampOutputStreamer(SchedulerOutputStreamer):
    has_additional_customized_info = True
    meta_info_of = staticmethod(lambda reqs: [None] * len(reqs))   # set by ``streamer_class`` (the shim's)

    def build_additional_customized_info(self, reqs):
        return {META_KEY: self.meta_info_of(reqs)}

    def is_request_level_customized_info_key(self, key: str) -> bool:
        return key == META_KEY or super().is_request_level_customized_info_key(key)


def streamer_class(chosen, meta_info_of):
    """Our streamer for SGLang's choice ``chosen`` (combined with another extension's subclass if there is one),
    reporting ``meta_info_of(reqs)``."""
    if issubclass(chosen, ESampOutputStreamer):
        return chosen
    bases = (ESampOutputStreamer,) if chosen is SchedulerOutputStreamer else (ESampOutputStreamer, chosen)
    return type(f"ESamp{chosen.__name__}", bases, {"meta_info_of": staticmethod(meta_info_of)})
