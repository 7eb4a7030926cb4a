"""The chat's ASGI application plus the tutorial-style reference consumer at ``/ws/reference/``.

    python -m chatsite.server bench.reference_asgi:application

The WebSocket benchmark (bench/ws_bench.py) serves this module for its
``reference`` target; deployments serve ``chatsite.asgi:application``, which
has no reference route. A socket on ``/ws/reference/`` goes through the same
proxy-header check, set-up guard and authentication (bearer token or session)
as one on ``/ws/``; every other scope goes to ``chatsite.asgi.application``
unchanged.
"""

from __future__ import annotations

from typing import Any

# First: importing the project's application sets Django up, which chat.auth needs.
from chatsite.asgi import application as chat_application  # isort: skip

from channels.routing import URLRouter
from django.conf import settings
from django.urls import path
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from bench.reference_consumer import ReferenceChatConsumer
from chat.auth import SocketSetupGuard, TokenAuthMiddleware

REFERENCE_PATH = "/ws/reference/"

reference_application = ProxyHeadersMiddleware(
    SocketSetupGuard(TokenAuthMiddleware(URLRouter([path(REFERENCE_PATH.lstrip("/"), ReferenceChatConsumer.as_asgi())]))),
    trusted_hosts=settings.TRUSTED_PROXIES,
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket" and scope.get("path") == REFERENCE_PATH:
        await reference_application(scope, receive, send)
        return
    await chat_application(scope, receive, send)
