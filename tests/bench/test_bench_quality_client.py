"""bench.quality's HTTP client: a request that times out is not resubmitted (the server may still be generating it;
a copy would double its batch), and a dropped connection is retried."""
import http.server
import json
import threading
import time

import pytest


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _serve(delay_s, fail_first=0):
    posts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(time.time())
            if len(posts) <= fail_first:          # drop the connection without an answer
                self.connection.close()
                return
            time.sleep(delay_s)
            body = json.dumps([{"text": "ok"}]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, posts


def test_a_timed_out_request_is_not_resubmitted():
    from sglang_esamp.bench.quality.client import ServerClient

    server, posts = _serve(delay_s=1.5)
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=0.3)
        with pytest.raises(RuntimeError, match="--request-timeout"):
            client.generate([1, 2], {"n": 1})
        time.sleep(0.2)
        assert len(posts) == 1
    finally:
        server.shutdown()


def test_a_dropped_connection_is_retried():
    from sglang_esamp.bench.quality.client import ServerClient

    server, posts = _serve(delay_s=0.0, fail_first=1)
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=5)
        assert client.generate([1, 2], {"n": 1}) == [{"text": "ok"}]
        assert len(posts) == 2
    finally:
        server.shutdown()
