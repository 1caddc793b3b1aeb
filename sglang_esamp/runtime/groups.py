"""Request -> group -> slot membership in the scheduler (the lifecycle around ``ESampCore.acquire/release``).

A request joins its group at its first decode step (prefill rows are never used). The group's slot is taken when
its first member joins and returned when the last member leaves (finished or aborted) *and* all ``size`` expected
members have left (the n siblings of one request are admitted one by one; a sibling that finishes early must not
free the distiller the others still use). A group with no live member that stays incomplete for ``linger_s``
(a sibling aborted before admission, or never sent) is released anyway and counted as ``groups_expired``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Set

from ..algo.config import ESampConfig
from .request_params import ESAMP_KEY, GROUP_KEY, parse_request

INFO_ATTR = "_esamp_info"
DEFAULT_LINGER_S = 30.0


@dataclass
class RequestInfo:
    rid: str
    group: str
    group_size: int
    beta: float
    session: Optional[str]
    joined: bool = False
    left: bool = False
    slot: Optional[int] = None
    final_stats: Optional[dict] = None


@dataclass
class GroupState:
    key: str
    size: int
    slot: Optional[int]
    live: Set[str] = field(default_factory=set)
    left: int = 0
    last_seen: float = 0.0


class GroupRegistry:
    def __init__(self, core, config: ESampConfig, linger_s: float = DEFAULT_LINGER_S,
                 clock: Callable[[], float] = time.monotonic):
        self.core = core
        self.config = config
        self.linger_s = linger_s
        self.clock = clock
        self.groups: Dict[str, GroupState] = {}
        self.groups_expired = 0
        self.groups_released = 0

    def info_for(self, req) -> Optional[RequestInfo]:
        """Parsed once per request and cached on it; None = ESamp off (absent, disabled or beta 0)."""
        cached = getattr(req, INFO_ATTR, False)
        if cached is not False:
            return cached
        info = None
        custom = getattr(req.sampling_params, "custom_params", None) or {}
        stamp = custom.get(GROUP_KEY)
        if ESAMP_KEY in custom and stamp:
            params = parse_request(custom[ESAMP_KEY])  # validated at the tokenizer already
            beta = params.effective_beta(self.config) if params is not None else 0.0
            if beta > 0:
                info = RequestInfo(rid=req.rid, group=stamp["key"], group_size=int(stamp["size"]), beta=beta,
                                   session=params.session)
        setattr(req, INFO_ATTR, info)
        return info

    def join(self, info: RequestInfo) -> Optional[int]:
        """Slot for this request's rows (None = bank full, stock sampling). Idempotent."""
        now = self.clock()
        g = self.groups.get(info.group)
        if g is None:
            slot = self.core.acquire(info.group, info.session)
            g = self.groups[info.group] = GroupState(info.group, info.group_size, slot)
        g.last_seen = now
        if not info.joined:
            info.joined = True
            g.live.add(info.rid)
        info.slot = g.slot
        return g.slot

    def leave(self, info: RequestInfo):
        if not info.joined or info.left:
            return
        info.left = True
        g = self.groups.get(info.group)
        if g is None:
            return
        info.final_stats = self.core.group_stats(info.group) if g.slot is not None else None
        g.live.discard(info.rid)
        g.left += 1
        g.last_seen = self.clock()
        if not g.live and g.left >= g.size:
            self._release(g)

    def expire(self):
        now = self.clock()
        for g in [g for g in self.groups.values() if not g.live and now - g.last_seen > self.linger_s]:
            self.groups_expired += 1
            self._release(g)

    def _release(self, g: GroupState):
        self.groups.pop(g.key, None)
        self.groups_released += 1
        if g.slot is not None:
            self.core.release(g.key)

    def stats_for(self, info: RequestInfo) -> Optional[dict]:
        if info.final_stats is not None:
            stats = info.final_stats
        elif info.slot is not None and info.group in self.groups:
            stats = self.core.group_stats(info.group)
        else:
            stats = None
        out = {"beta": info.beta, "group": info.group, "slot": info.slot, "fallback": info.joined and info.slot is None}
        for k in ("steps", "rows_trained", "mean_novelty", "last_loss"):
            out[k] = (stats or {}).get(k, 0 if k in ("steps", "rows_trained") else None)
        return out

    def snapshot(self) -> dict:
        return {"groups_live": len(self.groups), "groups_released": self.groups_released,
                "groups_expired": self.groups_expired}
