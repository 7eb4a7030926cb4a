"""Django's error views: the API's JSON error body under /api/, Django's pages elsewhere.

Errors raised inside an API operation are mapped by chatsite.api's exception
handlers. These views answer the errors Django raises around the operations:
a path no API route matches (``handler404``), a request refused before any
view (``handler400``: a bad Host header, a body a middleware found too large),
``handler403``, the CSRF check of the API's non-operation views (its
documentation pages; ``CSRF_FAILURE_VIEW``) and an exception raised by a
middleware (``handler500``). Under DEBUG Django answers 404 and 500 with its
debug pages instead.
"""

from __future__ import annotations

import sys

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views import csrf, defaults

from chatsite.api import error_response
from perf import views as perf_views
from perf.middleware import is_api_path


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
    # A busy or unavailable database is perf's 503 (JSON under /api/ too).
    if not is_api_path(request.path_info) or isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        return perf_views.server_error(request)
    return error_response(request, status=500, detail="Internal server error.", code="server_error")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if not is_api_path(request.path_info):
        return csrf.csrf_failure(request, reason)
    return error_response(
        request, status=403, detail="CSRF check failed: send the X-CSRFToken header.", code="csrf_failed"
    )
