"""serve/server_probe.py: the one client the benchmarks use for /health, /esamp/stats and /model_info.

A small HTTP server of the standard library answers as the routes of an ESamp server or of a stock one would; the
live-server benchmark tests (tests/bench) run the same probe against the real server."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sglang_esamp.serve.local_server import free_port
from sglang_esamp.serve.server_probe import ProbeError, ServerProbe, config_of, total_of

STATS = {"total": {"updates": 7, "bank_occupancy": 1},
         "ranks": [{"counters": {"updates": 7}, "config": {"bank_slots": 10, "warm_start": None}}]}


def _server(routes):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = routes.get(self.path, (404, {"detail": "Not Found"}))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def serve():
    started = []

    def start(routes):
        httpd = _server(routes)
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def test_an_esamp_server_answers_every_probe(serve):
    base = serve({"/health": (200, {}), "/esamp/stats": (200, STATS),
                  "/get_model_info": (200, {"model_path": "/models/qwen"})})
    with ServerProbe(base + "/") as probe:
        assert probe.health().ok and probe.health().status == 200
        assert probe.esamp_stats() == STATS
        assert probe.esamp_total() == {"updates": 7, "bank_occupancy": 1}
        assert probe.esamp_config()["bank_slots"] == 10
        # /model_info is missing here (older SGLang): the probe falls back to /get_model_info
        assert probe.model_info() == {"model_path": "/models/qwen"}


def test_a_stock_server_has_no_esamp_stats(serve):
    base = serve({"/health": (200, {}), "/model_info": (200, {"model_path": "m"})})
    with ServerProbe(base) as probe:
        with pytest.raises(ProbeError, match="/esamp/stats.*404"):
            probe.esamp_stats()
        assert probe.esamp_stats_or_none() is None
        assert probe.esamp_config() == {}
        assert probe.model_info() == {"model_path": "m"}


def test_a_sick_or_garbled_server_is_told_apart_from_a_healthy_one(serve):
    base = serve({"/health": (503, {}), "/esamp/stats": (200, b"<html>not json</html>")})
    with ServerProbe(base) as probe:
        assert probe.health().status == 503 and not probe.health().ok
        with pytest.raises(ProbeError, match="JSONDecodeError|ValueError"):
            probe.esamp_stats()
        assert probe.model_info() == {}


def test_nothing_listening_is_an_answer_not_an_exception():
    with ServerProbe(f"http://127.0.0.1:{free_port()}", timeout_s=2) as probe:
        health = probe.health(timeout_s=1)
        assert health.status is None and not health.ok and "ConnectError" in health.error
        assert probe.esamp_stats_or_none() is None


def test_the_stats_helpers_read_partial_answers():
    assert config_of(None) == {} and total_of(None) == {}
    assert config_of({"ranks": [None]}) == {} and config_of({"ranks": []}) == {}
    assert total_of(STATS) == STATS["total"] and config_of(STATS) == STATS["ranks"][0]["config"]
