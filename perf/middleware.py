"""Request id, per-request database totals, the 503 for an unavailable database, and the API's JSON 405.

``PerfMiddleware`` goes first in MIDDLEWARE so every response carries
X-Request-ID and the totals include the session and user queries of the
middleware below it. It runs natively in both modes, so under ASGI it costs no
thread hop.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from perf import context

logger = logging.getLogger(__name__)

UNAVAILABLE_DETAIL = "The database is busy or unavailable; retry."
# The API's own (chatsite.api renders with it).
API_CONTENT_TYPE = "application/json; charset=utf-8"
RETRY_AFTER_SECONDS = "2"


class PerfMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        scope_token, totals_token = self._begin(request)
        try:
            response = self.get_response(request)
            return self._finish(request, response)
        finally:
            context.stop_totals(totals_token)
            context.unbind(scope_token)

    async def __acall__(self, request: HttpRequest) -> Any:
        scope_token, totals_token = self._begin(request)
        try:
            response = await self.get_response(request)
            return self._finish(request, response)
        finally:
            context.stop_totals(totals_token)
            context.unbind(scope_token)

    def _begin(self, request: HttpRequest) -> tuple[Any, Any]:
        request_id = context.request_id_from(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        # The view name is read from request.resolver_match only when a slow
        # query is logged, so the fast path does no extra work for it.
        return context.bind(request_id=request_id, request=request), context.start_totals()

    def _finish(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code == 405 and is_api_path(request.path_info) and not _is_json(response):
            # django-ninja answers a method its path lacks with a plain-text 405
            # before any of its exception handlers could run, and Django has no
            # handler405: this is the one place the API's JSON body can be put.
            response = method_not_allowed_response(response)
        response.headers["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        totals = context.current_totals()
        if totals is not None and (settings.DEBUG or _is_staff(request)):
            entry = f'db;dur={totals.ms:.1f};desc="{totals.queries} queries"'
            existing = response.headers.get("Server-Timing")
            response.headers["Server-Timing"] = f"{existing}, {entry}" if existing else entry
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """The pool timed out, or the server is down or dropped us: 503, never a 500."""
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning(
            "database unavailable: %s %s request_id=%s: %s",
            request.method,
            request.path,
            getattr(request, "request_id", "-"),
            exception,
        )
        return unavailable_response(request)


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


def method_not_allowed_response(response: HttpResponse) -> HttpResponse:
    """The API's 405: its JSON error body, and the Allow header of ``response`` (sorted)."""
    allowed = ", ".join(sorted(m.strip() for m in response.get("Allow", "").split(",") if m.strip()))
    json_response = JsonResponse(
        {"detail": f"Method not allowed; allowed: {allowed or 'none'}.", "code": "method_not_allowed"},
        status=405,
        content_type=API_CONTENT_TYPE,
    )
    json_response["Allow"] = allowed
    return json_response


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 as JSON for the API, as a small page otherwise."""
    if is_api_path(request.path_info):
        response: HttpResponse = JsonResponse(
            {"detail": UNAVAILABLE_DETAIL, "code": "unavailable"}, status=503, content_type=API_CONTENT_TYPE
        )
    else:
        response = HttpResponse(
            render_to_string("perf/503.html", {"detail": UNAVAILABLE_DETAIL}), status=503
        )
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def _is_staff(request: HttpRequest) -> bool:
    """Staff flag of the user, only when it is already loaded: deciding on a debug
    header must not cost a session read and a user query (or, under ASGI, a
    synchronous query in the event loop)."""
    for attr in ("_cached_user", "_acached_user"):
        user = request.__dict__.get(attr)
        if user is not None:
            return bool(getattr(user, "is_staff", False))
    user = request.__dict__.get("user")
    if user is not None and not hasattr(user, "_wrapped"):
        # Set directly (e.g. by token authentication), not a lazy object.
        return bool(getattr(user, "is_staff", False))
    return False
