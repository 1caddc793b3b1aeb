"""`--dp-size 2` on the real server (SmolLM2, CPU, one core per rank): a group and a session each land on one DP
rank, through SGLang's own DP controller (routed_dp_rank); a group a client splits on purpose is counted."""
import time

import pytest
import requests

from tests.server_utils import running_server

pytestmark = pytest.mark.slow
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def dp_server(smollm2_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("esamp-dp")
    with running_server(["--dp-size", "2", "--esamp-bank-slots", "4", "--esamp-group-linger-s", "3",
                         "--max-total-tokens", "16384", "--log-level", "warning"], d / "server.log") as (base, _):
        yield base


def ranks(base):
    r = requests.get(base + "/esamp/stats", timeout=30)
    r.raise_for_status()
    out = r.json()["ranks"]
    assert sorted(x["dp_rank"] for x in out) == [0, 1]
    return {x["dp_rank"]: x["counters"] for x in out}


def delta(before, after, name):
    return {r: after[r][name] - before[r][name] for r in after}


def gen(base, sp, prompt="Write a line about the sea.", **extra):
    r = requests.post(base + "/generate", json={"text": CHAT.format(prompt), "sampling_params": sp, **extra},
                      timeout=600)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_n8_request_lands_on_one_rank_with_one_distiller(dp_server):
    before = ranks(dp_server)
    outs = gen(dp_server, {"temperature": 1.0, "max_new_tokens": 10, "n": 8, "ignore_eos": True,
                           "esamp": {"beta": 0.25}})
    metas = [o["meta_info"]["esamp"] for o in outs]
    assert len({m["group"] for m in metas}) == 1 and len({m["slot"] for m in metas}) == 1
    assert not any(m["off_rank"] for m in metas)
    after = ranks(dp_server)
    updates, rows = delta(before, after, "updates"), delta(before, after, "rows_trained")
    served = [r for r in updates if updates[r] > 0]
    assert len(served) == 1                                    # one rank trained, the other did nothing
    steps = metas[0]["steps"]
    assert steps > 0 and rows[served[0]] == 8 * steps          # all 8 siblings' rows, every step, one distiller
    assert all(after[r]["bank_occupancy"] == after[r]["sessions_live"] for r in after)


def test_a_session_stays_on_its_rank(dp_server):
    first = gen(dp_server, {"max_new_tokens": 6, "ignore_eos": True, "esamp": {"session": "new"}})
    sid, slot = first["meta_info"]["esamp"]["session"], first["meta_info"]["esamp"]["slot"]
    before = ranks(dp_server)
    for prompt in ("Name a fruit.", "Name a tree.", "Name a bird."):
        m = gen(dp_server, {"max_new_tokens": 6, "ignore_eos": True, "esamp": {"session": sid}}, prompt)["meta_info"]
        assert m["esamp"]["session"] == sid and m["esamp"]["slot"] == slot and not m["esamp"]["off_rank"]
    updates = delta(before, ranks(dp_server), "updates")
    assert sorted(v > 0 for v in updates.values()) == [False, True]
    after = ranks(dp_server)
    assert sum(after[r]["sessions_live"] for r in after) == 1


def test_a_group_split_by_client_chosen_ranks_is_counted_and_reported(dp_server):
    before = ranks(dp_server)
    sp = {"max_new_tokens": 6, "ignore_eos": True, "esamp": {"group": "split-on-purpose", "group_size": 2}}
    metas = [gen(dp_server, sp, routed_dp_rank=rank)["meta_info"]["esamp"] for rank in (0, 1)]
    assert sorted(m["off_rank"] for m in metas) == [False, True]
    after = ranks(dp_server)
    assert sum(delta(before, after, "members_off_rank").values()) == 1
    deadline = time.time() + 10                                # each half waits for a sibling that went elsewhere
    while any(ranks(dp_server)[r]["groups_live"] for r in (0, 1)) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(ranks(dp_server)[r]["groups_live"] for r in (0, 1))
