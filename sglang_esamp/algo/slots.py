"""Group -> slot lifecycle with optional sessions (DESIGN §1 "Scope and lifecycle").

Vocabulary, from the bank up: a *slot* is taken with ``acquire`` and given back with ``release`` (bank,
``SlotLifecycle``, ``ESampCore``); a *member* (one request) ``join``s and ``leave``s its group (runtime.groups).
A group key (opaque, hashable: the n siblings of one request, or requests sharing a ``group``) acquires a slot when
its first member joins and releases it when the last member left. ``acquire`` is idempotent for a known group.
Bank full -> None, counted, never raises. ``warm`` picks the slot's init (the bank's warm start, or random).

Sessions (``esamp.session``): the slot outlives its groups so a later request with the same session key keeps
exploring away from earlier samples. Decisions recorded here:
  * Several live groups may share one session's slot at once; the step then trains that slot on all their rows.
  * A session is *idle* when no live group uses it; only idle sessions expire (``session_ttl_s`` after last use)
    or get evicted (least recently used first) -- when ``session_max`` is reached or the bank is full.
  * When ``session_max`` is reached and no session is idle, the group still gets a slot but it is not kept after
    release (counted as ``session_overflows``). ``session_max`` = 0 ignores session keys.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Optional


@dataclass
class _Group:
    slot: int
    session: Optional[str]


@dataclass
class _Session:
    slot: int
    last_used: float
    live_groups: int = 0


class SlotLifecycle:
    def __init__(self, bank, counters, session_ttl_s: float, session_max: int,
                 clock: Callable[[], float] = time.monotonic):
        self.bank = bank
        self.counters = counters
        self.ttl = session_ttl_s
        self.session_max = session_max
        self.clock = clock
        self.by_group: Dict[Hashable, _Group] = {}
        self.sessions: "OrderedDict[str, _Session]" = OrderedDict()  # LRU order: oldest first
        counters.declare("sessions_live")   # sessions holding a slot (the bank occupancy a healthy idle server keeps)

    def acquire(self, group_key: Hashable, session: Optional[str] = None, warm: bool = True,
                init_seed: Optional[int] = None) -> Optional[int]:
        if group_key in self.by_group:
            return self.by_group[group_key].slot
        now = self.clock()
        self.expire_sessions(now)
        if session is not None and self.session_max == 0:
            session = None
        if session is not None and session in self.sessions:
            s = self.sessions[session]
            s.live_groups += 1
            s.last_used = now
            self.sessions.move_to_end(session)
            self.by_group[group_key] = _Group(s.slot, session)
            self.counters.record_acquire(s.slot, self.bank.occupancy, fresh=False)
            return s.slot

        slot = self.bank.acquire(warm, init_seed)
        while slot is None and self._evict_lru_idle():
            slot = self.bank.acquire(warm, init_seed)
        if slot is None:
            self.counters.record_acquire(None, self.bank.occupancy, fresh=False)
            return None
        if session is not None and len(self.sessions) >= self.session_max and not self._evict_lru_idle():
            self.counters.add("session_overflows")
            session = None
        if session is not None:
            self.sessions[session] = _Session(slot, now, live_groups=1)
        self.by_group[group_key] = _Group(slot, session)
        self.counters.record_acquire(slot, self.bank.occupancy, fresh=True)
        self.counters.set("sessions_live", len(self.sessions))
        return slot

    def release(self, group_key: Hashable):
        """The group's last member left (finished or aborted). Unknown keys (bank-full groups) are a no-op."""
        g = self.by_group.pop(group_key, None)
        if g is None:
            return
        if g.session is not None and g.session in self.sessions:
            s = self.sessions[g.session]
            s.live_groups -= 1
            s.last_used = self.clock()
            self.sessions.move_to_end(g.session)
        else:
            self.bank.release(g.slot)
        self.counters.record_occupancy(self.bank.occupancy)

    def slot_of(self, group_key: Hashable) -> Optional[int]:
        g = self.by_group.get(group_key)
        return None if g is None else g.slot

    def session_slot(self, session: str) -> Optional[int]:
        s = self.sessions.get(session)
        return None if s is None else s.slot

    def expire_sessions(self, now: Optional[float] = None) -> int:
        """Free idle sessions unused for longer than the TTL; returns how many."""
        now = self.clock() if now is None else now
        dead = [k for k, s in self.sessions.items() if s.live_groups == 0 and now - s.last_used > self.ttl]
        for k in dead:
            self._evict(k)
        return len(dead)

    def _evict_lru_idle(self) -> bool:
        for k, s in self.sessions.items():
            if s.live_groups == 0:
                self._evict(k)
                return True
        return False

    def _evict(self, key: str):
        s = self.sessions.pop(key)
        self.bank.release(s.slot)
        self.counters.add("sessions_evicted")
        self.counters.record_occupancy(self.bank.occupancy)
        self.counters.set("sessions_live", len(self.sessions))
