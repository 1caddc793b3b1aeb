"""The gateway routing key on frontend gens (lang/routing.py), against a small recording HTTP server: which gens
carry `x-smg-routing-key`, and that a session's turns carry the key its first request was sent with."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sglang as sgl
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

import sglang_esamp.lang  # noqa: F401  (installs the patches)
from sglang_esamp.lang.routing import ROUTING_HEADER, SessionKeys, key_for


class Recording(BaseHTTPRequestHandler):
    seen = []
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply({"model_path": "recorder", "is_generation": True})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        esamp = body["sampling_params"].get("custom_params", {}).get("esamp")
        with self.lock:
            self.seen.append({"key": self.headers.get(ROUTING_HEADER), "esamp": esamp})
        meta = {"prompt_tokens": 1, "completion_tokens": 1}
        if isinstance(esamp, dict) and esamp.get("session") == "new":
            meta["esamp"] = {"session": "minted-by-server"}
        self._reply({"text": " ok", "meta_info": meta})


@pytest.fixture()
def endpoint():
    Recording.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RuntimeEndpoint(f"http://127.0.0.1:{server.server_port}", chat_template_name="default")
    finally:
        server.shutdown()


def test_key_for_groups_sessions_and_plain_requests():
    assert key_for({"group": "g1"}) == "group:g1"
    assert key_for({"session": "abc"}) == "session:abc"
    assert key_for({"session": "new"}).startswith("session:") and key_for({"session": "new"}) != key_for(
        {"session": "new"})
    assert key_for({"session": "abc", "enabled": False}) is None
    assert key_for(True) is None and key_for({"beta": 0.2}) is None and key_for(None) is None


def test_session_keys_are_bounded():
    keys = SessionKeys(capacity=2)
    for i in range(3):
        keys.remember(f"s{i}", f"k{i}")
    assert keys.get("s0") is None and keys.get("s2") == "k2"


def test_fork_branches_share_one_key_and_plain_gens_send_none(endpoint):
    @sgl.function
    def prog(s):
        s += "Q:"
        forks = s.fork(3)
        for f in forks:
            f += sgl.gen("a", max_tokens=2, esamp=True)
        forks.join()
        s += sgl.gen("b", max_tokens=2, esamp=True)     # outside a fork: one request, no key needed
        s += sgl.gen("c", max_tokens=2)                 # no ESamp: the stock request

    prog.run(backend=endpoint).sync()
    keys = [c["key"] for c in Recording.seen]
    assert len(keys) == 5
    fork_keys = {c["key"] for c in Recording.seen if isinstance(c["esamp"], dict)}
    assert len(fork_keys) == 1 and next(iter(fork_keys)).startswith("group:fork-")
    assert keys.count(None) == 2


def test_a_sessions_turns_carry_the_key_of_its_first_request(endpoint):
    @sgl.function
    def turn(s, session):
        s += "Q:" + sgl.gen("a", max_tokens=2, esamp={"session": session})

    first = turn.run(backend=endpoint, session="new")
    assert first.get_meta_info("a")["esamp"]["session"] == "minted-by-server"
    turn.run(backend=endpoint, session="minted-by-server").sync()
    turn.run(backend=endpoint, session="minted-by-server").sync()
    keys = [c["key"] for c in Recording.seen]
    assert keys[0].startswith("session:") and keys[0] != "session:minted-by-server"
    assert keys == [keys[0]] * 3
