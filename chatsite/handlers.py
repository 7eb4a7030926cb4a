"""Django's ASGI handler, with each HTTP request's middleware and view in one thread hop.

Django's own ASGIHandler builds an async middleware chain. Every
``MiddlewareMixin`` middleware in it (security, sessions, common, CSRF, auth,
messages, clickjacking, CSP) then runs its ``process_request`` and its
``process_response`` through their own ``sync_to_async`` hops, and the view
through one more: about fifteen hand-offs between the event loop and a
thread per API request, each a future, a queue and two wake-ups. The thread
is a new one per request (Django's per-request ThreadSensitiveContext starts
an executor and joins it at the end).

This handler builds the chain synchronously, as under WSGI, and runs it for
each request in one hop to a standing pool of ``HTTP_THREADS`` threads, then
returns the response to the event loop, which sends it. Each request runs
start to finish in one thread, so Django's per-thread database connections
hold: the connection goes back to the pool when the request ends, in the
thread that used it (``close_old_connections``, as the request signals do
under WSGI). Measured in docs/PERFORMANCE.md ("HTTP"): 1.8x the requests a
second of Django's handler on the history API, in the same run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections
from django.http import HttpRequest

from chatsite import env


class ThreadedASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # Django wraps each request in a ThreadSensitiveContext, a fresh one-thread
        # executor for the request's thread-sensitive hops, started and joined per
        # request. Here the request's own work runs in the pool; what is left on
        # that path (the request signals, response.close) shares asgiref's one
        # thread, and no thread is started per request.
        await self.handle(scope, receive, send)

    @cached_property
    def _executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=env.HTTP_THREADS, thread_name_prefix="http")

    async def get_response_async(self, request: HttpRequest) -> Any:
        return await sync_to_async(self._respond, thread_sensitive=False, executor=self._executor)(request)

    def _respond(self, request: HttpRequest) -> Any:
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()


def get_asgi_application() -> ThreadedASGIHandler:
    """django.core.asgi.get_asgi_application with this handler."""
    import django

    django.setup(set_prefix=False)
    return ThreadedASGIHandler()
