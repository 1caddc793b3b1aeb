"""bench_soak against one real SmolLM2 server (CI smoke test): ~100 mixed requests at concurrency 8, then the report.

One server with the shipped warm start; the soak sends every traffic kind (ESamp on/off, n up to 8, filters,
greedy, streams and mid-stream disconnects, explicit groups, sessions, the sharpening control, the first-token-end
prompt, bad inputs, the OpenAI routes, batched /generate) and must find: every status as expected, no 5xx, no
connection error, the server alive, the bank back to the sessions' slots, no group expired, and ESamp work done.
The fast tests check the command line, the plan, and the soak against a model-free fake server: one of the older
session protocol (any key is a session), and a broken one (a 5xx and a leaked slot must fail the run).
"""
import json

import pytest

from tests.server_utils import running_server

REQUESTS, CONCURRENCY, MAX_TOKENS = 100, 8, 16


def test_base_url_must_be_loopback(capsys):
    from sglang_esamp.bench.soak.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--base-url", "http://10.1.2.3:30000", "--requests", "1"])
    assert e.value.code == 2 and "--base-url" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--base-url", "http://127.0.0.1:30000", "--faults", "predict:0.1"])   # faults need --model


def test_plan_covers_every_kind_and_is_seeded():
    import random

    from sglang_esamp.bench.soak.mix import WEIGHTS, Capabilities, Planner

    caps = Capabilities(session_mode="issued", rejects_unissued=True)
    plan = lambda seed: Planner(random.Random(seed), MAX_TOKENS, caps, "t").plan(REQUESTS)   # noqa: E731
    units = plan(0)
    assert {u.kind for u in units} == set(WEIGHTS)
    assert REQUESTS <= sum(len(u.calls) for u in units) < REQUESTS + 3
    assert [c.body for u in units for c in u.calls] == [c.body for u in plan(0) for c in u.calls]
    for u in units:
        if u.kind == "group":   # every member is sent: group_size is what the unit holds
            assert u.meta["group_size"] == sum(c.body["sampling_params"]["n"] for c in u.calls)


class _LegacyFakeServer:
    """A model-free stand-in for a server of the *current* session protocol (any non-empty key is a session key,
    meta_info.esamp has no ``session``, no ``sessions_live`` counter): the soak must detect it, leave the
    unissued-id kind out, and still check occupancy exactly."""

    def __init__(self, broken: bool = False):
        import threading

        self.lock = threading.Lock()
        self.sessions, self.updates, self.requests = set(), 0, 0
        self.broken = broken    # one slot never comes back, and the 5th /generate is answered 500

    def app(self):
        import asyncio

        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        from sglang_esamp.algo.config import ESampParamError
        from sglang_esamp.wire.request import ESampRequest

        def bad(e):
            return JSONResponse({"error": {"message": str(e), "param": e.field, "code": 400}}, status_code=400)

        def esamp_of(holder):
            custom = holder.get("custom_params")
            if custom is not None and not isinstance(custom, dict):
                raise ESampParamError("custom_params", "must be an object")
            value = holder.pop("esamp", None)
            return ESampRequest.parse(value if value is not None else (custom or {}).get("esamp"))

        def meta(req, decodes):
            if req is None or not req.enabled:
                return None
            slot = 0 if decodes and not req.sharpen_only else None
            if slot is not None:
                with self.lock:
                    self.updates += 1
                    if req.session:
                        self.sessions.add(req.session)
            return {"beta": req.beta or 0.25, "group": None if req.sharpen_only else "req:x", "slot": slot,
                    "fallback": False, "steps": int(slot is not None)}

        async def generate(request):
            body = await request.json()
            with self.lock:
                self.requests += 1
                if self.broken and self.requests == 5:
                    return JSONResponse({"error": {"message": "boom"}}, status_code=500)
            sp = dict(body.get("sampling_params") or {})
            try:
                req = esamp_of(sp)
            except ESampParamError as e:
                return bad(e)
            n, prompts = int(sp.get("n", 1)), body["text"] if isinstance(body["text"], list) else [body["text"]]
            m = meta(req, sp.get("max_new_tokens", 16) > 1)
            outs = [{"text": " ok", "index": i, "meta_info": {"esamp": m, "num_retractions": 0}}
                    for i in range(n * len(prompts))]
            if body.get("stream"):
                async def chunks():
                    for _ in range(3):
                        for o in outs:
                            await asyncio.sleep(0.01)
                            yield b"data: " + json.dumps(o).encode() + b"\n\n"
                    yield b"data: [DONE]\n\n"
                return StreamingResponse(chunks(), media_type="text/event-stream")
            return JSONResponse(outs if len(outs) > 1 else outs[0])

        async def openai_route(request):
            body = await request.json()
            try:
                esamp_of(body)
            except ESampParamError as e:
                return bad(e)
            chat = request.url.path.endswith("chat/completions")
            def choice(i):
                out = {"index": i, "finish_reason": "stop"}
                return {**out, "message": {"role": "assistant", "content": "ok"}} if chat else {**out, "text": "ok"}
            return JSONResponse({"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 0,
                                 "model": "fake", "choices": [choice(i) for i in range(int(body.get("n", 1)))]})

        async def stats(_request):
            with self.lock:
                leaked = int(self.broken and self.updates > 0)
                total = {"bank_occupancy": len(self.sessions) + leaked, "groups_live": 0, "updates": self.updates,
                         "esamp_steps": self.updates, "groups_expired": 0, "sessions_evicted": 0,
                         "session_overflows": 0, "step_errors": 0, "bank_slots": 16}
            return JSONResponse({"ranks": [{"counters": total, "config": {"session_max": 4, "bank_slots": 16,
                                                                          "default_beta": 0.25}}], "total": total})

        async def health(_request):
            return JSONResponse({})

        return Starlette(routes=[Route("/generate", generate, methods=["POST"]),
                                 Route("/v1/completions", openai_route, methods=["POST"]),
                                 Route("/v1/chat/completions", openai_route, methods=["POST"]),
                                 Route("/esamp/stats", stats), Route("/health", health)])


@pytest.fixture
def fake_server():
    """``fake_server(broken)`` -> base URL of a _LegacyFakeServer on a free port (stopped after the test)."""
    import threading
    import time
    from contextlib import ExitStack

    import uvicorn

    from sglang_esamp.serve.local_server import free_port

    stack = ExitStack()

    def start(broken=False):
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(_LegacyFakeServer(broken).app(), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        stack.callback(thread.join, 10)
        stack.callback(setattr, server, "should_exit", True)
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    with stack:
        yield start


def test_soak_handles_a_server_without_issued_session_ids(fake_server, tmp_path):
    from sglang_esamp.bench.soak.cli import main

    rc = main(["--base-url", fake_server(), "--requests", "60", "--concurrency", "6", "--max-tokens", "4",
               "--no-progress", "--output", str(tmp_path / "soak.json")])
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert doc["session_protocol"]["mode"] == "legacy" and not doc["session_protocol"]["rejects_unissued"]
    assert "session_unissued" not in doc["kinds"] and doc["kinds"]["session"]["statuses"] == {"200": doc["kinds"][
        "session"]["sent"]}
    assert doc["unexpected"] == 0 and doc["connection_errors"] == 0, doc["examples"]
    occ = doc["occupancy"]
    assert occ["exact"] and occ["settled"] and occ["occupancy_after"] == occ["expected_occupancy"] >= 1, occ
    assert doc["ok"] and rc == 0, doc["failures"]


def test_soak_fails_on_a_5xx_and_a_leaked_slot(fake_server, tmp_path):
    from sglang_esamp.bench.soak.cli import main

    rc = main(["--base-url", fake_server(broken=True), "--requests", "30", "--concurrency", "3", "--max-tokens", "4",
               "--no-progress", "--settle-timeout", "1", "--output", str(tmp_path / "soak.json")])
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert rc == 1 and not doc["ok"]
    assert doc["http_5xx"] == 1 and doc["unexpected"] == 1 and doc["examples"][0]["status"] == 500
    assert not doc["occupancy"]["settled"] and doc["occupancy"]["occupancy_after"] == \
        doc["occupancy"]["expected_occupancy"] + 1
    assert any("5xx" in f for f in doc["failures"]) and any("not settled" in f for f in doc["failures"])


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    from sglang_esamp.bench.soak.cli import main

    d = tmp_path_factory.mktemp("bench-soak")
    with running_server(["--log-level", "warning", "--esamp-warm-start", "shipped"], d / "server.log") as \
            (base, proc):
        rc = main(["--base-url", base, "--requests", str(REQUESTS), "--concurrency", str(CONCURRENCY),
                   "--max-tokens", str(MAX_TOKENS), "--seed", "0", "--no-progress", "--output", str(d / "soak.json")])
        alive = proc.poll() is None
    return {"rc": rc, "doc": json.loads((d / "soak.json").read_text()), "alive": alive}


@pytest.mark.slow
def test_soak_finds_nothing_unexpected(soak):
    doc = soak["doc"]
    assert doc["unexpected"] == 0, doc["examples"]
    assert doc["http_5xx"] == 0 and doc["connection_errors"] == 0, doc["connection_error_examples"]
    assert doc["server_health"]["alive"] and soak["alive"]
    assert doc["failures"] == [] and doc["ok"] is True and soak["rc"] == 0, doc["failures"]
    assert doc["load"]["sent"] >= REQUESTS and not doc["load"]["stopped_by_time_limit"]


@pytest.mark.slow
def test_every_kind_was_sent_and_answered_as_expected(soak):
    from sglang_esamp.bench.soak.mix import BAD_INPUTS, WEIGHTS

    doc = soak["doc"]
    kinds = set(WEIGHTS) - (set() if doc["session_protocol"]["rejects_unissued"] else {"session_unissued"})
    assert set(doc["kinds"]) == kinds
    for name, k in doc["kinds"].items():
        expected = "400" if name in ("bad_input", "session_unissued") else "200"
        assert set(k["statuses"]) == {expected}, (name, k)
    assert set(doc["bad_inputs"]) <= set(BAD_INPUTS)
    assert doc["disconnected_as_planned"] >= 1 and doc["outputs_with_esamp"] > 0


@pytest.mark.slow
def test_bank_settles_and_no_group_expires(soak):
    doc = soak["doc"]
    occ, delta = doc["occupancy"], doc["counters"]["delta"]
    assert occ["settled"] and occ["groups_live_after"] == 0, occ
    assert occ["occupancy_after"] == occ["expected_occupancy"] and occ["exact"], occ
    assert delta["groups_expired"] == 0
    print("settle:", occ["settle_s"], "s; counters:", doc["counters"]["shown"])


@pytest.mark.slow
def test_esamp_work_happened(soak):
    delta = soak["doc"]["counters"]["delta"]
    assert delta["updates"] > 0 and delta["esamp_steps"] > 0 and delta["candidate_rows_reweighted"] > 0, delta
    # every group that got a slot, and every one that fell back (bank full), was released again
    assert delta["groups_acquired"] > 0
    assert delta["groups_released"] == delta["groups_acquired"] + delta["bank_full_fallbacks"], delta
    assert delta["step_errors"] == 0 and delta.get("tap_misses", 0) == 0, delta
