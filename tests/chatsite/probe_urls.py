"""Views that show how the ASGI handler runs requests (tests/chatsite/test_http_path.py)."""

import threading

from django.http import HttpRequest, JsonResponse
from django.urls import path

# Two requests meet here only if the handler runs them at the same time.
MEETING = threading.Barrier(2, timeout=10)


def where(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"thread": threading.current_thread().name, "ident": threading.get_ident()})


def meet(request: HttpRequest) -> JsonResponse:
    try:
        MEETING.wait()
    except threading.BrokenBarrierError:
        return JsonResponse({"met": False}, status=409)
    return JsonResponse({"met": True})


urlpatterns = [
    path("probe/where", where),
    path("probe/meet", meet),
]
