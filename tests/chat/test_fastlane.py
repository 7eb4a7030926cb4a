"""chat.fastlane: shared history pages answered from the cache in front of Django, exactly as Django answers them.

Every test goes through the real ASGI application (chatsite.asgi) with the
real Redis and PostgreSQL. Which path answered is read from the lane's own
counter (chat_http_fast_lane_responses_total).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any
from urllib.parse import unquote, urlparse

import brotli
import orjson
import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings
from django.core.cache import caches
from django.test import override_settings
from prometheus_client import REGISTRY

from chat import fastlane, services
from chat.api_schemas import page_cursor_encode
from chat.models import ApiToken
from chatsite.asgi import application
from chatsite.handlers import get_asgi_application
from perf import cache as perf_cache
from projects import services as project_services
from tests.perf.test_cache import DEAD_REDIS

pytestmark = pytest.mark.django_db(transaction=True)

BR = (b"accept-encoding", b"gzip, deflate, br")


def lane_count() -> float:
    return REGISTRY.get_sample_value("chat_http_fast_lane_responses_total") or 0.0


async def call(
    path: str,
    headers: list[tuple[bytes, bytes]],
    *,
    host: bytes = b"testserver",
    method: str = "GET",
    app: Any = application,
    **scope: Any,
) -> dict[str, Any]:
    """One request through the ASGI application: {"status", "headers", "body", "lane"} (lane: the fast lane answered)."""
    parsed = urlparse(path)
    full_scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(parsed.path),
        "raw_path": parsed.path.encode(),
        "query_string": parsed.query.encode(),
        "root_path": "",
        "headers": [(b"host", host), *headers],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 40000),
        **scope,
    }
    before = lane_count()
    communicator = ApplicationCommunicator(app, full_scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(30)
    body = b""
    while True:
        message = await communicator.receive_output(30)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(30)
    return {"status": start["status"], "headers": start["headers"], "body": body, "lane": lane_count() > before}


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())


def items(response: dict[str, Any]) -> list[dict[str, Any]]:
    body = response["body"]
    if dict(response["headers"]).get(b"Content-Encoding") == b"br":
        body = brotli.decompress(body)
    return orjson.loads(body)["items"]


def header_map(response: dict[str, Any]) -> dict[bytes, bytes]:
    """Headers by lower-case name; the per-response ones (request id, BREACH padding) by presence only."""
    out = {}
    for name, value in response["headers"]:
        name = name.lower()
        out[name] = b"<set>" if name in (b"x-request-id", b"x-noise") else value
    return out


@pytest.fixture
def world(chat_world, make_message, make_token) -> dict[str, Any]:
    room = chat_world["public"]
    for n in range(60):
        make_message(room, chat_world["owner"], body=f"message number {n} with enough words to fill a page past the floor")
    return {**chat_world, "room": room, "path": f"/api/v1/rooms/{room.id}/messages", "token": make_token(chat_world["member"])}


async def test_the_second_read_of_a_shared_page_is_answered_by_the_lane_with_django_s_response(world):
    headers = [bearer(world["token"]), BR]
    first = await call(world["path"], headers)
    assert first["status"] == 200 and not first["lane"]  # Django renders and caches it
    second = await call(world["path"], headers)
    assert second["status"] == 200 and second["lane"]
    with override_settings(HTTP_FAST_LANE=False):
        django = await call(world["path"], headers)
    assert not django["lane"]
    assert second["body"] == django["body"] == first["body"]
    assert header_map(second) == header_map(django)
    assert header_map(second)[b"content-encoding"] == b"br"
    assert int(header_map(second)[b"content-length"]) == len(second["body"])
    assert [m["body"] for m in items(second)][-1].startswith("message number 59")


@pytest.fixture
def small_room(chat_world, make_message, make_token) -> dict[str, Any]:
    room = chat_world["private"]
    make_message(room, chat_world["insider"], body="one short message")
    return {"path": f"/api/v1/rooms/{room.id}/messages", "token": make_token(chat_world["insider"])}


async def test_a_page_too_small_to_compress_goes_out_plain_as_django_sends_it(small_room):
    path = small_room["path"]
    headers = [bearer(small_room["token"]), BR]
    django = await call(path, headers)
    lane = await call(path, headers)
    assert not django["lane"] and lane["lane"]
    assert lane["body"] == django["body"] and len(lane["body"]) < 1024
    assert header_map(lane) == header_map(django)
    assert b"content-encoding" not in header_map(lane) and b"x-noise" not in header_map(lane)
    assert items(lane)[0]["body"] == "one short message"


async def test_older_pages_by_cursor_and_a_limit(world):
    first = await call(world["path"] + "?limit=20", [bearer(world["token"]), BR])
    cursor = orjson.loads(brotli.decompress(first["body"]))["next_cursor"]
    path = f"{world['path']}?cursor={cursor}&limit=20"
    django = await call(path, [bearer(world["token"]), BR])
    lane = await call(path, [bearer(world["token"]), BR])
    assert not django["lane"] and lane["lane"]
    assert lane["body"] == django["body"]
    assert [m["body"][:17] for m in items(lane)][0] == "message number 20"
    # The same page asked for with the default limit is another page: Django's.
    assert not (await call(f"{world['path']}?cursor={cursor}", [bearer(world["token"]), BR]))["lane"]


async def test_a_served_page_is_counted_where_django_s_would_be(world, caplog):
    headers = [bearer(world["token"]), BR]
    await call(world["path"], headers)  # fill

    def snapshot() -> dict[tuple, float]:
        samples = {}
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                if sample.name.startswith("django_http_") and not sample.name.endswith("_created"):
                    if "latency" in sample.name and not sample.name.endswith("_count"):
                        continue  # the time taken differs, not what is counted
                    samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def delta(before: dict, after: dict) -> dict:
        return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}

    results = {}
    for lane_on in (False, True):
        perf_cache.cache_stats_reset()
        caplog.clear()
        before = snapshot()
        with override_settings(HTTP_FAST_LANE=lane_on), caplog.at_level(logging.INFO, logger="perf.request"):
            response = await call(world["path"], headers)
        assert response["lane"] is lane_on
        lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "perf.request"]
        assert len(lines) == 1
        line = {k: v for k, v in lines[0].items() if k not in ("duration_ms", "request_id", "db_ms")}
        stats = {family: (s["hits"], s["misses"]) for family, s in perf_cache.cache_stats().items()}
        results[lane_on] = (delta(before, snapshot()), line, stats)
    assert results[True] == results[False]
    metrics, line, stats = results[True]
    assert line["status"] == 200 and line["user_id"] == world["member"].id and line["cache_hits"] == 4
    assert line["db_queries"] == 0 and line["cache_misses"] == 0
    assert stats == {"tokens": (1, 0), "rooms": (1, 0), "access": (1, 0), "pages": (1, 0)}
    assert any(name == "django_http_requests_latency_seconds_by_view_method_count" for name, _ in metrics)


async def test_a_new_message_an_edit_and_a_rename_are_seen_at_once(world):
    headers = [bearer(world["token"]), BR]
    await call(world["path"], headers)
    assert (await call(world["path"], headers))["lane"]

    message, _ = await _sync(services.message_create, room=world["room"], author=world["owner"], body="just now")
    fresh = await call(world["path"], headers)
    assert not fresh["lane"] and items(fresh)[-1]["body"] == "just now"
    assert (await call(world["path"], headers))["lane"]

    await _sync(services.message_edit, message=message, by=world["owner"], body="edited")
    edited = await call(world["path"], headers)
    assert not edited["lane"] and items(edited)[-1]["body"] == "edited"

    await call(world["path"], headers)
    await _sync(services.user_update_profile, user=world["owner"], first_name="The", last_name="Owner")
    renamed = await call(world["path"], headers)
    assert not renamed["lane"] and items(renamed)[-1]["author"]["display_name"] == "The Owner"


async def test_losing_access_or_the_token_is_seen_at_once(world):
    headers = [bearer(world["token"]), BR]
    await call(world["path"], headers)
    assert (await call(world["path"], headers))["lane"]
    await _sync(project_services.membership_remove, project=world["project"], user=world["member"], by=world["owner"])
    gone = await call(world["path"], headers)
    assert gone["status"] == 404 and not gone["lane"]

    other = world["owner"]
    token = await _sync(lambda: services.token_create(user=other)[1])
    await call(world["path"], [bearer(token), BR])
    assert (await call(world["path"], [bearer(token), BR]))["lane"]
    await _sync(lambda: ApiToken.objects.filter(user=other).delete())
    refused = await call(world["path"], [bearer(token), BR])
    assert refused["status"] == 401 and not refused["lane"]

    admin = world["admin"]
    token = await _sync(lambda: services.token_create(user=admin)[1])
    await call(world["path"], [bearer(token), BR])
    assert (await call(world["path"], [bearer(token), BR]))["lane"]

    def deactivate() -> None:
        admin.is_active = False
        admin.save()

    await _sync(deactivate)
    refused = await call(world["path"], [bearer(token), BR])
    assert refused["status"] == 401 and not refused["lane"]


@pytest.mark.parametrize(
    "query,replace,status",
    [
        ("?fields=id,body", {}, 200),
        ("?after=1", {}, 200),
        ("?limit=0", {}, 422),
        ("?limit=abc", {}, 422),
        ("?limit=5&limit=6", {}, 200),
        ("?cursor=not-a-cursor", {}, 400),
        ("?cursor=", {}, 400),
        ("", {b"accept-encoding": b"gzip"}, 200),
        ("", {b"accept-encoding": b"br;q=0, gzip"}, 200),
        ("", {b"accept-encoding": None}, 200),
        ("", {b"authorization": b"Bearer  TOKEN"}, 200),
        ("", {b"authorization": b"Token TOKEN"}, 401),
        ("", {b"authorization": None}, 401),
        ("", {b"host": b"evil.example"}, 400),
    ],
)
async def test_anything_else_is_django_s(world, query, replace, status):
    headers = {b"authorization": f"Bearer {world['token']}".encode(), BR[0]: BR[1]}
    await call(world["path"], list(headers.items()))  # the shared page is cached
    assert (await call(world["path"], list(headers.items())))["lane"]
    host = replace.pop(b"host", b"testserver")
    for name, value in replace.items():
        headers[name] = value.replace(b"TOKEN", world["token"].encode()) if value else None
    response = await call(world["path"] + query, [(k, v) for k, v in headers.items() if v is not None], host=host)
    assert response["status"] == status
    assert not response["lane"]


async def test_a_request_the_lane_cannot_read_is_django_s(world, caplog, monkeypatch):
    """A fault in the lane's reading of a request costs the lane, never the request."""
    import dataclasses

    await call(world["path"], [bearer(world["token"]), BR])
    broken = dataclasses.replace(fastlane.plan(), hosts=None)  # any lookup in it fails
    monkeypatch.setattr(fastlane, "plan", lambda: broken)
    with caplog.at_level(logging.WARNING, logger="chat.fastlane"):
        response = await call(world["path"], [bearer(world["token"]), BR])
    assert response["status"] == 200 and not response["lane"]
    assert items(response)[-1]["body"].startswith("message number 59")
    assert "could not read a request" in caplog.text


async def test_a_forward_cursor_is_django_s(world):
    forward = page_cursor_encode({"a": 1})
    await call(world["path"], [bearer(world["token"]), BR])
    assert not (await call(f"{world['path']}?cursor={forward}", [bearer(world["token"]), BR]))["lane"]
    assert (await call(world["path"], [bearer(world["token"]), BR]))["lane"]


async def test_redis_down_goes_to_django_which_degrades(world):
    headers = [bearer(world["token"]), BR]
    await call(world["path"], headers)
    with override_settings(CACHES=DEAD_REDIS):
        caches._settings = None
        try:
            caches.close_all()
            from perf import aredis

            await aredis.aclose()
            response = await call(world["path"], headers)
        finally:
            caches.close_all()
    assert response["status"] == 200 and not response["lane"]
    assert items(response)[-1]["body"].startswith("message number 59")


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"HTTP_FAST_LANE": False}, "HTTP_FAST_LANE"),
        ({"DEBUG": True}, "DEBUG"),
        ({"COMPRESSION_ENABLED": False}, "compression"),
        ({"DISALLOWED_USER_AGENTS": ["bot"]}, "CommonMiddleware"),
    ],
)
def test_the_lane_turns_off(overrides, reason):
    with override_settings(**overrides):
        current = fastlane.plan()
        assert not current.enabled and reason in current.reason
    assert fastlane.plan().enabled


@override_settings(ROOT_URLCONF="tests.chatsite.probe_urls")
def test_a_urlconf_without_the_history_endpoint_turns_the_lane_off():
    current = fastlane.plan()
    assert not current.enabled and "history endpoint" in current.reason


def test_an_unknown_middleware_turns_the_lane_off():
    from django.conf import settings

    with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, "silk.middleware.SilkyMiddleware"]):
        current = fastlane.plan()
        assert not current.enabled and "silk.middleware.SilkyMiddleware" in current.reason


def test_the_lane_is_on_under_the_production_settings():
    """The deployed middleware list (static files included) is one the lane accounts for."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings.production", "SECRET_KEY": "placeholder-for-a-settings-test"}
    code = "import django; django.setup(); from chat import fastlane; p = fastlane.plan(); print(p.enabled, p.reason)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=django_settings.BASE_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("True"), out.stdout


def test_static_files_turn_the_lane_off_only_where_they_could_answer_the_history_path():
    with_static = [*django_settings.MIDDLEWARE]
    with_static.insert(with_static.index("django.middleware.security.SecurityMiddleware") + 1, fastlane.STATIC_MIDDLEWARE)
    with override_settings(MIDDLEWARE=with_static):
        assert fastlane.plan().enabled
        with override_settings(WHITENOISE_ROOT=str(django_settings.BASE_DIR)):
            current = fastlane.plan()
            assert not current.enabled and "WHITENOISE_ROOT" in current.reason
        for static in ({"STATIC_URL": "/api/"}, {"STATIC_URL": "https://cdn.example.com/api/v1/"}, {"WHITENOISE_STATIC_PREFIX": "/api/v1/rooms/5/"}):
            with override_settings(**static):
                current = fastlane.plan()
                assert not current.enabled and "share a path" in current.reason, static
        with override_settings(STATIC_URL="https://cdn.example.com/assets/"):
            assert fastlane.plan().enabled


async def test_with_the_static_files_middleware_the_lane_answers_as_django_does(world):
    headers = [bearer(world["token"]), BR]
    with_static = [*django_settings.MIDDLEWARE]
    with_static.insert(with_static.index("django.middleware.security.SecurityMiddleware") + 1, fastlane.STATIC_MIDDLEWARE)
    with override_settings(MIDDLEWARE=with_static):
        app = fastlane.HistoryFastLane(get_asgi_application())
        first = await call(world["path"], headers, app=app)
        lane = await call(world["path"], headers, app=app)
        with override_settings(HTTP_FAST_LANE=False):
            django = await call(world["path"], headers, app=app)
    assert not first["lane"] and lane["lane"] and not django["lane"]
    assert lane["body"] == django["body"] and header_map(lane) == header_map(django)


async def test_behind_a_tls_proxy_the_security_headers_are_django_s(world):
    headers = [bearer(world["token"]), BR, (b"x-forwarded-proto", b"https")]
    with override_settings(
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"), SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=3600
    ):
        # Middleware reads these settings when the handler is built, as at a server's start.
        app = fastlane.HistoryFastLane(get_asgi_application())
        await call(world["path"], headers, app=app)
        lane = await call(world["path"], headers, app=app)
        assert lane["lane"]
        with override_settings(HTTP_FAST_LANE=False):
            django = await call(world["path"], headers, app=app)
        assert not django["lane"]
        assert header_map(lane) == header_map(django)
        assert header_map(lane)[b"strict-transport-security"] == b"max-age=3600"
        # Plain HTTP is redirected, by Django.
        plain = await call(world["path"], [bearer(world["token"]), BR], app=app)
        assert plain["status"] == 301 and not plain["lane"]


async def _sync(fn: Any, **kwargs: Any) -> Any:
    from asgiref.sync import sync_to_async

    return await sync_to_async(fn, thread_sensitive=False)(**kwargs)
