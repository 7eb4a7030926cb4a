"""WebSocket authentication and origin checks.

Browsers authenticate with the session cookie and must send an allowed
Origin. Programs send ``Authorization: Bearer <token>``; a socket authenticated
that way carries no ambient credentials, so it may omit Origin.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.auth import get_user as channels_get_user
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from channels.security.websocket import AllowedHostsOriginValidator

from chat import selectors
from chat.asyncdb import db_async

logger = logging.getLogger(__name__)


def bearer_token(headers: list[tuple[bytes, bytes]] | dict[bytes, bytes]) -> str | None:
    items = headers.items() if isinstance(headers, dict) else headers
    for name, value in items:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class SessionUserMiddleware(BaseMiddleware):
    """Channels' session authentication, run on the consumer database pool (chat.asyncdb)."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["user"] = await db_async(channels_get_user.func)(scope)
        return await super().__call__(scope, receive, send)


class TokenAuthMiddleware:
    """Sets ``scope["user"]`` from a bearer token when one is sent; else defers to the session."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_stack = CookieMiddleware(SessionMiddleware(SessionUserMiddleware(inner)))
        self.origin_checked = AllowedHostsOriginValidator(self.session_stack)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        token = bearer_token(scope.get("headers", []))
        if token is not None:
            user = await db_async(selectors.user_for_token)(raw_key=token)
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
