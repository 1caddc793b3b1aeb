"""ESamp's HTTP surface, added to SGLang's FastAPI app in the server process.

* A small ASGI middleware moves the user's ``esamp`` value to where SGLang carries per-request values
  (``custom_params.esamp``) before SGLang parses the body: ``sampling_params.esamp`` on ``/generate`` (SGLang's
  schema gate would reject the unknown key) and the top-level ``esamp`` field on ``/v1/completions`` and
  ``/v1/chat/completions`` (the OpenAI request models would drop it). A bad value is answered with HTTP 400 whose
  message and ``param`` name the field; the request never reaches the scheduler.
* ``GET /esamp/stats``: the counters of every scheduler (one per DP rank), fetched through SGLang's own
  internal-state RPC, plus their sum.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List

from ..algo.config import ESampParamError
from ..runtime.metrics import aggregation
from ..runtime.request_params import ESAMP_KEY, move_esamp_into_custom_params, validate_custom_params

GENERATE_PATHS = {"/generate"}
OPENAI_PATHS = {"/v1/completions", "/v1/chat/completions"}


def rewrite_body(path: str, body: Any) -> Any:
    """Returns the rewritten JSON body; raises ESampParamError for a bad esamp value."""
    if not isinstance(body, dict):
        return body
    if path in GENERATE_PATHS:
        sp = body.get("sampling_params")
        for item in (sp if isinstance(sp, list) else [sp]):
            if isinstance(item, dict):
                move_esamp_into_custom_params(item)
                _validate_custom(item)
    elif path in OPENAI_PATHS:
        if ESAMP_KEY in body:
            move_esamp_into_custom_params(body, body.pop(ESAMP_KEY), from_key=False)
        _validate_custom(body)
    return body


def _validate_custom(holder: dict):
    custom = holder.get("custom_params")
    if isinstance(custom, dict):
        validate_custom_params(custom)


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
                raw = json.dumps(rewrite_body(path, body)).encode()
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


def merge_stats(per_rank: List[Dict]) -> Dict:
    """Counters combined over DP ranks by ``runtime.metrics.aggregation``; means stay per rank only."""
    total: Dict[str, Any] = {}
    for s in per_rank:
        for k, v in (s or {}).get("counters", {}).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            how = aggregation(k)
            if how == "sum":
                total[k] = total.get(k, 0) + v
            elif how == "max":
                total[k] = max(total.get(k, v), v)
    return total


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
        return {"ranks": ranks, "total": merge_stats(ranks)}
