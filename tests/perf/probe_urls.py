"""Views that query a test-only database alias, to drive the real middleware stack."""

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.urls import path


def query_alias(request: HttpRequest, alias: str) -> JsonResponse:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


class QueryAliasMiddleware:
    """Queries the alias named by the X-Probe-Alias header before the view runs."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        alias = request.headers.get("X-Probe-Alias")
        if alias:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
        return self.get_response(request)


handler500 = "chatsite.error_handlers.server_error"

urlpatterns = [
    path("api/v1/probe/<str:alias>", query_alias),
    path("probe/<str:alias>", query_alias),
]
