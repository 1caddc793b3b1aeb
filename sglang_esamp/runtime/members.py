"""Requests as members of their distiller group: what is SGLang-specific about them (``GroupTable`` in
``algo/group_table.py`` owns the groups and their slots).

``Members`` parses a Req once into a ``Member`` (cached on the Req): its ``esamp`` value, group key and size from
the tokenizer's stamp, seed stream, prompt length; ``join`` / ``leave`` pass the member to the table, which is the
truth about who joined while the group lives (``joined``, ``slot_of``); what outlives the group is recorded once,
when the member leaves (``Ended``);
``report`` builds ``meta_info.esamp``. The per-request counts (``rows``, ``multi_candidate_rows``,
``skipped_rows``, per-token signals) are written only on the scheduler thread (``step.settle`` applies what an
update measured).

Who is a member: sharpening-control requests (``esamp.sharpen_only``) are members without a group (no slot,
nothing trained). So are requests that need only ESamp's own sampler with beta 0 (a ``sampling_seed``,
``logprobs: "sampled"`` or ``return_tokens``, with ESamp disabled or beta 0): their rows are drawn by the ESamp
rule without reweighting. A request with ``max_new_tokens == 0`` is no member: SGLang sends one such copy of an
``n > 1`` request first to cache the shared prefix, and it carries the group stamp of the n siblings -- counted, it
would be an (n+1)-th member and could let the group free its slot before its last sibling joined.
Seeded members get a sibling index (``stream``) in their order of arrival among the live members of the same group
(or, without a group, of the same seed and prompt): the n siblings of one seeded request draw different noise, and
the same request sent again, once the first has ended, draws the same. Arrival is the scheduler's queueing of the
request (the ``before_add_request_to_queue`` shim parses it there), which follows the order SGLang sends the n
copies in, so sibling i of the response draws stream i; the first forward would be too late, since the queue
policy and retraction may schedule siblings in another order from run to run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..algo.config import ESampConfig
from ..algo.group_table import GroupTable
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
    ended: Optional["Ended"] = None   # set once, when it leaves (it never rejoins)
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
    def left(self) -> bool:
        return self.ended is not None

    @property
    def own_sampler(self) -> bool:
        """Rows must go through ESamp's sampler even without a distiller term (seed, sampled logprobs, signals)."""
        return self.seed is not None or self.request.uses_sampler()

    @property
    def warm(self) -> bool:
        return self.request.init != "random"


@dataclass
class Ended:
    """What outlives a member's group, recorded when it leaves: whether it had joined (reached a decode step),
    and its group's slot and stats then (the table forgets the group, and the slot may be reused since)."""
    joined: bool
    slot: Optional[int]
    stats: Optional[dict]


class Members:
    def __init__(self, core, table: GroupTable, config: ESampConfig, dp_rank: int = 0):
        self.core = core
        self.table = table
        self.config = config
        self.dp_rank = dp_rank
        # seeded members' stream key -> [next sibling index, live members]. Not the table's count: a sibling takes
        # its index on arrival, before it joins the table, and seeded requests without a group are keyed by prompt
        self.streams: Dict[Tuple, list] = {}
        core.counters.declare("members_off_rank")   # members whose group's distiller is on another DP rank

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
        """The slot for this member's rows this step (None = bank full or no distiller: no distiller term)."""
        if m.left or m.group is None:
            return None
        return self.table.join(m.group, m.rid, m.group_size, session=m.request.session, warm=m.warm,
                               init_seed=m.seed)

    def joined(self, m: Member) -> bool:
        """It reached a decode step with its group (the table's live members; recorded at leave)."""
        if m.ended is not None:
            return m.ended.joined
        return m.group is not None and self.table.is_live(m.group, m.rid)

    def slot_of(self, m: Member) -> Optional[int]:
        if m.ended is not None:
            return m.ended.slot
        return self.table.slot_of(m.group) if self.joined(m) else None

    def leave(self, m: Member) -> None:
        """The request ended (call after the step settled its updates, so its last step is counted). Idempotent."""
        if m.left:
            return
        self._end_stream(m)
        joined, slot = self.joined(m), self.slot_of(m)
        m.ended = Ended(joined, slot, self.core.slot_stats(slot) if slot is not None else None)
        if m.group is not None:
            self.table.leave(m.group, m.rid, m.group_size)

    def report(self, m: Member) -> dict:
        """``meta_info.esamp`` of one request."""
        slot = self.slot_of(m)
        if m.ended is not None:
            stats = m.ended.stats
        else:
            stats = self.core.slot_stats(slot, settled=False) if slot is not None else None   # in progress
        out = {"beta": m.beta, "group": m.group, "session": m.request.session, "slot": slot,
               "fallback": self.joined(m) and slot is None,
               "sharpen_only": m.request.sharpen_only, "sharpen": m.request.sharpen, "init": None if m.group is None else
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

