"""ESamp's HTTP surface, added to SGLang's FastAPI app in the server process.

* A small ASGI middleware moves the user's ``esamp`` value to where SGLang carries per-request values
  (``custom_params.esamp``) before SGLang parses the body: ``sampling_params.esamp`` on ``/generate`` (SGLang's
  schema gate would reject the unknown key) and the top-level ``esamp`` field on ``/v1/completions`` and
  ``/v1/chat/completions`` (the OpenAI request models would drop it). A bad value is answered with HTTP 400 whose
  message and ``param`` name the field; the request never reaches the scheduler.
* ``GET /esamp/stats``: the counters of every scheduler (one per DP rank), fetched through SGLang's own
  internal-state RPC, plus their total as each counter declares (``wire.stats``).
``before_launch_http`` is the hook (``sglang_esamp.hooks``) that installs both on SGLang's app.
"""
from __future__ import annotations

import json
from typing import Any, Callable, List, Optional

from ..algo.config import ESampParamError
from ..wire.handoff import config_from_env
from ..wire.hookspec import BEFORE, hook
from ..wire.request import accept
from ..wire.stats import merge_counters

GENERATE_PATHS = {"/generate"}
OPENAI_PATHS = {"/v1/completions", "/v1/chat/completions"}


def rewrite_body(path: str, body: Any, authorization: Optional[str] = None) -> Any:
    """Returns the rewritten JSON body; raises ESampParamError for a bad esamp value. ``authorization``: the
    request's Authorization header (its bearer token names the client, ``wire.identity``)."""
    if not isinstance(body, dict):
        return body
    config = config_from_env()
    if path in GENERATE_PATHS:
        sp = body.get("sampling_params")
        items = sp if isinstance(sp, list) else [sp]
        for i, item in enumerate(items):
            if item is None:
                continue
            if not isinstance(item, dict):
                where = f"sampling_params[{i}]" if isinstance(sp, list) else "sampling_params"
                raise ESampParamError(where, f"must be an object, got {type(item).__name__}")
            accept(item, config=config, authorization=authorization)
    elif path in OPENAI_PATHS:
        # the top-level ``esamp`` field (the OpenAI client's extra_body)
        accept(body, config=config, authorization=authorization)
    return body


def _header(scope, name: bytes) -> Optional[str]:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def _error_body(e: ESampParamError) -> bytes:
    return json.dumps({"error": {"message": str(e), "type": "invalid_request_error", "param": e.field,
                                 "code": 400}}).encode()


class ESampBodyMiddleware:
    def __init__(self, app: Callable):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope.get("type") != "http" or scope.get("method") not in ("POST", "PUT") or \
                (path not in GENERATE_PATHS and path not in OPENAI_PATHS):
            return await self.app(scope, receive, send)
        chunks: List[bytes] = []
        more = True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, _replay([msg]), send)
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None  # not JSON: SGLang answers it
        if body is not None:
            try:
                raw = json.dumps(rewrite_body(path, body, _header(scope, b"authorization"))).encode()
            except ESampParamError as e:
                payload = _error_body(e)
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(payload)).encode())]})
                await send({"type": "http.response.body", "body": payload})
                return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        scope = dict(scope, headers=headers)
        await self.app(scope, _replay([{"type": "http.request", "body": raw, "more_body": False}], receive), send)


def _replay(messages, receive=None):
    pending = list(messages)

    async def _receive():
        if pending:
            return pending.pop(0)
        if receive is not None:
            return await receive()  # e.g. http.disconnect for streaming aborts
        return {"type": "http.disconnect"}
    return _receive


def install_routes(app):
    """Idempotently add the middleware and /esamp/stats to SGLang's app (before it starts serving)."""
    if getattr(app.state, "esamp_routes", False):
        return
    app.state.esamp_routes = True
    app.add_middleware(ESampBodyMiddleware)

    @app.get("/esamp/stats")
    async def esamp_stats():
        from sglang.srt.entrypoints.http_server import get_global_state

        states = await get_global_state().tokenizer_manager.get_internal_state()
        ranks = [s.get("esamp") for s in states]
        return {"ranks": ranks, "total": merge_counters(ranks)}


@hook("sglang.srt.entrypoints.http_server.launch_server", BEFORE, ("server_args",),
      "add /esamp/stats and the esamp body middleware to SGLang's app")
def before_launch_http(*args, **kwargs):
    """BEFORE hook on SGLang's http_server.launch_server: our routes go onto SGLang's app before it serves."""
    from sglang.srt.entrypoints.http_server import app

    install_routes(app)
    return None
