"""The protocol router (HTTP to Django, WebSocket to the chat consumer), behind the trusted-proxy check.

Every HTTP request goes through Django's own request handler: its URL
resolver, host validation and middleware, in one worker thread per request.
Django's WSGI handler runs the chain synchronously; a2wsgi hands each request
to a pool of ``HTTP_THREADS`` threads, one hop from the event loop and back,
as a WSGI server would. (Django's ASGI handler would hop to a thread once per
method of every sync-only middleware, Django's own included, and start a
thread per request: docs/PERFORMANCE.md, "HTTP".) WebSockets stay on the
event loop, through Channels.
"""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings.dev")

from django.core.wsgi import get_wsgi_application  # noqa: E402

django_wsgi_app = get_wsgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from a2wsgi import WSGIMiddleware  # noqa: E402
from django.contrib.staticfiles.handlers import StaticFilesHandler  # noqa: E402
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware  # noqa: E402

from chat import events  # noqa: E402
from chat.auth import SocketSetupGuard, TokenAuthMiddleware  # noqa: E402
from chat.background import BackgroundConsumer  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chatsite import env, ratelimit  # noqa: E402
from chatsite.http_timeouts import RequestBodyTimeout  # noqa: E402
from perf import process  # noqa: E402
from perf.redis import aclose_loop_resources  # noqa: E402


async def lifespan(scope: dict, receive, send) -> None:  # noqa: ANN001
    """At start, make the loop's publisher and register the process (its resources, GC pauses and loop lag
    are measured); at shutdown, send what the publisher holds, the rate limits' unsent counts, and close the
    loop's Redis clients."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            events.start_publisher()
            process.server_started()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Hits counted here and not yet reconciled would be forgotten: the other processes should see them.
            await asyncio.get_running_loop().run_in_executor(None, ratelimit.limiter.reconcile)
            await aclose_loop_resources()
            await send({"type": "lifespan.shutdown.complete"})
            return


# In development (DEBUG) Django also serves /static/ from the source folders;
# production serves collected, fingerprinted files (whitenoise's middleware).
http_application = WSGIMiddleware(
    StaticFilesHandler(django_wsgi_app) if settings.DEBUG else django_wsgi_app, workers=env.HTTP_THREADS
)
# A request body that does not arrive within HTTP_BODY_TIMEOUT gets a 408 (chatsite.http_timeouts).
http_application = RequestBodyTimeout(http_application, timeout=env.HTTP_BODY_TIMEOUT)

protocol_router = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": SocketSetupGuard(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))),
        "channel": ChannelNameRouter({events.background_channel(): BackgroundConsumer.as_asgi()}),
        "lifespan": lifespan,
    }
)

# The client address and scheme of HTTP and WebSocket scopes come from
# X-Forwarded-For / X-Forwarded-Proto only when the peer is one of
# TRUSTED_PROXIES (none by default); the servers' own handling of those
# headers is off (chatsite.server), so this is the one place that decides,
# under uvicorn and daphne alike. Per-address limits and request.is_secure()
# read what it leaves in the scope. With no proxy trusted it would change
# nothing, so it is left out: one coroutine less held by every open socket.
application = (
    ProxyHeadersMiddleware(protocol_router, trusted_hosts=settings.TRUSTED_PROXIES)
    if settings.TRUSTED_PROXIES
    else protocol_router
)
