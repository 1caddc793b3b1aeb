"""Who may reach which distiller: server-issued session ids and per-client group namespaces.

One server is shared by many clients, and a distiller is steered by every request that reaches it, so neither a
session nor an explicit group may be reachable by guessing its name:
  * **Sessions** are started with ``"esamp": {"session": "new"}``; the server mints an id, returns it in
    ``meta_info.esamp.session``, and the client sends it back to continue. An id carries an HMAC (a per-server
    secret) bound to the client that started it: an id this server did not issue, or one sent by another client,
    is answered 400. A client cannot pick its own session name.
  * **Clients** are told apart by their bearer token (``Authorization: Bearer ...``, e.g. the key of
    ``--api-key`` or a per-user key forwarded by a gateway): the HTTP middleware derives a namespace from it and
    attaches it to the request as a tag (``custom_params.esamp_client``) signed with the secret, so a client can
    neither send nor forge one. Requests without a token share the namespace ``anon``; Engine (in-process) calls
    are ``local``.
  * **Explicit group keys** (``esamp.group``) live in the client's namespace: two requests share a distiller only
    if they come from the same client and name the same group.
The secret is created once by the launching process (``ensure_secret``, from ``handoff.export_config``) and
inherited by SGLang's child processes through ``SGLANG_ESAMP_SECRET``; ids die with the server, as sessions do.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import Optional

from ..algo.config import ESampParamError

SECRET_ENV = "SGLANG_ESAMP_SECRET"
CLIENT_KEY = "esamp_client"     # custom_params key of the signed client tag (set by the server only)
NEW_SESSION = "new"
ANON = "anon"                   # HTTP requests without a bearer token
LOCAL = "local"                 # Engine calls (no HTTP layer)


def ensure_secret() -> None:
    """Create the per-server secret in this process's environment (children inherit it)."""
    os.environ.setdefault(SECRET_ENV, secrets.token_hex(32))


def _mac(*parts: str) -> str:
    ensure_secret()   # the plugin under a stock launcher: one secret per process tree, made on first use
    key = bytes.fromhex(os.environ[SECRET_ENV])
    return hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def client_namespace(authorization: Optional[str]) -> str:
    """The namespace of an HTTP client from its Authorization header value."""
    token = (authorization or "").strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    return ANON if not token else "c" + _mac("client", token)[:16]


def client_tag(namespace: str) -> str:
    return f"{namespace}.{_mac('tag', namespace)}"


def verified_client(tag) -> str:
    """The namespace a request belongs to: from the server's tag, or ``local`` without one (Engine calls)."""
    if tag is None:
        return LOCAL
    ns, _, mac = tag.partition(".") if isinstance(tag, str) else ("", "", "")
    if not ns or not hmac.compare_digest(mac, _mac("tag", ns)):
        raise ESampParamError("custom_params." + CLIENT_KEY, "is set by the server; do not send it")
    return ns


def mint_session(namespace: str) -> str:
    r = secrets.token_urlsafe(18)
    return f"s-{r}.{_mac('session', namespace, r)}"


def check_session(session_id: str, namespace: str) -> None:
    body, _, mac = session_id.rpartition(".")
    ok = body.startswith("s-") and hmac.compare_digest(mac, _mac("session", namespace, body[2:]))
    if not ok:
        raise ESampParamError("esamp.session", f"{session_id[:40]!r} is not a session this server issued to this "
                                               f"client; send \"{NEW_SESSION}\" to start one and send back "
                                               "meta_info.esamp.session to continue it")


def group_key(group: str, namespace: str) -> str:
    """Scheduler-side key of an explicit group (client namespace + the client's own name)."""
    return f"user:{namespace}:{group}"
