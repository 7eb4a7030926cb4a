"""Every error under /api/ is the API's JSON body, including those Django answers around the operations.

In-process through Django's test client, and over a real server with raw
request lines (so the server's own decoding of %2f, %2e and double slashes is
what the application sees).
"""

from __future__ import annotations

import http.client
import re
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings

from chat.services import accounts as account_services
from tests.servers import app_servers

API = "/api/v1"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def assert_api_error(response: Any, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.fixture
def bearer_client(make_user) -> Client:
    _, token = account_services.token_create(user=make_user("caller"))
    return Client(headers={"Authorization": f"Bearer {token}"}, raise_request_exception=False)


def _wrong_methods() -> list[tuple[str, str, frozenset[str]]]:
    """(method, concrete path, documented methods) for every method the OpenAPI document does not list for a path."""
    from chatsite.api import api

    schema = api.get_openapi_schema()
    cases = []
    for template, operations in schema["paths"].items():
        documented = frozenset(m.upper() for m in operations)
        # Any value of the right shape: the method is refused before the parameters are read.
        path = re.sub(r"\{[^}]+\}", "1", template)
        cases.extend((method, path, documented) for method in METHODS if method not in documented)
    return cases


WRONG_METHODS = _wrong_methods()


def test_the_api_has_wrong_methods_to_check() -> None:
    assert len(WRONG_METHODS) >= 20
    assert ("GET", f"{API}/messages/1", frozenset({"PATCH", "DELETE"})) in WRONG_METHODS


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "documented"), WRONG_METHODS, ids=[f"{m} {p}" for m, p, _ in WRONG_METHODS])
def test_every_operation_answers_a_wrong_method_with_a_json_405(
    bearer_client: Client, method: str, path: str, documented: frozenset[str]
) -> None:
    response = bearer_client.generic(method, path, data=b"{}", content_type="application/json")
    assert_api_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response["Allow"].split(",")} == documented


@pytest.mark.django_db
def test_a_405_answers_json_without_credentials_too() -> None:
    response = Client().get(f"{API}/messages/1")
    assert_api_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "DELETE, PATCH"


# Paths no API route matches, as the test client sends them (it decodes %xx like a server).
# ("/api/v1" is redirected to "/api/v1/" by APPEND_SLASH, like any path that only lacks its slash.)
UNKNOWN_PATHS = [
    "/api",
    "/api/",
    "/api/v1/",
    "/api/v1/nope",
    "/api/v2/projects",
    "/api/V1/projects",
    "/api/nope/projects",
    "/api/v1//projects",
    "/api/v1/projects//rooms",
    "/api/v1/projects/..%2f..",
    "/api/v1/projects/%2e%2e/%2e%2e/admin/",
    "/api/v1/%2e%2e/admin/",
    "/api/v1/projects/x/nope",
    "/api/v1/rooms/1/messages/%2f",
    "/api/v1/projects%2fx%2fnope",
]


@pytest.mark.django_db
@pytest.mark.parametrize("path", UNKNOWN_PATHS)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_api_paths_answer_a_json_404(bearer_client: Client, path: str, method: str) -> None:
    assert_api_error(bearer_client.generic(method, path), 404, "not_found")
    assert_api_error(Client().generic(method, path), 404, "not_found")


@pytest.mark.django_db
def test_unknown_page_paths_keep_the_html_404() -> None:
    response = Client().get("/no/such/page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_an_unknown_api_path_is_a_404_even_for_a_browser_post_without_csrf_token(make_user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("browser"))
    assert_api_error(client.post(f"{API}/nope", data=b"{}", content_type="application/json"), 404, "not_found")


@pytest.mark.django_db
@pytest.mark.parametrize("path", [f"{API}/openapi.json", f"{API}/docs", f"{API}/"])
def test_the_csrf_check_of_the_api_documentation_views_answers_json(path: str) -> None:
    # ninja's documentation views are not CSRF-exempt, so Django's CSRF failure view answers them.
    response = Client(enforce_csrf_checks=True).post(path)
    assert_api_error(response, 403, "csrf_failed")


@pytest.mark.django_db
def test_the_csrf_failure_of_a_page_stays_html() -> None:
    response = Client(enforce_csrf_checks=True).post("/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_a_request_for_an_unknown_host_answers_a_json_400() -> None:
    response = Client(HTTP_HOST="evil.example").get(f"{API}/projects")
    assert_api_error(response, 400, "bad_request")
    page = Client(HTTP_HOST="evil.example").get("/login/")
    assert page.status_code == 400
    assert not page["Content-Type"].startswith("application/json")


class ExplodingMiddleware:
    """Raises what the X-Explode header names, outside any view."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        kind = request.headers.get("X-Explode")
        if kind == "database":
            raise OperationalError("the pool timed out")
        if kind == "bug":
            raise RuntimeError("a bug in a middleware")
        if kind == "denied":
            raise PermissionDenied
        return self.get_response(request)


def _with_exploding_middleware():
    return override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, f"{__name__}.ExplodingMiddleware"])


@pytest.mark.django_db
def test_an_error_raised_by_a_middleware_answers_a_json_500_under_the_api() -> None:
    with _with_exploding_middleware():
        client = Client(raise_request_exception=False)
        assert_api_error(client.get(f"{API}/projects", headers={"X-Explode": "bug"}), 500, "server_error")
        page = client.get("/login/", headers={"X-Explode": "bug"})
        assert page.status_code == 500
        assert not page["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_a_permission_denied_outside_a_view_answers_a_json_403_under_the_api() -> None:
    with _with_exploding_middleware():
        client = Client(raise_request_exception=False)
        assert_api_error(client.get(f"{API}/projects", headers={"X-Explode": "denied"}), 403, "forbidden")
        page = client.get("/login/", headers={"X-Explode": "denied"})
        assert page.status_code == 403
        assert not page["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_a_body_too_large_for_the_csrf_check_answers_a_json_413_under_the_api() -> None:
    # The CSRF check of the documentation views reads a form body before any API code runs.
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.cookies[settings.CSRF_COOKIE_NAME] = "a" * 32
    oversized = "x=" + "a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = client.post(f"{API}/openapi.json", data=oversized, content_type="application/x-www-form-urlencoded")
    assert_api_error(response, 413, "too_large")


@pytest.mark.django_db
def test_a_database_error_raised_by_a_middleware_stays_a_json_503_under_the_api() -> None:
    with _with_exploding_middleware():
        client = Client(raise_request_exception=False)
        response = client.get(f"{API}/projects", headers={"X-Explode": "database"})
        assert_api_error(response, 503, "unavailable")
        assert response["Retry-After"]


# --- Over a real server -------------------------------------------------------


def _raw_request(port: int, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """One request with ``target`` sent exactly as written (http.client does not normalise it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, target, body=b"" if method in ("POST", "PUT", "PATCH") else None)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


RAW_TARGETS = [
    ("GET", f"{API}/messages/1", 405, "method_not_allowed"),
    ("PUT", f"{API}/projects", 405, "method_not_allowed"),
    ("GET", f"{API}/projects/..%2f..", 404, "not_found"),
    ("GET", f"{API}/projects/..%2F..%2F..%2Fadmin%2F", 404, "not_found"),
    ("GET", f"{API}/projects/%2e%2e/%2e%2e/", 404, "not_found"),
    ("GET", f"{API}/%2e%2e/%2e%2e/admin/", 404, "not_found"),
    ("GET", f"{API}//projects", 404, "not_found"),
    ("GET", "/api//v1/projects", 404, "not_found"),
    ("GET", f"{API}/projects%2f", 404, "not_found"),
    ("GET", f"{API}/rooms/1/messages%00", 404, "not_found"),
    ("POST", "/api/v2/messages", 404, "not_found"),
    ("GET", "/api/", 404, "not_found"),
    ("GET", f"{API}/", 404, "not_found"),
]


@pytest.mark.django_db(transaction=True)
def test_error_bodies_over_a_real_server() -> None:
    with app_servers(1) as [(port, _proc)]:
        for method, target, status, code in RAW_TARGETS:
            got_status, headers, body = _raw_request(port, method, target)
            assert got_status == status, (method, target, got_status, body[:200])
            assert headers["content-type"].startswith("application/json"), (target, headers)
            assert orjson.loads(body)["code"] == code, (target, body)
            if status == 405:
                assert headers["allow"], target
