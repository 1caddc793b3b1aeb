"""Frontend programs on an in-process `sglang_esamp.Engine` through `sglang_esamp.lang.EngineBackend`."""
import time

import pytest
import sglang as sgl

from sglang_esamp.algo.config import ESampParamError
from sglang_esamp.lang import EngineBackend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(smollm2_path):
    import sglang_esamp

    engine = sglang_esamp.Engine(model_path=smollm2_path, esamp={"bank_slots": 4}, log_level="error",
                                 max_total_tokens=8192)
    try:
        yield EngineBackend(engine)
    finally:
        engine.shutdown()


def occupancy(engine, timeout=30):
    deadline = time.time() + timeout
    while True:
        occ = engine.get_server_info()["internal_states"][0]["esamp"]["counters"]["bank_occupancy"]
        if occ == 0 or time.time() > deadline:
            return occ
        time.sleep(0.5)


@sgl.function
def poem(s, topic):
    s += sgl.user("Write a short poem about " + topic + ".")
    s += sgl.assistant_begin()
    forks = s.fork(4)
    for f in forks:
        f += sgl.gen("poem", max_tokens=16, temperature=1.0, ignore_eos=True, esamp={"beta": 0.3})
    metas = [f.get_meta_info("poem") for f in forks]
    forks.join()
    return metas


@sgl.function
def single(s, esamp):
    s += sgl.user("Name a colour.")
    s += sgl.assistant(sgl.gen("answer", max_tokens=8, temperature=1.0, ignore_eos=True, esamp=esamp))


def test_forked_gens_share_one_distiller(backend):
    state = poem.run(topic="the sea", backend=backend)
    assert state.error() is None
    assert len(state["poem"]) == 4 and all(t.strip() for t in state["poem"])
    metas = [m["esamp"] for m in state.ret_value]
    assert len({m["group"] for m in metas}) == 1 and metas[0]["group"].startswith("user:local:fork-")
    assert all(m["beta"] == 0.3 and m["steps"] > 0 and m["slot"] is not None for m in metas)
    assert metas[0]["rows_trained"] > metas[0]["steps"]   # the branches decoded in the same batches
    # between programs the engine's own blocking API works again (the backend's loop driver has stopped)
    assert occupancy(backend.engine) == 0
    assert backend.engine.generate("Hello", {"max_new_tokens": 2, "temperature": 0})["text"] is not None


def test_unforked_and_plain_gens(backend):
    states = single.run_batch([{"esamp": True}, {"esamp": True}, {"esamp": None}], backend=backend)
    metas = [s.get_meta_info("answer") for s in states]
    assert all(s["answer"].strip() for s in states)
    assert metas[0]["esamp"]["group"] != metas[1]["esamp"]["group"]
    assert all(m["esamp"]["group"].startswith("req:") and m["esamp"]["steps"] > 0 for m in metas[:2])
    assert "esamp" not in metas[2]


def test_streamed_run_carries_esamp(backend):
    state = single.run(esamp={"beta": 0.2}, stream=True, backend=backend)
    pieces = list(state.text_iter("answer"))
    assert "".join(pieces).strip() and "".join(pieces) == state["answer"]
    meta = state.get_meta_info("answer")["esamp"]
    assert meta["beta"] == 0.2 and meta["steps"] > 0


def test_bad_value_raises_at_the_client(backend):
    with pytest.raises(ESampParamError, match="esamp"):
        single.run(esamp="on", backend=backend)
