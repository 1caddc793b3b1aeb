"""``GroupTable``: the one place that knows which distiller slot each request group holds (DESIGN §1 "Scope and
lifecycle"). The bank only hands out slot indices and holds weights; the runtime only says when a member joins or
leaves.

A *group* is the requests that share one distiller: the n siblings of one request, or separate requests sharing an
``esamp.group``. A *member* (one request, any hashable id) ``join``s at its first decode step and ``leave``s when it
ends, however it ends (finished, first token EOS, aborted while queued or while decoding, disconnected, rejected).

  * The group acquires its slot when its first member joins, and releases it when no member is live *and* all
    ``size`` expected members have left: siblings are admitted one by one, and one that finishes early must not
    free the distiller the others still use.
  * A member that leaves before it joined (it never decoded) still counts towards ``size``
    (``members_left_before_decode``), also before the group exists, so the group frees its slot the moment its
    last member leaves.
  * ``leave`` is idempotent while the group (or its early-leaver record) exists, and a member that left never
    rejoins: rejoining would take a slot nobody frees. A retracted request does not leave; it rejoins on return
    (``join`` is idempotent for a live member).
  * ``expire``: a group with no live member that stays short of its size for ``linger_s`` (a sibling never sent)
    is released anyway (``groups_expired``) -- a backstop a healthy server does not need; idle sessions past
    their TTL are freed.
  * Bank full: the group exists with slot None (its members sample without ESamp), counted as
    ``bank_full_fallbacks``.

Sessions (``esamp.session``): the slot outlives its groups, so a later request of the same session keeps exploring
away from earlier samples. Several live groups may share one session's slot; the step then trains it on all their
rows. A session is *idle* when no live group uses it; only idle sessions expire (``session_ttl_s`` after last use)
or are evicted, least recently used first, when ``session_max`` is reached or the bank is full. When
``session_max`` is reached and no session is idle, the group still gets a slot but does not keep it
(``session_overflows``). ``session_max`` = 0 ignores session keys.

The ``pool`` (``ESampCore``) hands out slots: ``acquire_slot(warm, init_seed) -> Optional[int]``,
``release_slot(slot)``, ``occupancy``. Single-threaded: the scheduler thread is its only caller.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Optional, Set


@dataclass
class Group:
    key: Hashable
    size: int                                   # members expected
    slot: Optional[int]                         # None: bank full, its members sample without ESamp
    session: Optional[str] = None               # the session whose slot it uses
    live: Set[Hashable] = field(default_factory=set)
    gone: Set[Hashable] = field(default_factory=set)   # members that left (joined or not)
    last_seen: float = 0.0


@dataclass
class _EarlyLeavers:
    """Members of a group that does not exist yet and that already ended."""
    members: Set[Hashable] = field(default_factory=set)
    last_seen: float = 0.0


@dataclass
class _Session:
    slot: int
    last_used: float
    live_groups: int = 0


class GroupTable:
    def __init__(self, pool, counters, *, linger_s: float, session_ttl_s: float, session_max: int,
                 clock: Callable[[], float] = time.monotonic):
        self.pool = pool
        self.counters = counters
        self.linger_s = linger_s
        self.session_ttl_s = session_ttl_s
        self.session_max = session_max
        self.clock = clock
        self.groups: Dict[Hashable, Group] = {}
        self._early: Dict[Hashable, _EarlyLeavers] = {}
        self._sessions: "OrderedDict[str, _Session]" = OrderedDict()   # LRU order: oldest first
        for name in ("groups_live", "groups_released", "groups_expired", "members_left_before_decode",
                     "sessions_live"):
            counters.declare(name)

    # -- members --------------------------------------------------------------------------------------------
    def join(self, key: Hashable, member: Hashable, size: int, *, session: Optional[str] = None,
             warm: bool = True, init_seed: Optional[int] = None) -> Optional[int]:
        """The slot of ``member``'s group (acquired with the group's first member); None = bank full, or the member
        already left. Idempotent for a live member."""
        now = self.clock()
        g = self.groups.get(key)
        if g is None:
            early = self._early.get(key)
            if early is not None and member in early.members:
                return None
            self._early.pop(key, None)
            slot, session = self._take_slot(session, warm, init_seed, now)
            g = self.groups[key] = Group(key, size, slot, session, gone=early.members if early else set())
            self.counters.set("groups_live", len(self.groups))
        if member in g.gone:
            return None
        g.live.add(member)
        g.last_seen = now
        return g.slot

    def leave(self, key: Hashable, member: Hashable, size: int) -> None:
        """``member`` (of a group of ``size``) ended. The group's last member releases the slot."""
        now = self.clock()
        g = self.groups.get(key)
        if g is None:
            early = self._early.setdefault(key, _EarlyLeavers())
            if member not in early.members:
                early.members.add(member)
                self.counters.add("members_left_before_decode")
            early.last_seen = now
            if len(early.members) >= size:
                del self._early[key]   # every member ended before decoding: the group never needed a slot
            return
        if member in g.gone:
            return
        if member not in g.live:
            self.counters.add("members_left_before_decode")
        g.live.discard(member)
        g.gone.add(member)
        g.last_seen = now
        if not g.live and len(g.gone) >= g.size:
            self._release(g)

    def is_live(self, key: Hashable, member: Hashable) -> bool:
        """``member`` joined its group and has not left."""
        g = self.groups.get(key)
        return g is not None and member in g.live

    def slot_of(self, key: Hashable) -> Optional[int]:
        g = self.groups.get(key)
        return None if g is None else g.slot

    def holds(self, key: Hashable, slot: int) -> bool:
        """The group still holds ``slot`` (a step planned before a release must not use the slot)."""
        g = self.groups.get(key)
        return g is not None and g.slot == slot

    def session_slot(self, session: str) -> Optional[int]:
        s = self._sessions.get(session)
        return None if s is None else s.slot

    # -- backstops ------------------------------------------------------------------------------------------
    def expire(self) -> None:
        """Release groups lingering short of their size, forget stale early leavers, free idle expired sessions."""
        now = self.clock()
        for key in [k for k, e in self._early.items() if now - e.last_seen > self.linger_s]:
            del self._early[key]
        for g in [g for g in self.groups.values() if not g.live and now - g.last_seen > self.linger_s]:
            self.counters.add("groups_expired")
            self._release(g)
        self._expire_sessions(now)

    # -- slots ----------------------------------------------------------------------------------------------
    def _take_slot(self, session, warm, init_seed, now):
        self._expire_sessions(now)
        if self.session_max == 0:
            session = None
        if session is not None and session in self._sessions:
            s = self._sessions[session]
            s.live_groups += 1
            s.last_used = now
            self._sessions.move_to_end(session)
            self.counters.record_acquire(s.slot, self.pool.occupancy, fresh=False)
            return s.slot, session
        slot = self.pool.acquire_slot(warm, init_seed)
        while slot is None and self._evict_lru_idle():
            slot = self.pool.acquire_slot(warm, init_seed)
        if slot is None:
            self.counters.record_acquire(None, self.pool.occupancy, fresh=False)
            return None, None
        if session is not None and len(self._sessions) >= self.session_max and not self._evict_lru_idle():
            self.counters.add("session_overflows")
            session = None
        if session is not None:
            self._sessions[session] = _Session(slot, now, live_groups=1)
        self.counters.record_acquire(slot, self.pool.occupancy, fresh=True)
        self.counters.set("sessions_live", len(self._sessions))
        return slot, session

    def _release(self, g: Group) -> None:
        del self.groups[g.key]
        self.counters.add("groups_released")
        self.counters.set("groups_live", len(self.groups))
        if g.slot is None:
            return
        s = self._sessions.get(g.session) if g.session is not None else None
        if s is not None:
            s.live_groups -= 1
            s.last_used = self.clock()
            self._sessions.move_to_end(g.session)
        else:
            self.pool.release_slot(g.slot)
        self.counters.record_occupancy(self.pool.occupancy)

    def _expire_sessions(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if s.live_groups == 0 and now - s.last_used > self.session_ttl_s]:
            self._evict(k)

    def _evict_lru_idle(self) -> bool:
        for k, s in self._sessions.items():
            if s.live_groups == 0:
                self._evict(k)
                return True
        return False

    def _evict(self, key: str) -> None:
        s = self._sessions.pop(key)
        self.pool.release_slot(s.slot)
        self.counters.add("sessions_evicted")
        self.counters.record_occupancy(self.pool.occupancy)
        self.counters.set("sessions_live", len(self._sessions))
