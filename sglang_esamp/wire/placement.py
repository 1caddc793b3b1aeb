"""Which data-parallel rank serves a distiller group: every sibling of a group and every request of a session must
reach the rank that holds its distiller.

The tokenizer hook computes the rank from the request's routing key -- its session id if it has one, else its group
key (the request id for the ``n`` samples of one request, the client-namespaced name for an explicit group) -- and
hands it to SGLang's own DP controller as ``routed_dp_rank`` (honoured by every load-balance method), unless the
client chose a rank itself. The rank also travels in the group stamp, so a scheduler that receives a member meant
for another rank (a client-chosen rank that splits a group) counts it (``members_off_rank``) and reports it in
``meta_info.esamp.off_rank``. The hash is stable across processes and restarts (not Python's salted ``hash``).
Per-request groups have random ids, so they spread evenly over the ranks.
"""
from __future__ import annotations

import hashlib
from typing import Optional


def routing_key(group_key: str, session: Optional[str]) -> str:
    return f"session:{session}" if session else group_key


def placement_rank(key: str, dp_size: int) -> int:
    if dp_size <= 1:
        return 0
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % dp_size
