"""perf.middleware: X-Request-ID and Server-Timing; chatsite.middleware and handler500: 503 for an unavailable database."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.db import connection

from chatsite.errors import UNAVAILABLE_DETAIL
from tests.perf.conftest import extra_database

SERVER_TIMING = re.compile(r'^db;dur=\d+\.\d;desc="(\d+) queries"$')


@pytest.mark.django_db
def test_request_id_is_generated_when_absent() -> None:
    response = Client().get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


@pytest.mark.django_db
def test_sane_incoming_request_id_is_kept() -> None:
    response = Client().get("/healthz", headers={"X-Request-ID": "edge-7f3a.42:1"})
    assert response.headers["X-Request-ID"] == "edge-7f3a.42:1"


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["has space", "x" * 200, "<script>", "-leading-dash"])
def test_insane_incoming_request_id_is_replaced(bad: str) -> None:
    response = Client().get("/healthz", headers={"X-Request-ID": bad})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


@pytest.mark.django_db
def test_server_timing_for_staff_counts_every_query(make_user) -> None:
    staff = make_user(is_staff=True)
    client = Client()
    client.force_login(staff)
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/admin/")
    assert response.status_code == 200
    match = SERVER_TIMING.match(response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    assert int(match.group(1)) == len(captured) > 0


@pytest.mark.django_db
def test_no_server_timing_for_other_users_or_anonymous(make_user) -> None:
    client = Client()
    assert "Server-Timing" not in client.get("/healthz").headers
    client.force_login(make_user())
    assert "Server-Timing" not in client.get("/admin/").headers


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_server_timing_for_everyone_in_debug() -> None:
    response = Client().get("/healthz")
    match = SERVER_TIMING.match(response.headers["Server-Timing"])
    assert match and int(match.group(1)) >= 1


# The probe views use aliases made at run time, which Django's test-case database
# guard refuses; these tests unblock database access themselves instead, and
# touch no table of the test database.


@override_settings(ROOT_URLCONF="tests.perf.probe_urls")
def test_unreachable_database_is_a_json_503_on_the_api(django_db_setup, django_db_blocker) -> None:
    with django_db_blocker.unblock(), extra_database("dead", PORT="1", OPTIONS={}):
        response = Client().get("/api/v1/probe/dead")
    assert response.status_code == 503
    assert response.json() == {"detail": UNAVAILABLE_DETAIL, "code": "unavailable"}
    assert response.headers["Retry-After"]
    assert response.headers["X-Request-ID"]


@override_settings(ROOT_URLCONF="tests.perf.probe_urls")
def test_unreachable_database_is_a_503_page_elsewhere(django_db_setup, django_db_blocker) -> None:
    with django_db_blocker.unblock(), extra_database("dead", PORT="1", OPTIONS={}):
        response = Client().get("/probe/dead")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert UNAVAILABLE_DETAIL in response.content.decode()


@override_settings(ROOT_URLCONF="tests.perf.probe_urls")
def test_other_errors_are_not_turned_into_503(django_db_setup, django_db_blocker) -> None:
    client = Client(raise_request_exception=False)
    with django_db_blocker.unblock():
        assert client.get("/probe/missing-alias").status_code == 500


@override_settings(
    ROOT_URLCONF="tests.perf.probe_urls",
    MIDDLEWARE=[*settings.MIDDLEWARE, "tests.perf.probe_urls.QueryAliasMiddleware"],
)
def test_database_error_in_a_middleware_is_a_503_through_handler500(django_db_setup, django_db_blocker) -> None:
    client = Client(raise_request_exception=False)
    with django_db_blocker.unblock(), extra_database("dead", PORT="1", OPTIONS={}):
        api = client.get("/api/v1/probe/default", headers={"X-Probe-Alias": "dead"})
        page = client.get("/probe/default", headers={"X-Probe-Alias": "dead"})
    assert api.status_code == 503
    assert api.json() == {"detail": UNAVAILABLE_DETAIL, "code": "unavailable"}
    assert page.status_code == 503 and UNAVAILABLE_DETAIL in page.content.decode()


@override_settings(
    ROOT_URLCONF="tests.perf.probe_urls",
    MIDDLEWARE=[*settings.MIDDLEWARE, "tests.perf.probe_urls.QueryAliasMiddleware"],
)
def test_handler500_keeps_other_errors_500(django_db_setup, django_db_blocker) -> None:
    client = Client(raise_request_exception=False)
    with django_db_blocker.unblock():
        response = client.get("/probe/default", headers={"X-Probe-Alias": "no-such-alias"})
    assert response.status_code == 500
