"""Requests as members (runtime/members.py): Req -> Member parsing, join/leave through the real GroupTable over a
real ESampCore (tiny sizes), and meta_info.esamp reports."""
import types

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.algo.group_table import GroupTable
from sglang_esamp.runtime.members import Members
from sglang_esamp.wire.request import stamp_group


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def members_over(core, cfg, clock=None):
    table = GroupTable(core, core.counters, linger_s=cfg.group_linger_s, session_ttl_s=cfg.session_ttl_s,
                       session_max=cfg.session_max, **({"clock": clock} if clock else {}))
    return Members(core, table, cfg)


def make(slots=2, linger=5.0):
    cfg = ESampConfig(bank_slots=slots, width=8, session_max=0, group_linger_s=linger)
    core = ESampCore(cfg, 16, torch.randn(32, 16))
    clock = Clock()
    return members_over(core, cfg, clock), core, clock


def req(rid, esamp, group_rid, n):
    custom = stamp_group({"esamp": esamp}, default_key=group_rid, default_size=n) or {"esamp": esamp}
    return types.SimpleNamespace(rid=rid, sampling_params=types.SimpleNamespace(custom_params=custom))


def test_siblings_share_a_slot_released_after_the_last_of_n():
    reg, core, _ = make()
    sibs = [reg.member_of(req(f"r{i}", {"beta": 0.3}, "parent", 3)) for i in range(3)]
    assert {s.group for s in sibs} == {"req:parent"}
    slots = {reg.join(s) for s in sibs[:2]}
    assert len(slots) == 1 and core.bank.occupancy == 1
    reg.leave(sibs[0])
    reg.leave(sibs[1])          # two left, the third has not even joined yet: keep the slot
    assert core.bank.occupancy == 1
    reg.join(sibs[2])
    reg.leave(sibs[2])
    assert core.bank.occupancy == 0 and reg.table.groups == {}


def test_incomplete_group_is_released_after_linger_and_counted():
    reg, core, clock = make(linger=5.0)
    a = reg.member_of(req("a", True, "p", 4))
    reg.join(a)
    reg.leave(a)
    clock.t = 4.0
    reg.table.expire()
    assert core.bank.occupancy == 1
    clock.t = 10.0
    reg.table.expire()
    assert core.bank.occupancy == 0 and core.stats()["groups_expired"] == 1


def test_bank_full_gives_stock_sampling_and_a_counter():
    reg, core, _ = make(slots=1)
    a, b = reg.member_of(req("a", True, "g1", 1)), reg.member_of(req("b", True, "g2", 1))
    assert reg.join(a) is not None
    assert reg.join(b) is None
    assert core.stats()["bank_full_fallbacks"] == 1
    assert reg.report(b)["fallback"] is True


@pytest.mark.parametrize("esamp", [None, False, {"beta": 0}, {"enabled": False}])
def test_requests_without_esamp_are_no_members(esamp):
    reg, _, _ = make()
    r = types.SimpleNamespace(rid="x", sampling_params=types.SimpleNamespace(
        custom_params=None if esamp is None else stamp_group({"esamp": esamp}, "x", 1) or {"esamp": esamp}))
    assert reg.member_of(r) is None


def test_user_group_key_lets_separate_requests_share():
    reg, core, _ = make()
    a = reg.member_of(req("a", {"group": "fork-1", "group_size": 2}, "ra", 1))
    b = reg.member_of(req("b", {"group": "fork-1", "group_size": 2}, "rb", 1))
    assert a.group == b.group == "user:local:fork-1" and reg.join(a) == reg.join(b)


def test_sharpen_only_request_is_a_member_without_a_slot():
    reg, core, _ = make()
    m = reg.member_of(req("a", {"beta": 0.5, "sharpen_only": True}, "ra", 2))
    assert m is not None and m.group is None and m.beta == 0.5
    assert reg.join(m) is None and core.bank.occupancy == 0
    rep = reg.report(m)
    assert rep["sharpen_only"] is True and rep["fallback"] is False and rep["steps"] == 0


def test_random_init_request_skips_the_warm_start():
    cfg = ESampConfig(bank_slots=2, width=8, session_max=0)
    core = ESampCore(cfg, 16, torch.randn(32, 16))
    core.bank.warm_start = {k: torch.full(v.shape[1:], 0.5) for k, v in core.bank.params.items()}
    reg = members_over(core, cfg)
    warm = reg.member_of(req("a", {"beta": 0.3}, "ra", 1))
    cold = reg.member_of(req("b", {"beta": 0.3, "init": "random"}, "rb", 1))
    sw, sc = reg.join(warm), reg.join(cold)
    assert torch.all(core.bank.params["blocks.0.up"][sw] == 0.5)
    assert torch.all(core.bank.params["blocks.0.down"][sc] == 0)      # random init: identity map
    assert reg.report(warm)["init"] == "warm" and reg.report(cold)["init"] == "random"


def test_siblings_that_end_before_decoding_still_leave_and_free_the_slot_at_once():
    """Two of four siblings end at their first token (never join): the slot goes with the last decoding one."""
    reg, core, clock = make(linger=30.0)
    sibs = [reg.member_of(req(f"r{i}", {"beta": 0.3}, "p", 4)) for i in range(4)]
    reg.leave(sibs[0])                       # ended at its first token, before the group existed
    reg.join(sibs[1]), reg.join(sibs[2])
    reg.leave(sibs[3])                       # ended at its first token, group live
    reg.leave(sibs[1])
    assert core.bank.occupancy == 1
    reg.leave(sibs[2])
    assert core.bank.occupancy == 0 and reg.table.groups == {}
    st = core.stats()
    assert st["groups_expired"] == 0 and st["members_left_before_decode"] == 2


def test_a_group_whose_members_all_end_before_decoding_never_takes_a_slot():
    reg, core, _ = make()
    sibs = [reg.member_of(req(f"r{i}", {"beta": 0.3}, "q", 3)) for i in range(3)]
    for m in sibs:
        reg.leave(m)
    assert core.bank.occupancy == 0 and reg.table.groups == {}
    assert reg.report(sibs[0])["steps"] == 0 and reg.report(sibs[0])["fallback"] is False


def test_the_prefix_caching_copy_of_an_n_request_is_no_member():
    """SGLang first sends a max_new_tokens=0 copy of an n>1 request (same stamp); counting it would free the slot
    while the last sibling has not joined yet."""
    reg, core, _ = make()
    warmup = req("w", {"beta": 0.3}, "p", 2)
    warmup.sampling_params.max_new_tokens = 0
    assert reg.member_of(warmup) is None
    a, b = (reg.member_of(req(r, {"beta": 0.3}, "p", 2)) for r in "ab")
    reg.join(a)
    reg.leave(a)                 # b has not joined yet: the slot stays
    assert core.bank.occupancy == 1
    reg.join(b)
    reg.leave(b)
    assert core.bank.occupancy == 0 and core.stats()["members_left_before_decode"] == 0


def test_a_member_that_left_never_rejoins_a_released_group():
    reg, core, _ = make()
    a = reg.member_of(req("a", {"beta": 0.3}, "p", 1))
    reg.join(a)
    reg.leave(a)
    assert core.bank.occupancy == 0
    assert reg.join(a) is None and core.bank.occupancy == 0 and reg.table.groups == {}


def test_who_joined_is_the_tables_while_the_group_lives_and_recorded_once_at_leave():
    ms, core, _ = make(slots=1)
    a, b = (ms.member_of(req(r, {"beta": 0.5}, "p", 2)) for r in ("a", "b"))
    assert not ms.joined(a) and ms.slot_of(a) is None           # parsed, not decoded yet
    slot = ms.join(a)
    assert ms.joined(a) and not ms.joined(b) and ms.slot_of(a) == slot
    assert ms.table.is_live(a.group, a.rid)
    ms.leave(a)
    assert a.left and a.ended.joined and a.ended.slot == slot and not ms.table.is_live(a.group, a.rid)
    ms.leave(b)                                                  # never decoded: the group is released
    assert ms.table.groups == {} and b.ended.joined is False
    assert ms.report(a)["slot"] == slot and ms.report(b)["fallback"] is False and ms.report(b)["slot"] is None
