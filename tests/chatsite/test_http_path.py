"""One HTTP request path: every request, cached history pages included, goes through Django's handler and middleware."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from channels.testing import HttpCommunicator
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings

from chatsite.asgi import application, django_wsgi_app
from tests.chatsite import probe_urls
from tests.servers import app_servers


async def get(path: str, headers: list[tuple[bytes, bytes]] = ()) -> dict:
    communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", b"testserver"), *headers])
    response = await communicator.get_response(timeout=30)
    # Let the handler finish (close the response, give the connection back): a
    # communicator that is dropped cancels its application.
    await communicator.wait(timeout=30)
    return response


def _header(response: dict, name: bytes) -> bytes | None:
    return next((value for key, value in response["headers"] if key.lower() == name), None)


def test_the_application_is_djangos_own_handler() -> None:
    assert type(django_wsgi_app) is WSGIHandler


@override_settings(ROOT_URLCONF="tests.chatsite.probe_urls")
async def test_two_requests_are_in_their_views_at_the_same_time() -> None:
    """Requests run each in a thread of the pool (HTTP_THREADS): the second does not wait for the first."""
    probe_urls.MEETING.reset()
    first, second = await asyncio.gather(get("/probe/meet"), get("/probe/meet"))
    assert [first["status"], second["status"]] == [200, 200]
    assert orjson.loads(first["body"]) == orjson.loads(second["body"]) == {"met": True}


@pytest.mark.django_db(transaction=True)
def test_every_request_gives_its_database_connection_back_to_the_pool() -> None:
    """A real server whose pool holds two connections answers sixty database requests, ten at a time.

    A request that kept its connection would leave the next ones waiting for
    the pool's timeout (2 s) and answering 503.
    """
    with app_servers(1, DB_POOL_SIZE="2", DB_MAX_OVERFLOW="0", DB_POOL_TIMEOUT="2") as [(port, _)]:

        def health(_: int) -> tuple[int, str]:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
            return response.status_code, response.json()["database"]

        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(health, range(60)))
    assert answers == [(200, "ok")] * 60


@pytest.mark.django_db(transaction=True)
async def test_a_cached_history_page_comes_out_of_djangos_middleware_chain(chat_world, make_token, make_message) -> None:
    """The second read is served from the rendered-page cache, and still carries every middleware's work."""
    from channels.db import database_sync_to_async

    room = chat_world["public"]
    token = await database_sync_to_async(make_token)(chat_world["member"])
    for i in range(30):
        await database_sync_to_async(make_message)(room, chat_world["owner"], f"page body number {i} " * 4)
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"accept-encoding", b"br")]
    first = await get(f"/api/v1/rooms/{room.id}/messages", headers)
    second = await get(f"/api/v1/rooms/{room.id}/messages", headers)
    assert first["status"] == second["status"] == 200
    assert first["body"] == second["body"] and _header(second, b"content-encoding") == b"br"
    for name in (b"x-request-id", b"x-noise", b"content-security-policy", b"x-content-type-options", b"vary"):
        assert _header(second, name) is not None, name
    assert _header(second, b"x-request-id") != _header(first, b"x-request-id")
