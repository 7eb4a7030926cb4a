"""WebSocket authentication and origin checks.

Browsers authenticate with the session cookie and must send the site's own
Origin (or one of ``CSRF_TRUSTED_ORIGINS``): the rule Django's CSRF check
applies to HTTP. Programs send ``Authorization: Bearer <token>``; a socket
authenticated that way carries no ambient credentials, so it may omit Origin.

``scope["auth_method"]`` says which ("token" or "session"), so an open socket
can check the same credentials again later (:func:`credentials_valid`).
"""

from __future__ import annotations

import logging
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.auth import get_user as channels_get_user
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth import get_user as session_user
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from chat.asyncdb import db_async
from chat.batching import batcher
from chat.selectors import tokens as token_selectors

logger = logging.getLogger(__name__)


def bearer_token(headers: list[tuple[bytes, bytes]] | dict[bytes, bytes]) -> str | None:
    items = headers.items() if isinstance(headers, dict) else headers
    for name, value in items:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(scope: dict) -> bool:
    """The Origin is this socket's own (scheme, host and port) or a trusted one, and the host is allowed.

    Django's CSRF origin rule: ``http://127.0.0.1:9999`` does not pass for a
    socket on port 8000, nor ``https://localhost`` for one on plain HTTP.
    """
    origin = (_header(scope, b"origin") or "").strip().lower()
    host = (_header(scope, b"host") or "").strip().lower()
    if not origin or origin == "null" or not host:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    if origin == f"{scheme}://{host}":
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        trusted = trusted.lower()
        if "*" not in trusted:
            if origin == trusted:
                return True
            continue
        # Django's form: "https://*.example.com" trusts every subdomain over that scheme.
        t_scheme, _, t_host = trusted.partition("://*")
        o_scheme, _, o_host = origin.partition("://")
        if o_scheme == t_scheme and is_same_domain(o_host, t_host):
            return True
    return False


class SameOriginValidator:
    """Refuses (HTTP 403) a handshake whose Origin fails :func:`origin_allowed`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if origin_allowed(scope):
            return await self.inner(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


class SessionUserMiddleware(BaseMiddleware):
    """Channels' session authentication, run on the consumer database pool (chat.asyncdb)."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["user"] = await db_async(channels_get_user.func)(scope)
        scope["auth_method"] = "session"
        return await super().__call__(scope, receive, send)


def credentials_valid(scope: dict, user_id: int) -> bool:
    """Whether the credentials a socket was opened with still authenticate ``user_id`` (database, cache).

    A deleted token, a deactivated user, a session that was flushed (logout)
    or whose password hash no longer matches: False. Sync; consumers call it
    through db_async.
    """
    method = scope.get("auth_method")
    if method == "token":
        user = token_selectors.user_for_token(raw_key=bearer_token(scope.get("headers", [])) or "")
        return user is not None and user.pk == user_id and user.is_active
    if method == "session":
        session = scope.get("session")
        key = getattr(session, "session_key", None)
        if not key:
            return False
        # A fresh read, not the session object loaded at connect: Django's own
        # per-request check (backend, active flag, password hash) on it.
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
        user = session_user(SimpleNamespace(session=store))
        return bool(user.is_authenticated and user.pk == user_id)
    return False


def session_key(scope: dict) -> str | None:
    return getattr(scope.get("session"), "session_key", None) if scope.get("auth_method") == "session" else None


def _users_for_tokens(raw_keys: list[str]) -> list[Any]:
    return token_selectors.users_for_tokens(raw_keys=raw_keys)


class TokenAuthMiddleware:
    """Sets ``scope["user"]`` from a bearer token when one is sent; else defers to the session."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_stack = CookieMiddleware(SessionMiddleware(SessionUserMiddleware(inner)))
        self.origin_checked = SameOriginValidator(self.session_stack)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        token = bearer_token(scope.get("headers", []))
        if token is not None:
            user = await batcher("tokens", _users_for_tokens, slots=2, max_group=500).submit(token)
            if user is not None:
                scope = dict(scope, user=user, auth_method="token")
                return await self.inner(scope, receive, send)
        return await self.origin_checked(scope, receive, send)


CLOSE_UNAVAILABLE = 4503


class SocketSetupGuard:
    """Turns a failure while setting a socket up (the channel layer down) into close code 4503.

    Channels creates the consumer's channel before the consumer runs; with
    Redis down that raises, and the client would see an HTTP 500 at the
    handshake. Instead the socket is accepted and closed with 4503
    ("unavailable, retry later"). A failure after accept is re-raised.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        accepted = False

        async def tracking_send(message: dict) -> None:
            nonlocal accepted
            if message["type"] in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
                accepted = True
            await send(message)

        try:
            return await self.inner(scope, receive, tracking_send)
        except Exception:
            if accepted:
                raise
            logger.warning("websocket setup failed; closing with %s", CLOSE_UNAVAILABLE, exc_info=True)
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})
