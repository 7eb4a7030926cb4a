"""django-silk: staff-only UI, sampling, bounded storage, and its cost when sampling is off."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from io import StringIO
from typing import Any, Iterator

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db.models.sql.compiler import SQLCompiler
from django.test import Client
from django.utils import timezone
from silk.config import SilkyConfig
from silk.models import Request as SilkRequest

SILK = "silk.middleware.SilkyMiddleware"


@pytest.fixture
def silk_sampling(settings, monkeypatch) -> Iterator[Any]:
    """``set(percent)`` installs silk's middleware as SILKY_INTERCEPT_PERCENT > 0 would.

    Silk reads its settings once per process (SilkyConfig is a singleton),
    so the percentage goes there too. Silk patches Django's SQL compiler the
    first time it records a request and never undoes it: undone here.
    """
    config = SilkyConfig()

    def set_percent(percent: float) -> None:
        middleware = [m for m in django_settings.MIDDLEWARE if m != SILK]
        if percent > 0:
            middleware.insert(middleware.index("perf.compression.CompressionMiddleware") + 1, SILK)
        settings.MIDDLEWARE = middleware
        monkeypatch.setitem(config.attrs, "SILKY_INTERCEPT_PERCENT", percent)

    yield set_percent
    if hasattr(SQLCompiler, "_execute_sql"):
        SQLCompiler.execute_sql = SQLCompiler._execute_sql
        del SQLCompiler._execute_sql


def test_sampling_off_means_no_silk_middleware() -> None:
    assert django_settings.SILKY_INTERCEPT_PERCENT == 0
    assert SILK not in django_settings.MIDDLEWARE
    assert "silk" in django_settings.INSTALLED_APPS
    assert django_settings.SILKY_MAX_RECORDED_REQUESTS_CHECK_PERCENT == 0
    assert django_settings.SILKY_AUTHENTICATION and django_settings.SILKY_AUTHORISATION


@pytest.mark.django_db
def test_silk_ui_is_for_staff_only(make_user) -> None:
    anonymous = Client().get("/silk/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/?next=/silk/")

    member = Client()
    member.force_login(make_user())
    assert member.get("/silk/").status_code == 403
    assert member.get("/silk/requests/").status_code == 403

    staff = Client()
    staff.force_login(make_user(is_staff=True))
    assert staff.get("/silk/").status_code == 200
    assert staff.get("/silk/requests/").status_code == 200


@pytest.mark.django_db
def test_only_silk_pages_allow_inline_scripts(make_user) -> None:
    """Silk's templates need inline scripts and styles; the rest of the site keeps the strict policy."""
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    silk_policy = staff.get("/silk/requests/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in silk_policy.split(";") if part.strip())
    assert "'unsafe-inline'" in directives["script-src"] and "'unsafe-inline'" in directives["style-src"]
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in staff.get("/perf/")["Content-Security-Policy"]
    assert "unsafe-inline" not in Client().get("/login/")["Content-Security-Policy"]


@pytest.mark.django_db
def test_sampled_requests_are_recorded_with_queries_and_a_profile_but_no_bodies(
    silk_sampling, chat_world, api_client
) -> None:
    silk_sampling(100)
    room = chat_world["public"]
    client = api_client(chat_world["member"])
    response = client.post(
        f"/api/v1/rooms/{room.id}/messages", {"body": "private words", "client_id": "silk-1"}, content_type="application/json"
    )
    assert response.status_code == 201

    recorded = SilkRequest.objects.get(path=f"/api/v1/rooms/{room.id}/messages")
    assert recorded.method == "POST"
    assert recorded.queries.count() >= 2
    assert "message_create" in recorded.pyprofile  # the Python profiler ran for it
    assert recorded.body == "" and recorded.raw_body == ""
    assert recorded.response.body == "" and recorded.response.raw_body == ""
    assert "Bearer" not in recorded.encoded_headers


@pytest.mark.django_db
def test_sampling_zero_records_nothing_and_patches_nothing(silk_sampling, make_user) -> None:
    silk_sampling(0)
    client = Client()
    client.force_login(make_user())
    for _ in range(5):
        client.get("/")
    assert SilkRequest.objects.count() == 0
    assert not hasattr(SQLCompiler, "_execute_sql")


@pytest.mark.django_db
def test_storage_is_trimmed_by_the_command_not_by_requests(silk_sampling, settings, make_user) -> None:
    settings.SILKY_MAX_RECORDED_REQUESTS = 3
    silk_sampling(100)
    client = Client()
    client.force_login(make_user())
    for _ in range(5):
        client.get("/login/")
    assert SilkRequest.objects.count() == 5  # nothing trimmed in the request path

    start = timezone.now()
    for i in range(4):
        SilkRequest.objects.create(path=f"/old/{i}", method="GET", start_time=start - timedelta(days=1, seconds=i))
    newest = list(SilkRequest.objects.order_by("-start_time").values_list("id", flat=True)[:3])

    out = StringIO()
    call_command("silk_gc", stdout=out)
    assert "9 recorded requests, 6 deleted, 3 kept (max 3)" in out.getvalue()
    assert sorted(SilkRequest.objects.values_list("id", flat=True)) == sorted(newest)

    call_command("silk_gc", max=0, stdout=StringIO())
    assert SilkRequest.objects.count() == 0


@pytest.mark.django_db
def test_benchmark_silk_off_the_hot_path(silk_sampling, chat_world, make_message, api_client) -> None:
    """Prints per-request time of the history endpoint: silk absent (sampling 0), installed at
    0 %, and recording 100 %. A benchmark, not a timed assertion: it asserts only what ran."""
    room = chat_world["public"]
    for i in range(50):
        make_message(room, chat_world["owner"], f"history {i}")
    url = f"/api/v1/rooms/{room.id}/messages"
    n = 150

    def run(percent: float | None) -> float:
        if percent is None:
            silk_sampling(0)  # the production default: middleware absent
        else:
            silk_sampling(percent)
            if percent == 0:  # installed but sampling nothing
                django_settings.MIDDLEWARE.insert(
                    django_settings.MIDDLEWARE.index("perf.compression.CompressionMiddleware") + 1, SILK
                )
        client = api_client(chat_world["member"])
        for _ in range(10):  # warm-up: caches, connection, imports
            assert client.get(url).status_code == 200
        times = []
        for _ in range(n):
            start = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    absent = run(None)
    recorded_before = SilkRequest.objects.count()
    installed_idle = run(0)
    assert SilkRequest.objects.count() == recorded_before == 0
    recording = run(100)
    assert SilkRequest.objects.filter(path=url).count() == n + 10

    print(
        f"\nhistory endpoint, median of {n} in-process requests: silk absent {absent:.2f} ms, "
        f"installed at 0 % {installed_idle:.2f} ms ({installed_idle / absent:.2f}x), "
        f"recording 100 % {recording:.2f} ms ({recording / absent:.2f}x)"
    )
