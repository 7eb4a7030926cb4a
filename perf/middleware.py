"""Per-request bookkeeping: request id, database and cache totals, the permission memo, the request log.

``RequestContextMiddleware`` goes first in MIDDLEWARE (after django-prometheus's
"before" middleware), so every response carries X-Request-ID and its totals
cover the session and user queries of the middleware below it. Django runs
the chain synchronously (chatsite.asgi: its WSGI handler, in one worker
thread per request), as every middleware here is written.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from perf import cache as perf_cache
from perf import context, metrics

logger = logging.getLogger(__name__)


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        start = perf_counter()
        request_id = context.request_id_from(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        # The view name is read from request.resolver_match only when a slow
        # query is logged, so the common path does no extra work for it.
        scope_token = context.bind(request_id=request_id, request=request)
        totals_token = context.start_totals()
        cache_token = metrics.start_cache_totals()
        memo_token = perf_cache.open_request_memo()
        try:
            response = self.get_response(request)
            response.headers["X-Request-ID"] = request_id
            _server_timing(request, response)
            metrics.request_finished(request, response, perf_counter() - start)
            return response
        finally:
            perf_cache.close_request_memo(memo_token)
            metrics.stop_cache_totals(cache_token)
            context.stop_totals(totals_token)
            context.unbind(scope_token)


def _server_timing(request: HttpRequest, response: HttpResponse) -> None:
    """The request's database time as Server-Timing, for staff and under DEBUG."""
    totals = context.current_totals()
    if totals is None or not (settings.DEBUG or _is_staff(request)):
        return
    entry = f'db;dur={totals.ms:.1f};desc="{totals.queries} queries"'
    existing = response.headers.get("Server-Timing")
    response.headers["Server-Timing"] = f"{existing}, {entry}" if existing else entry


def _is_staff(request: HttpRequest) -> bool:
    """Staff flag of the user, only when it is already loaded: deciding on a debug
    header must not cost a session read and a user query."""
    for attr in ("_cached_user", "_acached_user"):
        user = request.__dict__.get(attr)
        if user is not None:
            return bool(getattr(user, "is_staff", False))
    user = request.__dict__.get("user")
    if user is not None and not hasattr(user, "_wrapped"):
        # Set directly (e.g. by token authentication), not a lazy object.
        return bool(getattr(user, "is_staff", False))
    return False
