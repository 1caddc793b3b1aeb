"""Fork-point distiller groups: the branches of one ``s.fork(n)`` share one ESamp distiller.

The server groups requests by ``esamp.group`` (+ ``group_size``, the number of members to wait for before the
group's distiller slot is freed); the frontend sends each branch's gen as a separate request, so it must name the
group itself.
  * ``StreamExecutor.fork`` is wrapped to give all its child executors one fork record: a fresh key
    (``uuid4().hex``) and the branch count.
  * When a branch resolves a gen whose ``esamp`` is enabled and names no ``group``, the value sent becomes
    ``{..user fields.., "group": "fork-<key>-<k>", "group_size": branches * n}``, where ``k`` counts the ESamp gens
    this branch has already sent. So the k-th ESamp gen of every branch -- the parallel samples of one point of the
    program -- trains one distiller, and a later gen in the branches starts a fresh group rather than joining one
    whose members may still be decoding. ``n`` (samples per gen) is normally 1.
  * A nested fork gets its own key (groups are per fork point); ``s.copy()`` is a fork of 1 (a group of one).
  * Not stamped: gens outside any fork (the server gives each request its own group), gens with ESamp disabled,
    and gens whose ``esamp`` already names a ``group`` (explicit wins; ``group_size`` given alone is kept).
The record lives on the executor objects, so it needs no locking: each executor resolves its gens in order on its
own worker thread.
"""
from __future__ import annotations

import functools
import uuid
from typing import Any, Mapping

from ..algo.config import ESampConfig
from ..wire.request import ESampRequest

FORK_ATTR = "_esamp_fork"          # (key, branches) on every child executor of one fork
COUNT_ATTR = "_esamp_fork_gens"    # ESamp gens this branch has sent so far


def group_key(fork_key: str, index: int) -> str:
    return f"fork-{fork_key}-{index}"


def with_fork_group(executor, value: Any, n: Any = 1) -> Any:
    """The esamp value to send for one gen of ``executor`` (``value`` is already validated)."""
    record = getattr(executor, FORK_ATTR, None)
    req = ESampRequest.parse(value)
    if record is None or req is None or not req.enabled:
        return value
    if isinstance(value, Mapping) and value.get("group") is not None:
        return value
    fork_key, branches = record
    index = getattr(executor, COUNT_ATTR, 0)
    setattr(executor, COUNT_ATTR, index + 1)
    out = {} if isinstance(value, bool) else dict(value)
    out["group"] = group_key(fork_key, index)
    out.setdefault("group_size", branches * max(1, int(n or 1)))
    # e.g. more members than a server with the default --esamp-max-group-size accepts: fail here, naming the field
    ESampRequest.parse(out).check_server(ESampConfig())
    return out


def _wrap_fork(original):
    @functools.wraps(original)
    def fork(self, *args, **kwargs):
        children = original(self, *args, **kwargs)
        record = (uuid.uuid4().hex, len(children))
        for child in children:
            setattr(child, FORK_ATTR, record)
            setattr(child, COUNT_ATTR, 0)
        return children

    return fork


def patches():
    from sglang.lang.interpreter import StreamExecutor

    return [(StreamExecutor, "fork", _wrap_fork)]
