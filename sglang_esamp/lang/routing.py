"""The gateway's routing key on frontend gens, so that one distiller group reaches one worker behind ``smg``.

The SGLang gateway routes whole requests; with ``--policy consistent_hashing`` every request carrying the same
``x-smg-routing-key`` header goes to the same worker. A frontend program sends each branch of ``s.fork(n)`` as its
own request, and a session's turns as separate requests, so without a key they scatter over the workers and each
worker trains its own distiller on a part of the group. ``RuntimeEndpoint`` has no way to add a header, so the
module-level ``http_request`` it calls is wrapped: when the JSON body carries an ESamp value with a session or a
group, the request is sent with the key derived from it; any other request goes through SGLang's own function
unchanged. Sending the header to a server directly (no gateway) is harmless: the server ignores it.

Keys (``key_for``):
  * a session: the key its first request was sent with. ``"session": "new"`` gets a fresh key, and when the reply
    names the minted session id (``meta_info.esamp.session``) the id is remembered with that key, so the turns
    that follow reach the worker that holds it. An id this process did not see created is its own key (another
    client process: send the same header yourself, docs/scale.md).
  * a group (a fork point's group, or an explicit ``esamp.group``): ``group:<name>``.
  * neither: no header (the ``n`` samples of one request are one request, so they never split).
"""
from __future__ import annotations

import functools
import json as jsonlib
import threading
import uuid
from collections import OrderedDict
from typing import Any, Mapping, Optional

from ..wire.identity import NEW_SESSION
from ..wire.request import ESAMP_KEY

ROUTING_HEADER = "x-smg-routing-key"
REMEMBERED_SESSIONS = 4096     # minted ids kept with their key (oldest forgotten first)


class SessionKeys:
    """Minted session id -> the routing key its first request used (bounded, thread-safe: gens of the branches
    of a program run on several threads)."""

    def __init__(self, capacity: int = REMEMBERED_SESSIONS):
        self.capacity = capacity
        self._keys: "OrderedDict[str, str]" = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, session: str, key: str) -> None:
        with self._lock:
            self._keys[session] = key
            self._keys.move_to_end(session)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)

    def get(self, session: str) -> Optional[str]:
        with self._lock:
            return self._keys.get(session)


SESSIONS = SessionKeys()


def esamp_value(body: Any) -> Any:
    """The ESamp value of a /generate body, where the frontend puts it (``sampling_params.custom_params``)."""
    sp = body.get("sampling_params") if isinstance(body, Mapping) else None
    custom = sp.get("custom_params") if isinstance(sp, Mapping) else None
    return custom.get(ESAMP_KEY) if isinstance(custom, Mapping) else None


def key_for(value: Any) -> Optional[str]:
    if not isinstance(value, Mapping) or value.get("enabled") is False:
        return None
    session = value.get("session")
    if isinstance(session, str):
        if session == NEW_SESSION:
            return "session:" + uuid.uuid4().hex
        return SESSIONS.get(session) or "session:" + session
    group = value.get("group")
    return "group:" + group if isinstance(group, str) else None


def _minted_session(meta: Any) -> Optional[str]:
    info = meta.get("meta_info", {}).get(ESAMP_KEY) if isinstance(meta, Mapping) else None
    session = info.get("session") if isinstance(info, Mapping) else None
    return session if isinstance(session, str) else None


class _StreamWatcher:
    """Wraps a streamed response so the minted session id is remembered as the chunks go by."""

    def __init__(self, response, key: str):
        self._response, self._key = response, key

    def __getattr__(self, name):
        return getattr(self._response, name)

    def iter_lines(self, *args, **kwargs):
        for line in self._response.iter_lines(*args, **kwargs):
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            if text.startswith("data:") and text.strip() != "data: [DONE]":
                try:
                    session = _minted_session(jsonlib.loads(text[5:]))
                except ValueError:
                    session = None
                if session:
                    SESSIONS.remember(session, self._key)
            yield line


def _wrap_http_request(original):
    @functools.wraps(original)
    def http_request(url, json=None, stream=False, api_key=None, verify=None, method=None):
        value = esamp_value(json)
        key = key_for(value)
        if key is None:
            return original(url, json=json, stream=stream, api_key=api_key, verify=verify, method=method)
        import requests

        headers = {"Content-Type": "application/json; charset=utf-8", ROUTING_HEADER: key}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        response = requests.request(method or "POST", url, json=json, stream=stream, headers=headers,
                                    verify=verify if verify is not None else True)
        if value.get("session") != NEW_SESSION:
            return response
        if stream:
            return _StreamWatcher(response, key)
        try:
            replies = response.json()
        except ValueError:
            return response
        for reply in replies if isinstance(replies, list) else [replies]:
            session = _minted_session(reply)
            if session:
                SESSIONS.remember(session, key)
        return response

    return http_request


def patches():
    import sglang.lang.backend.runtime_endpoint as endpoint

    return [(endpoint, "http_request", _wrap_http_request)]
