"""Frontend programs against the real `python -m sglang_esamp.launch_server` (SmolLM2-135M-Instruct, CPU)."""
import time

import pytest
import requests
import sglang as sgl

import sglang_esamp.lang  # noqa: F401  (installs sgl.gen(..., esamp=...))
from sglang_esamp.algo.config import ESampParamError
from tests.server_utils import running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    d = tmp_path_factory.mktemp("esamp-frontend-server")
    with running_server(["--esamp-bank-slots", "6", "--log-level", "warning"], d / "server.log") as (base, _):
        yield sgl.RuntimeEndpoint(base)


def occupancy(base, timeout=30):
    deadline = time.time() + timeout
    while True:
        occ = requests.get(base + "/esamp/stats", timeout=30).json()["ranks"][0]["counters"]["bank_occupancy"]
        if occ == 0 or time.time() > deadline:
            return occ
        time.sleep(0.5)


@sgl.function
def poem(s, topic, esamp):
    s += sgl.user("Write a short poem about " + topic + ".")
    s += sgl.assistant_begin()
    forks = s.fork(4)
    for f in forks:
        f += sgl.gen("poem", max_tokens=16, temperature=1.0, ignore_eos=True, esamp=esamp)
    metas = [f.get_meta_info("poem") for f in forks]   # a branch's meta_info is read on the branch
    forks.join()                                       # gathers the texts: s["poem"] is a list of 4
    return metas


@sgl.function
def single(s, esamp):
    s += sgl.user("Name a colour.")
    s += sgl.assistant(sgl.gen("answer", max_tokens=8, temperature=1.0, esamp=esamp))


def test_forked_gens_share_one_distiller(backend):
    state = poem.run(topic="the sea", esamp={"beta": 0.3}, backend=backend)
    assert state.error() is None
    assert len(state["poem"]) == 4 and all(t.strip() for t in state["poem"])
    metas = [m["esamp"] for m in state.ret_value]
    assert len(metas) == 4 and len({m["group"] for m in metas}) == 1
    assert metas[0]["group"].startswith("user:anon:fork-")
    assert all(m["beta"] == 0.3 and m["steps"] > 0 and m["rows_trained"] >= m["steps"] for m in metas)
    assert all(m["slot"] is not None and not m["fallback"] for m in metas)
    assert metas[0]["rows_trained"] > metas[0]["steps"]   # the branches decoded in the same batches
    assert occupancy(backend.base_url) == 0      # group_size 4 was right: the slot is freed after the 4th
    again = poem.run(topic="the sea", esamp=True, backend=backend)
    assert again.ret_value[0]["esamp"]["group"] != metas[0]["group"]   # every fork point: a new group


def test_unforked_esamp_gen_gets_its_own_group_and_plain_gen_no_esamp(backend):
    a = single.run(esamp=True, backend=backend)
    b = single.run(esamp=True, backend=backend)
    off = single.run(esamp=None, backend=backend)
    disabled = single.run(esamp=False, backend=backend)
    ma, mb = a.get_meta_info("answer")["esamp"], b.get_meta_info("answer")["esamp"]
    assert ma["group"] != mb["group"] and ma["group"].startswith("req:") and ma["steps"] > 0
    assert a["answer"].strip() and off["answer"].strip()
    assert "esamp" not in off.get_meta_info("answer")
    assert "esamp" not in disabled.get_meta_info("answer")


def test_bad_value_raises_at_the_client(backend):
    with pytest.raises(ESampParamError, match="esamp.beta"):
        single.run(esamp={"beta": -0.5}, backend=backend)
