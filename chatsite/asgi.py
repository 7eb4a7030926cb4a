"""The protocol router (HTTP to Django, WebSocket to the chat consumer), behind the trusted-proxy check."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings.dev")

from chatsite import env  # noqa: E402

if env.HTTP_THREADS > 0:
    from chatsite.handlers import get_asgi_application
else:
    from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402

from chat import events  # noqa: E402
from chat.fastlane import HistoryFastLane  # noqa: E402
from chat.auth import SocketSetupGuard, TokenAuthMiddleware  # noqa: E402
from chat.background import BackgroundConsumer  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chatsite.http_timeouts import RequestBodyTimeout  # noqa: E402

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware  # noqa: E402

# In development (DEBUG) the ASGI server also serves /static/; production
# serves collected, fingerprinted files (see docs/ARCHITECTURE.md).
# Shared history pages are answered from the cache in front of Django when
# everything they need is cached (chat.fastlane); it passes on everything else.
http_application = HistoryFastLane(ASGIStaticFilesHandler(django_asgi_app) if settings.DEBUG else django_asgi_app)
# A request body that does not arrive within HTTP_BODY_TIMEOUT gets a 408 (chatsite.http_timeouts).
http_application = RequestBodyTimeout(http_application, timeout=env.HTTP_BODY_TIMEOUT)

protocol_router = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": SocketSetupGuard(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))),
        "channel": ChannelNameRouter({events.background_channel(): BackgroundConsumer.as_asgi()}),
    }
)

# The client address and scheme of HTTP and WebSocket scopes come from
# X-Forwarded-For / X-Forwarded-Proto only when the peer is one of
# TRUSTED_PROXIES (none by default); the servers' own handling of those
# headers is off (chatsite.server), so this is the one place that decides,
# under uvicorn and daphne alike. Per-address limits and request.is_secure()
# read what it leaves in the scope.
application = ProxyHeadersMiddleware(protocol_router, trusted_hosts=settings.TRUSTED_PROXIES)
