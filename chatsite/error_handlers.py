"""Django's error views: the API's JSON error body under /api/, Django's pages elsewhere.

Errors raised inside an API operation are mapped by chatsite.api's exception
handlers, a busy or unavailable database through :func:`unavailable_response`
as here. These views answer the errors Django raises around the operations:
a path no API route matches (``handler404``), a request refused before any
view (``handler400``: a bad Host header, a body a middleware found too large),
``handler403``, the CSRF check of the API's non-operation views (its
documentation pages; ``CSRF_FAILURE_VIEW``) and an exception raised by a
middleware (``handler500``). Under DEBUG Django answers 404 and 500 with its
debug pages instead.
"""

from __future__ import annotations

import logging
import sys

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import csrf, defaults

from chatsite.api import error_response
from chatsite.errors import DATABASE_UNAVAILABLE, UNAVAILABLE_DETAIL

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "2"


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def unavailable_response(request: HttpRequest, exc: BaseException | None = None) -> HttpResponse:
    """The answer when the database is busy or down: 503 with Retry-After, the API's JSON under /api/, a page elsewhere."""
    logger.warning("database unavailable: %s %s request_id=%s: %s", request.method, request.path,
                   getattr(request, "request_id", "-"), exc)  # fmt: skip
    if is_api_path(request.path_info):
        response = error_response(request, status=503, detail=UNAVAILABLE_DETAIL, code="unavailable")
    else:
        response = HttpResponse(render_to_string("503.html", {"detail": UNAVAILABLE_DETAIL}), status=503)
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def method_not_allowed(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """The API's 405: its JSON error body, with the Allow header of django-ninja's plain-text one (sorted)."""
    allowed = ", ".join(sorted(m.strip() for m in response.get("Allow", "").split(",") if m.strip()))
    json_response = error_response(
        request, status=405, detail=f"Method not allowed; allowed: {allowed or 'none'}.", code="method_not_allowed"
    )
    json_response["Allow"] = allowed
    return json_response


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_path(request.path_info):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return error_response(request, status=413, detail="The request body is too large.", code="too_large")
    return error_response(request, status=400, detail="Bad request.", code="bad_request")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_path(request.path_info):
        return defaults.permission_denied(request, exception)
    return error_response(request, status=403, detail="You may not do this.", code="forbidden")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_path(request.path_info):
        return defaults.page_not_found(request, exception)
    return error_response(request, status=404, detail="Not found.", code="not_found")


def server_error(request: HttpRequest) -> HttpResponse:
    # A middleware that met a busy or unavailable database: 503, never a 500
    # (views are answered by chatsite.middleware before they get here).
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_UNAVAILABLE):
        return unavailable_response(request, exc)
    if not is_api_path(request.path_info):
        return defaults.server_error(request)
    return error_response(request, status=500, detail="Internal server error.", code="server_error")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if not is_api_path(request.path_info):
        return csrf.csrf_failure(request, reason)
    return error_response(
        request, status=403, detail="CSRF check failed: send the X-CSRFToken header.", code="csrf_failed"
    )
