"""Staff pages of the performance machinery."""

from __future__ import annotations

import sys

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import defaults

from perf.middleware import unavailable_response
from perf.selectors import db_report

REPORT_LIMIT_MAX = 100


@staff_member_required
def report(request: HttpRequest) -> HttpResponse:
    """The database report (same data as ``manage.py perf_report``). Staff only."""
    try:
        limit = max(1, min(int(request.GET.get("limit", 10)), REPORT_LIMIT_MAX))
    except ValueError:
        limit = 10
    context = {
        **admin.site.each_context(request),
        "title": "Database performance",
        "report": db_report(limit=limit),
        "limit": limit,
    }
    return render(request, "perf/report.html", context)


def server_error(request: HttpRequest) -> HttpResponse:
    """The 500 page, reached through ``handler500`` (chatsite.urls): a database that is
    busy or down is a 503 here too (JSON under /api/).

    PerfMiddleware.process_exception only sees exceptions raised by views; one
    raised by a middleware (a session saved after the view, say) reaches this
    handler instead, while it is being handled.
    """
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        return unavailable_response(request)
    return defaults.server_error(request)
