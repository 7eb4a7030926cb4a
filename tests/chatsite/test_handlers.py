"""chatsite.handlers: each HTTP request's middleware and view in one hop to a pool thread."""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest
from channels.testing import HttpCommunicator
from django.test import override_settings

from chatsite.asgi import application, django_asgi_app
from chatsite.handlers import ThreadedASGIHandler
from perf.db import pool_stats
from tests.chatsite import probe_urls


async def get(path: str) -> dict:
    communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", b"testserver")])
    return await communicator.get_response(timeout=30)


def test_the_application_uses_the_threaded_handler() -> None:
    assert isinstance(django_asgi_app, ThreadedASGIHandler)


@override_settings(ROOT_URLCONF="tests.chatsite.probe_urls")
async def test_the_view_runs_on_a_pool_thread_not_the_event_loop() -> None:
    response = await get("/probe/where")
    assert response["status"] == 200
    body = orjson.loads(response["body"])
    assert body["thread"].startswith("http")
    assert body["ident"] != threading.get_ident()
    # The whole middleware stack ran around it (PerfMiddleware's request id).
    assert any(name.lower() == b"x-request-id" for name, _ in response["headers"])


@override_settings(ROOT_URLCONF="tests.chatsite.probe_urls")
async def test_two_requests_are_in_their_views_at_the_same_time() -> None:
    """With one pool thread (HTTP_THREADS=1) the second would wait for the first and the barrier would break (409)."""
    probe_urls.MEETING.reset()
    first, second = await asyncio.gather(get("/probe/meet"), get("/probe/meet"))
    assert [first["status"], second["status"]] == [200, 200]
    assert orjson.loads(first["body"]) == orjson.loads(second["body"]) == {"met": True}


@pytest.mark.django_db(transaction=True)
async def test_every_request_gives_its_database_connection_back_to_the_pool() -> None:
    before = pool_stats()["in_use"]
    responses = await asyncio.gather(*(get("/healthz") for _ in range(20)))
    assert [r["status"] for r in responses] == [200] * 20
    assert all(orjson.loads(r["body"])["database"] == "ok" for r in responses)
    assert pool_stats()["in_use"] == before
