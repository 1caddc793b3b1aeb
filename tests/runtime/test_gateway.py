"""Two ESamp servers behind the SGLang gateway (`smg`, its consistent-hashing policy on the routing key): an n=4
request and a session's follow-ups each land on one worker with one distiller; a session sent to the wrong worker
is refused loudly (its id is signed by the worker that issued it), never served by a fresh distiller."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests

from sglang_esamp.serve.local_server import free_port
from tests.server_utils import running_server

pytestmark = pytest.mark.slow
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
ROUTING_HEADER = "x-smg-routing-key"


@pytest.fixture(scope="module")
def fleet(smollm2_path, tmp_path_factory):
    pytest.importorskip("smg")
    d = tmp_path_factory.mktemp("esamp-gateway")
    args = ["--esamp-bank-slots", "4", "--max-total-tokens", "16384", "--log-level", "warning"]
    with running_server(args, d / "w0.log") as (w0, _), running_server(args, d / "w1.log") as (w1, _):
        port = free_port()
        log = open(d / "gateway.log", "w")
        gw = subprocess.Popen([sys.executable, "-m", "smg.launch_router", "--host", "127.0.0.1", "--port", str(port),
                               "--worker-urls", w0, w1, "--policy", "consistent_hashing"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 180
            while True:
                assert gw.poll() is None, (d / "gateway.log").read_text()[-3000:]
                try:
                    if requests.get(base + "/health", timeout=2).status_code == 200 and \
                            requests.post(base + "/generate", json={"text": "hi", "sampling_params": {
                                "max_new_tokens": 1}}, timeout=30).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.time() < deadline, (d / "gateway.log").read_text()[-3000:]
                time.sleep(1)
            yield {"gateway": base, "workers": [w0, w1]}
        finally:
            os.killpg(gw.pid, signal.SIGTERM)
            gw.wait(timeout=30)


def updates(worker):
    return requests.get(worker + "/esamp/stats", timeout=30).json()["total"]["updates"]


def gen(base, sp, key=None, prompt="Write a line about the sea."):
    """The gateway parses sampling_params into its own schema and drops unknown keys, so through it the esamp value
    travels in custom_params (which it forwards)."""
    sp = dict(sp)
    if "esamp" in sp:
        sp["custom_params"] = {"esamp": sp.pop("esamp")}
    headers = {ROUTING_HEADER: key} if key else None
    return requests.post(base + "/generate", json={"text": CHAT.format(prompt), "sampling_params": sp},
                         headers=headers, timeout=600)


def test_an_n4_request_through_the_gateway_trains_one_distiller_on_one_worker(fleet):
    before = [updates(w) for w in fleet["workers"]]
    r = gen(fleet["gateway"], {"temperature": 1.0, "max_new_tokens": 8, "n": 4, "ignore_eos": True,
                               "esamp": {"beta": 0.25}}, key="group-" + uuid.uuid4().hex)
    assert r.status_code == 200, r.text
    metas = [o["meta_info"]["esamp"] for o in r.json()]
    assert len({m["group"] for m in metas}) == 1 and len({m["slot"] for m in metas}) == 1
    assert all(m["steps"] > 0 for m in metas)
    grew = [u - b > 0 for u, b in zip([updates(w) for w in fleet["workers"]], before)]
    assert sorted(grew) == [False, True]


def test_a_session_pinned_by_its_routing_key_stays_on_one_worker(fleet):
    key = "conversation-" + uuid.uuid4().hex
    sp = lambda session: {"max_new_tokens": 6, "ignore_eos": True, "esamp": {"session": session}}  # noqa: E731
    r = gen(fleet["gateway"], sp("new"), key=key)
    assert r.status_code == 200, r.text
    first = r.json()["meta_info"]["esamp"]
    before = [updates(w) for w in fleet["workers"]]
    for prompt in ("Name a fruit.", "Name a tree."):
        r = gen(fleet["gateway"], sp(first["session"]), key=key, prompt=prompt)
        assert r.status_code == 200, r.text
        m = r.json()["meta_info"]["esamp"]
        assert m["session"] == first["session"] and m["slot"] == first["slot"]
    grew = [u - b > 0 for u, b in zip([updates(w) for w in fleet["workers"]], before)]
    assert sorted(grew) == [False, True]
    holder = fleet["workers"][grew.index(True)]
    other = fleet["workers"][grew.index(False)]
    # the same session id at the other worker (a router that lost the key): refused, naming the field
    r = gen(other, sp(first["session"]))
    assert r.status_code == 400 and r.json()["error"]["param"] == "esamp.session"
    assert gen(holder, sp(first["session"])).status_code == 200


def grown(fleet, before):
    return [u - b > 0 for u, b in zip([updates(w) for w in fleet["workers"]], before)]


def test_frontend_fork_branches_through_the_gateway_reach_one_worker(fleet):
    """sgl.gen(esamp=True) in s.fork(4): four separate requests, one routing key (lang/routing.py), one worker."""
    import sglang as sgl
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    import sglang_esamp.lang  # noqa: F401

    @sgl.function
    def poems(s):
        s += CHAT.format("Write a line about the sea.")
        forks = s.fork(4)
        for f in forks:
            f += sgl.gen("line", max_tokens=6, temperature=1.0, ignore_eos=True, esamp=True)
        return [f.get_meta_info("line")["esamp"] for f in forks]

    backend = RuntimeEndpoint(fleet["gateway"])
    for _ in range(3):        # unkeyed, four requests would all meet on one of two workers 1 time in 8
        before = [updates(w) for w in fleet["workers"]]
        state = poems.run(backend=backend)
        assert state.error() is None, state.error()
        metas = state.ret_value
        assert len({m["group"] for m in metas}) == 1 and len({m["slot"] for m in metas}) == 1
        assert all(m["steps"] > 0 for m in metas)
        assert sorted(grown(fleet, before)) == [False, True]


def test_frontend_session_turns_through_the_gateway_stay_on_its_worker(fleet):
    import sglang as sgl
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    import sglang_esamp.lang  # noqa: F401

    @sgl.function
    def turn(s, prompt, session):
        s += CHAT.format(prompt) + sgl.gen("a", max_tokens=6, ignore_eos=True, esamp={"session": session})

    backend = RuntimeEndpoint(fleet["gateway"])
    first = turn.run(backend=backend, prompt="Name a fruit.", session="new").get_meta_info("a")["esamp"]
    for prompt in ("Name a tree.", "Name a river.", "Name a bird."):
        before = [updates(w) for w in fleet["workers"]]
        m = turn.run(backend=backend, prompt=prompt, session=first["session"]).get_meta_info("a")["esamp"]
        assert m["session"] == first["session"] and m["slot"] == first["slot"]
        assert sorted(grown(fleet, before)) == [False, True]


def test_openai_top_level_esamp_through_the_gateway(fleet):
    """The OpenAI routes: smg forwards the top-level ``esamp`` field (the OpenAI client's extra_body) untouched."""
    gw = fleet["gateway"]
    model = requests.get(gw + "/v1/models", timeout=30).json()["data"][0]["id"]
    body = {"model": model, "messages": [{"role": "user", "content": "Write a line about the sea."}],
            "max_tokens": 6, "n": 2, "temperature": 1.0, "esamp": {"beta": 0.25}}
    before = [updates(w) for w in fleet["workers"]]
    r = requests.post(gw + "/v1/chat/completions", json=body, headers={ROUTING_HEADER: "chat-" + uuid.uuid4().hex},
                      timeout=600)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2
    assert sorted(grown(fleet, before)) == [False, True]
    r = requests.post(gw + "/v1/chat/completions", json={**body, "esamp": {"beta": "high"}}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "esamp.beta"
