"""The API's and the pages' errors that no view answers itself.

* django-ninja answers a method its path lacks with a plain-text 405 before
  any of its exception handlers could run, and Django has no handler405: here
  it becomes the API's JSON error body.
* A view that meets a busy or unavailable database gets the 503 of
  chatsite.error_handlers (its API operations get it from chatsite.api's
  handler; handler500 catches what a middleware raises).
"""

from __future__ import annotations

from typing import Any, Callable

from django.http import HttpRequest, HttpResponse

from chatsite.error_handlers import is_api_path, method_not_allowed, unavailable_response
from chatsite.errors import DATABASE_UNAVAILABLE


class ErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        response = self.get_response(request)
        if (
            response.status_code == 405
            and is_api_path(request.path_info)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return method_not_allowed(request, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_UNAVAILABLE):
            return unavailable_response(request, exception)
        return None
