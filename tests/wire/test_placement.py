"""Group -> DP rank placement: stable across processes, one rank per group and per session, spread over ranks."""
import subprocess
import sys
import uuid

from sglang_esamp.wire.placement import placement_rank, routing_key
from sglang_esamp.wire.request import GROUP_KEY, accept, stamp_group


def stamped(esamp, rid, n=1, dp=2):
    holder = {"esamp": esamp}
    accept(holder)
    return stamp_group(holder["custom_params"], rid, n, dp_size=dp)[GROUP_KEY]


def test_the_rank_is_the_same_in_another_process():
    key = "req:" + uuid.uuid4().hex
    here = [placement_rank(key, d) for d in (2, 3, 8)]
    code = f"from sglang_esamp.wire.placement import placement_rank as p; print([p({key!r}, d) for d in (2, 3, 8)])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert there.strip() == str(here)


def test_a_session_routes_by_its_id_and_per_request_groups_spread():
    holder = {"esamp": {"session": "new"}}
    accept(holder)
    sid = holder["custom_params"]["esamp"]["session"]
    ranks = {stamped({"session": sid}, uuid.uuid4().hex, dp=4)["rank"] for _ in range(20)}
    assert ranks == {placement_rank(routing_key("ignored", sid), 4)}     # every request of the session, one rank
    spread = [stamped(True, uuid.uuid4().hex, dp=2)["rank"] for _ in range(400)]
    assert 150 < sum(spread) < 250                                       # random request ids: both ranks used
    assert stamped(True, "r", dp=1)["rank"] == 0
