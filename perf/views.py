"""Staff pages of the performance machinery."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

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
