"""GroupTable (algo/group_table.py) alone: every way a member ends, the linger backstop, sessions and their LRU
eviction, bank-full fallbacks. The pool is a real (tiny) ESampCore; no SGLang object anywhere."""
import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.group_table import GroupTable
from sglang_esamp.algo.update.job import Update

H = 16


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(slots=2, linger=5.0, session_max=0, ttl=10.0):
    cfg = ESampConfig(bank_slots=slots, width=8, session_max=session_max, session_ttl_s=ttl, group_linger_s=linger)
    core = ESampCore(cfg, H, torch.randn(32, H))
    clock = Clock()
    table = GroupTable(core, core.counters, linger_s=linger, session_ttl_s=ttl, session_max=session_max, clock=clock)
    return table, core, clock


def test_siblings_share_one_slot_released_with_the_last_of_n():
    table, core, _ = make()
    slots = {table.join("g", m, 3) for m in "ab"}
    assert len(slots) == 1 and core.occupancy == 1
    table.leave("g", "a", 3)
    table.leave("g", "b", 3)           # two left, the third has not joined yet: keep the slot
    assert core.occupancy == 1 and table.slot_of("g") == slots.pop()
    table.join("g", "c", 3)
    table.leave("g", "c", 3)
    assert core.occupancy == 0 and table.groups == {} and core.stats()["groups_released"] == 1


def test_first_token_eos_before_the_group_exists_counts_towards_its_size():
    """Two of four siblings end at their first token (never join); the slot goes with the last decoding one."""
    table, core, _ = make()
    table.leave("g", "s0", 4)          # before the group exists
    table.join("g", "s1", 4)
    table.join("g", "s2", 4)
    table.leave("g", "s3", 4)          # while the group is live, never joined
    table.leave("g", "s1", 4)
    assert core.occupancy == 1
    table.leave("g", "s2", 4)
    assert core.occupancy == 0 and table.groups == {}
    st = core.stats()
    assert st["members_left_before_decode"] == 2 and st["groups_expired"] == 0


def test_a_group_whose_members_all_end_while_queued_never_takes_a_slot():
    table, core, _ = make()
    for m in "abc":
        table.leave("q", m, 3)         # aborted while queued
    assert core.occupancy == 0 and table.groups == {} and core.stats()["groups_acquired"] == 0


def test_a_retracted_member_rejoins_its_slot_and_leaving_twice_counts_once():
    table, core, _ = make()
    s = table.join("g", "a", 2)
    assert table.join("g", "a", 2) == s            # retracted and scheduled again: idempotent
    table.join("g", "b", 2)
    table.leave("g", "a", 2)                       # disconnected mid-decode
    table.leave("g", "a", 2)                       # reported again (abort after finish): no second count
    assert core.occupancy == 1 and table.join("g", "a", 2) is None   # a member that left never rejoins
    table.leave("g", "b", 2)
    assert core.occupancy == 0 and core.stats()["members_left_before_decode"] == 0


def test_an_incomplete_group_lingers_then_is_released_and_counted():
    table, core, clock = make(linger=5.0)
    table.join("g", "a", 4)
    table.leave("g", "a", 4)
    clock.t = 4.0
    table.expire()
    assert core.occupancy == 1
    clock.t = 10.0
    table.expire()
    assert core.occupancy == 0 and core.stats()["groups_expired"] == 1


def test_a_group_with_a_live_member_never_expires():
    table, core, clock = make(linger=1.0)
    table.join("g", "a", 2)
    clock.t = 100.0
    table.expire()
    assert core.occupancy == 1 and core.stats()["groups_expired"] == 0


def test_bank_full_gives_no_slot_and_a_counter_and_frees_nothing_on_leave():
    table, core, _ = make(slots=1)
    assert table.join("g1", "a", 1) is not None
    assert table.join("g2", "b", 1) is None
    assert core.stats()["bank_full_fallbacks"] == 1
    table.leave("g2", "b", 1)
    assert core.occupancy == 1 and table.groups.keys() == {"g1"}


def test_the_slot_is_stored_once_and_a_reset_keeps_the_owner():
    """A contained step error re-initialises the slot; the group keeps it."""
    table, core, _ = make()
    s = table.join("g", "a", 1)
    core.reset_slots([s])
    assert table.holds("g", s) and core.stats()["error_resets"] == 1
    table.leave("g", "a", 1)
    assert not table.holds("g", s) and table.slot_of("g") is None


# -- sessions -------------------------------------------------------------------------------------------------------
def test_a_session_keeps_its_slot_and_weights_until_its_ttl():
    table, core, clock = make(slots=4, session_max=2, ttl=10.0)
    s = table.join("req1", "a", 1, session="sess")
    src, tgt = torch.randn(2, H), 4 * torch.randn(2, H)
    core.train(Update(src, tgt, torch.full((2,), s)))
    core.wait_for_update()                  # the update may run on the worker thread (update_mode auto)
    trained = core.bank.slot_state(s)
    table.leave("req1", "a", 1)
    assert core.occupancy == 1 and table.session_slot("sess") == s       # kept for the session
    clock.t = 5.0
    assert table.join("req2", "b", 1, session="sess") == s
    assert all(torch.equal(trained[k], core.bank.slot_state(s)[k]) for k in trained)
    assert core.slot_stats(s)["steps"] == 1                              # stats continue across the session
    table.leave("req2", "b", 1)
    clock.t = 5.0 + 10.5                                                 # idle beyond the TTL
    table.expire()
    assert table.session_slot("sess") is None and core.occupancy == 0
    assert core.stats()["sessions_evicted"] == 1


def test_sessions_are_evicted_least_recently_used_first_and_overflow_is_counted():
    table, core, clock = make(slots=4, session_max=2)
    table.join("x", "x", 1, session="s1")
    clock.t = 1
    table.join("y", "y", 1, session="s2")
    table.leave("x", "x", 1)
    table.leave("y", "y", 1)                       # s1 is the least recently used
    clock.t = 2
    table.join("z", "z", 1, session="s3")          # session_max 2: evicts s1
    assert table.session_slot("s1") is None and table.session_slot("s2") is not None
    table.join("w", "w", 1, session="s2")
    table.join("v", "v", 1, session="s4")          # s2, s3 busy: a slot yes, a session no
    assert core.stats()["session_overflows"] == 1 and table.session_slot("s4") is None
    table.join("u", "u", 1)
    assert core.occupancy == 4
    table.leave("z", "z", 1)                       # s3 idle now
    assert table.join("t", "t", 1) is not None     # bank full -> evicts idle s3
    assert table.session_slot("s3") is None


def test_session_keys_are_ignored_when_session_max_is_zero():
    table, core, _ = make(session_max=0)
    table.join("a", "a", 1, session="s")
    table.leave("a", "a", 1)
    assert core.occupancy == 0 and table.session_slot("s") is None
