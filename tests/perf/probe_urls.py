"""Views that query a test-only database alias, to drive the real middleware stack."""

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.urls import path


def query_alias(request: HttpRequest, alias: str) -> JsonResponse:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


urlpatterns = [
    path("api/v1/probe/<str:alias>", query_alias),
    path("probe/<str:alias>", query_alias),
]
