"""The JSON API at /api/v1/ (django-ninja): authentication, rendering and error mapping.

The endpoints live in the apps' api.py routers. Every response body,
errors included, is JSON rendered with orjson; every error has the shape
``{"detail": message, "code": code}`` (validation errors add ``errors``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from chat.api import router as chat_router
from chat.api_dms import router as dms_router
from chat.api_pins import router as pins_router
from chat.api_reactions import router as reactions_router
from chat.api_search import router as search_router
from chat.api_threads import router as threads_router
from chat.api_uploads import router as uploads_router
from chat.api_notifications import router as notifications_router
from chat.selectors import tokens as token_selectors
from chatsite.errors import DATABASE_UNAVAILABLE, ChatError, Forbidden
from projects.api import router as projects_router

logger = logging.getLogger(__name__)


class ORJSONRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return orjson.dumps(data)


class ORJSONParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        # Any failure here becomes ninja's 400 "Cannot parse request body".
        return orjson.loads(request.body)


class BearerTokenAuth(HttpBearer):
    """``Authorization: Bearer <token>`` with a token from POST /auth/token."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return token_selectors.user_for_token(raw_key=token.strip())


class SessionCsrfAuth(APIKeyCookie):
    """The browser's Django session cookie; writes must carry the CSRF token.

    Unlike ninja's ``django_auth``, an anonymous request gets 401 (not a CSRF
    403), and only a logged-in request is checked for the CSRF token.
    """

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        # Safe methods pass; anything else needs X-CSRFToken matching the csrftoken cookie.
        if check_csrf(request) is not None:
            raise Forbidden("CSRF check failed: send the X-CSRFToken header.", code="csrf_failed")
        return user


api = NinjaAPI(
    title="Chat API",
    version="1",
    description="Projects, rooms and messages. See docs/API.md for authentication, errors and cursors.",
    urls_namespace="api",
    auth=[BearerTokenAuth(), SessionCsrfAuth()],
    renderer=ORJSONRenderer(),
    parser=ORJSONParser(),
)


def error_response(request: HttpRequest, *, status: int, detail: str, code: str, **extra: Any) -> HttpResponse:
    """The one error body of the API."""
    return api.create_response(request, {"detail": detail, "code": code, **extra}, status=status)


@api.exception_handler(ChatError)
def _chat_error(request: HttpRequest, exc: ChatError) -> HttpResponse:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is None:
        return error_response(request, status=exc.status, detail=exc.message, code=exc.code)
    response = error_response(request, status=exc.status, detail=exc.message, code=exc.code, retry_after=retry_after)
    response["Retry-After"] = str(retry_after)
    return response


def _field_name(loc: tuple | list) -> str:
    # ninja locations start with the source ("body", "query", "path"); for a
    # body they go on with the parameter name, which the client never sees.
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body" and len(parts) > 2:
        parts = parts[2:]
    elif parts and parts[0] in ("body", "query", "path", "header", "cookie") and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {
            "field": _field_name(e.get("loc", ())),
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors
    ]
    detail = "; ".join(f"{e['field'] or 'body'}: {e['msg']}" for e in errors) or "Invalid input."
    return error_response(request, status=422, detail=detail, code="validation_error", errors=errors)


_HTTP_ERROR_CODES = {
    400: "malformed_body",  # ninja raises HttpError(400) only for an unparsable body
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    429: "throttled",
}


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 401:
        response = error_response(
            request,
            status=401,
            detail="Authentication required: send 'Authorization: Bearer <token>' or log in.",
            code="not_authenticated",
        )
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    if exc.status_code == 400:
        detail = "The request body is not valid JSON."
    else:
        detail = str(exc)
    return error_response(
        request, status=exc.status_code, detail=detail, code=_HTTP_ERROR_CODES.get(exc.status_code, "error")
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, status=404, detail="Not found.", code="not_found")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(request, status=413, detail="The request body is too large.", code="too_large")


def _unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    from chatsite.error_handlers import unavailable_response

    return unavailable_response(request, exc)


for _exc in DATABASE_UNAVAILABLE:
    api.add_exception_handler(_exc, _unavailable)


@api.exception_handler(DataError)
def _unstorable(request: HttpRequest, exc: DataError) -> HttpResponse:
    # A value PostgreSQL refuses (NUL in a path parameter, a number out of
    # range): caused by the request, so a 400, not a 500.
    logger.warning("api: data error on %s %s: %s", request.method, request.path, exc)
    return error_response(
        request, status=400, detail="The request contains a value that cannot be stored or looked up.", code="invalid"
    )


@api.exception_handler(Exception)
def _server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    if settings.DEBUG:
        raise exc
    logger.exception("api: unhandled error on %s %s", request.method, request.path)
    return error_response(request, status=500, detail="Internal server error.", code="server_error")


api.add_router("", projects_router)
api.add_router("", chat_router)
api.add_router("", dms_router)
api.add_router("", pins_router)
api.add_router("", reactions_router)
api.add_router("", threads_router)
api.add_router("", uploads_router)
api.add_router("", notifications_router)
api.add_router("", search_router)
