"""Group membership and slot lifecycle in the scheduler (GroupRegistry over a real ESampCore, tiny sizes)."""
import types

import pytest
import torch

from sglang_esamp.algo.config import ESampConfig
from sglang_esamp.algo.core import ESampCore
from sglang_esamp.runtime.groups import GroupRegistry
from sglang_esamp.runtime.request_params import stamp_group


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(slots=2, linger=5.0):
    cfg = ESampConfig(bank_slots=slots, width=8, session_max=0)
    core = ESampCore(cfg, 16, torch.randn(32, 16))
    clock = Clock()
    return GroupRegistry(core, cfg, linger_s=linger, clock=clock), core, clock


def req(rid, esamp, group_rid, n):
    custom = stamp_group({"esamp": esamp}, default_key=group_rid, default_size=n) or {"esamp": esamp}
    return types.SimpleNamespace(rid=rid, sampling_params=types.SimpleNamespace(custom_params=custom))


def test_siblings_share_a_slot_released_after_the_last_of_n():
    reg, core, _ = make()
    sibs = [reg.info_for(req(f"r{i}", {"beta": 0.3}, "parent", 3)) for i in range(3)]
    assert {s.group for s in sibs} == {"req:parent"}
    slots = {reg.join(s) for s in sibs[:2]}
    assert len(slots) == 1 and core.bank.occupancy == 1
    reg.leave(sibs[0])
    reg.leave(sibs[1])          # two left, the third has not even joined yet: keep the slot
    assert core.bank.occupancy == 1
    reg.join(sibs[2])
    reg.leave(sibs[2])
    assert core.bank.occupancy == 0 and reg.groups == {}


def test_incomplete_group_is_released_after_linger_and_counted():
    reg, core, clock = make(linger=5.0)
    a = reg.info_for(req("a", True, "p", 4))
    reg.join(a)
    reg.leave(a)
    clock.t = 4.0
    reg.expire()
    assert core.bank.occupancy == 1
    clock.t = 10.0
    reg.expire()
    assert core.bank.occupancy == 0 and reg.groups_expired == 1


def test_bank_full_gives_stock_sampling_and_a_counter():
    reg, core, _ = make(slots=1)
    a, b = reg.info_for(req("a", True, "g1", 1)), reg.info_for(req("b", True, "g2", 1))
    assert reg.join(a) is not None
    assert reg.join(b) is None
    assert core.stats()["bank_full_fallbacks"] == 1
    assert reg.stats_for(b)["fallback"] is True


@pytest.mark.parametrize("esamp", [None, False, {"beta": 0}, {"enabled": False}])
def test_requests_without_esamp_have_no_info(esamp):
    reg, _, _ = make()
    r = types.SimpleNamespace(rid="x", sampling_params=types.SimpleNamespace(
        custom_params=None if esamp is None else stamp_group({"esamp": esamp}, "x", 1) or {"esamp": esamp}))
    assert reg.info_for(r) is None


def test_user_group_key_lets_separate_requests_share():
    reg, core, _ = make()
    a = reg.info_for(req("a", {"group": "fork-1", "group_size": 2}, "ra", 1))
    b = reg.info_for(req("b", {"group": "fork-1", "group_size": 2}, "rb", 1))
    assert a.group == b.group == "user:fork-1" and reg.join(a) == reg.join(b)
