"""Members and their groups in the scheduler: a request (member) ``join``s its group at its first decode step and
``leave``s it when it finishes or is aborted; the group acquires its distiller slot with its first member and
releases it with its last (``ESampCore.acquire/release``).

The n siblings of one request are admitted one by one, and a sibling that finishes early must not free the
distiller the others still use: the slot is released when no member is live *and* all ``size`` expected members
have left. A member that ends before its first decode step (its first token was EOS, or it was aborted while
queued) never joins, but it still leaves: it counts towards its group's ``size`` whether or not the group is live
yet, so the group frees its slot the moment its last member leaves. A group with no live member that stays
incomplete for ``config.group_linger_s`` (a sibling never sent) is released anyway and counted as
``groups_expired`` -- a backstop a healthy server does not need.
Sharpening-control requests (``esamp.sharpen_only``) are members without a group: no slot, nothing trained.
So are requests that need only ESamp's own sampler with beta 0 (a ``sampling_seed``, ``logprobs: "sampled"`` or
``return_tokens``, with ESamp disabled or beta 0): their rows are drawn by the ESamp rule without reweighting.
Seeded members get a sibling index (``stream``) in their order of arrival among the live members of the same group
(or, without a group, of the same seed and prompt): the n siblings of one seeded request draw different noise, and
the same request sent again, once the first has ended, draws the same. Arrival is the scheduler's queueing of the
request (``hooks.before_add_request_to_queue`` parses it there), which follows the order SGLang sends the n copies
in, so sibling i of the response draws stream i; the first forward would be too late, since the queue policy
and retraction may schedule siblings in another order from run to run.
A request with ``max_new_tokens == 0`` is no member: SGLang sends one such copy of an ``n > 1`` request first to
cache the shared prefix, and it carries the group stamp of the n siblings -- counted, it would be an (n+1)-th
member and could let the group free its slot before its last sibling joined.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Set, Tuple

from ..algo.config import ESampConfig
from ..wire.identity import CLIENT_KEY
from ..wire.request import ESampRequest, read_scheduled

MEMBER_ATTR = "_esamp_member"   # the parsed Member, cached on SGLang's Req (False = not parsed yet)


@dataclass
class Member:
    rid: str
    request: ESampRequest
    beta: float
    group: Optional[str]          # None: the sharpening control (no distiller)
    group_size: int
    joined: bool = False
    left: bool = False
    slot: Optional[int] = None
    final_stats: Optional[dict] = None
    rows: int = 0                 # decode rows of this request sampled by the ESamp rule
    multi_candidate_rows: int = 0  # ... of which had more than one candidate
    skipped_rows: int = 0         # decode rows that sampled stock instead (tap miss, contained step error)
    off_rank: bool = False        # its group is placed on another DP rank: this rank trains a split-off part
    seed: Optional[int] = None    # SGLang's sampling_params.sampling_seed: ESamp rows draw counter-based noise
    stream: int = 0               # sibling index among live seeded members of its group / seed and prompt
    stream_key: Optional[Tuple] = None
    prompt_len: int = 0
    signals: Optional[Dict[int, tuple]] = None   # return_tokens: output index -> (novelty, shift, count, reweighted)

    @property
    def own_sampler(self) -> bool:
        """Rows must go through ESamp's sampler even without a distiller term (seed, sampled logprobs, signals)."""
        return self.seed is not None or self.request.uses_sampler()

    @property
    def warm(self) -> bool:
        return self.request.init != "random"


@dataclass
class GroupState:
    key: str
    size: int
    slot: Optional[int]
    live: Set[str] = field(default_factory=set)
    left: int = 0
    last_seen: float = 0.0


class GroupMembers:
    def __init__(self, core, config: ESampConfig, clock: Callable[[], float] = time.monotonic, dp_rank: int = 0):
        self.core = core
        self.config = config
        self.clock = clock
        self.dp_rank = dp_rank
        self.live_groups: Dict[str, GroupState] = {}
        self.left_early: Dict[str, list] = {}   # group key -> [members that left before the group existed, time]
        self.streams: Dict[Tuple, list] = {}    # seeded members' stream key -> [next sibling index, live members]
        c = core.counters
        c.declare("groups_live")
        c.declare("groups_released")
        c.declare("groups_expired")
        c.declare("members_left_before_decode")
        c.declare("members_off_rank")   # members whose group's distiller is placed on another DP rank (a split)

    def member_of(self, req) -> Optional[Member]:
        """Parsed once per request and cached on it; None = ESamp off (absent, disabled or beta 0)."""
        cached = getattr(req, MEMBER_ATTR, False)
        if cached is not False:
            return cached
        member = None
        sp = req.sampling_params
        request, stamp = read_scheduled(getattr(sp, "custom_params", None))
        if request is not None and getattr(sp, "max_new_tokens", None) != 0:
            beta = request.effective_beta(self.config)
            seed = getattr(sp, "sampling_seed", None)
            if beta > 0 and request.sharpen_only:
                member = Member(rid=req.rid, request=request, beta=beta, group=None, group_size=1)
            elif beta > 0 and stamp:
                member = Member(rid=req.rid, request=request, beta=beta, group=stamp["key"],
                                group_size=int(stamp["size"]),
                                off_rank=stamp.get("rank", self.dp_rank) != self.dp_rank)
                if member.off_rank:
                    self.core.counters.add("members_off_rank")
            elif request.uses_sampler() or seed is not None:
                member = Member(rid=req.rid, request=request, beta=0.0, group=None, group_size=1)
            if member is not None:
                self._seed(member, req, stamp, seed)
        setattr(req, MEMBER_ATTR, member)
        return member

    def _seed(self, m: Member, req, stamp, seed: Optional[int]):
        m.prompt_len = len(getattr(req, "origin_input_ids", ()) or ())
        if m.request.return_tokens:
            m.signals = {}
        if seed is None:
            return
        m.seed = int(seed)
        m.stream_key = ("group", stamp["key"]) if stamp else (
            "prompt", m.seed, (req.sampling_params.custom_params or {}).get(CLIENT_KEY),
            hash(tuple(req.origin_input_ids)))
        entry = self.streams.setdefault(m.stream_key, [0, 0])
        m.stream = entry[0]
        entry[0] += 1
        entry[1] += 1

    def _end_stream(self, m: Member):
        entry = self.streams.get(m.stream_key) if m.stream_key is not None else None
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self.streams[m.stream_key]

    def join(self, m: Member) -> Optional[int]:
        """Slot for this member's rows (None = bank full or no distiller: no distiller term). Idempotent. A member
        that already left never rejoins (its group may be released: rejoining would take a slot nobody frees)."""
        if m.left:
            return None
        if m.group is None:
            m.joined = True
            return None
        now = self.clock()
        g = self.live_groups.get(m.group)
        if g is None:
            slot = self.core.acquire(m.group, m.request.session, warm=m.warm, init_seed=m.seed)
            early = self.left_early.pop(m.group, [0])[0]
            g = self.live_groups[m.group] = GroupState(m.group, m.group_size, slot, left=early)
            self.core.counters.set("groups_live", len(self.live_groups))
        g.last_seen = now
        if not m.joined:
            m.joined = True
            g.live.add(m.rid)
        m.slot = g.slot
        return g.slot

    def leave(self, m: Member):
        if m.left:
            return
        m.left = True
        self._end_stream(m)
        if m.group is None:
            return
        if not m.joined:
            self._left_before_joining(m)
            return
        self.core.join()   # the member's last step is counted (rows, stats) before it reports
        g = self.live_groups.get(m.group)
        if g is None:
            return
        m.final_stats = self.core.group_stats(m.group) if g.slot is not None else None
        g.live.discard(m.rid)
        self._count_left(g)

    def _count_left(self, g: GroupState):
        """One more of the group's ``size`` members is gone; the last one releases the slot."""
        g.left += 1
        g.last_seen = self.clock()
        if not g.live and g.left >= g.size:
            self._release(g)

    def _left_before_joining(self, m: Member):
        self.core.counters.add("members_left_before_decode")
        g = self.live_groups.get(m.group)
        if g is not None:
            self._count_left(g)
            return
        entry = self.left_early.setdefault(m.group, [0, 0.0])
        entry[0] += 1
        entry[1] = self.clock()
        if entry[0] >= m.group_size:
            del self.left_early[m.group]   # every member ended before decoding: the group never needed a slot

    def expire_stale(self):
        now = self.clock()
        for key in [k for k, (_, t) in self.left_early.items() if now - t > self.config.group_linger_s]:
            del self.left_early[key]
        for g in [g for g in self.live_groups.values()
                  if not g.live and now - g.last_seen > self.config.group_linger_s]:
            self.core.counters.add("groups_expired")
            self._release(g)

    def _release(self, g: GroupState):
        self.live_groups.pop(g.key, None)
        self.core.counters.add("groups_released")
        self.core.counters.set("groups_live", len(self.live_groups))
        if g.slot is not None:
            self.core.release(g.key)

    def report(self, m: Member) -> dict:
        """``meta_info.esamp`` of one request."""
        if m.final_stats is not None:
            stats = m.final_stats
        elif m.slot is not None and m.group in self.live_groups:
            stats = self.core.group_stats(m.group)
        else:
            stats = None
        out = {"beta": m.beta, "group": m.group, "session": m.request.session, "slot": m.slot,
               "fallback": m.joined and m.group is not None and m.slot is None,
               "sharpen_only": m.request.sharpen_only, "init": None if m.group is None else
               ("warm" if m.warm and self.core.bank.warm_start is not None else "random"),
               "rows": m.rows, "multi_candidate_rows": m.multi_candidate_rows, "skipped_rows": m.skipped_rows,
               "off_rank": m.off_rank}
        for k in ("steps", "rows_trained", "mean_novelty", "last_loss"):
            out[k] = (stats or {}).get(k, 0 if k in ("steps", "rows_trained") else None)
        if m.seed is not None:
            out["seed_stream"] = m.stream
        if m.signals is not None:
            out["tokens"] = token_signals(m.signals)
        return out


SIGNALS = ("novelty", "logit_shift", "candidates", "reweighted")


def token_signals(signals: Dict[int, tuple]) -> dict:
    """Columns aligned with the output tokens (index i = the i-th generated token); None where a token was not
    drawn by ESamp's sampler (e.g. the first token of an unseeded request, or a stock-sampled step)."""
    n = max(signals) + 1 if signals else 0
    cols = {k: [None] * n for k in SIGNALS}
    for i, values in signals.items():
        for k, v in zip(SIGNALS, values):
            cols[k][i] = v
    return cols

