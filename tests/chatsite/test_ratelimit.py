"""Rate limits shared through Redis: API (429 + Retry-After) and WebSocket (error frame, socket stays open)."""

from __future__ import annotations

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat.models import Message
from chatsite import ratelimit
from chatsite.asgi import application
from tests.conftest import PASSWORD

API = "/api/v1"


def post_json(client, path, body, **extra):
    return client.post(API + path, data=orjson.dumps(body), content_type="application/json", **extra)


def test_parse_rate():
    assert ratelimit.parse_rate("120/60") == (120, 60)
    assert ratelimit.parse_rate("5") == (5, 1)


def test_api_message_sends_are_limited_per_user(chat_world, api_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "message": "3/60"}
    room = chat_world["public"]
    client = api_client(chat_world["member"])
    for i in range(3):
        assert post_json(client, f"/rooms/{room.id}/messages", {"body": f"m{i}"}).status_code == 201
    limited = post_json(client, f"/rooms/{room.id}/messages", {"body": "one too many"})
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited" and 1 <= int(limited["Retry-After"]) <= 61
    assert limited.json()["retry_after"] == int(limited["Retry-After"])
    assert Message.objects.count() == 3
    # another user is not affected
    assert post_json(api_client(chat_world["owner"]), f"/rooms/{room.id}/messages", {"body": "x"}).status_code == 201


def test_token_endpoint_limits_failures_per_account_and_per_ip(make_user, settings):
    """The token API under chatsite.login_policy (tests/chatsite/test_login_policy.py has the rest)."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_account": "2/300", "login_ip": "4/300"}
    make_user("target")
    client = Client()
    for _ in range(2):
        assert post_json(client, "/auth/token", {"username": "target", "password": "wrong"}).status_code == 401
    # The account's limit is used up and this address failed for it: refused unchecked.
    assert post_json(client, "/auth/token", {"username": "target", "password": PASSWORD}).status_code == 429
    # per IP: failures for other accounts from the same address run into the IP limit (refusals do not count)
    for _ in range(2):
        assert post_json(client, "/auth/token", {"username": "other", "password": "x"}).status_code == 401
    assert post_json(client, "/auth/token", {"username": "other", "password": "x"}).status_code == 429
    # another address is fine for another account
    other_ip = post_json(client, "/auth/token", {"username": "other2", "password": "x"}, REMOTE_ADDR="10.9.9.9")
    assert other_ip.status_code == 401


def test_room_creation_is_limited(chat_world, api_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "room_create": "1/3600"}
    client = api_client(chat_world["member"])
    assert post_json(client, "/projects/world/rooms", {"name": "one"}).status_code == 201
    assert post_json(client, "/projects/world/rooms", {"name": "two"}).status_code == 429


@pytest.mark.django_db(transaction=True)
async def test_websocket_sends_share_the_limit_and_get_an_error_frame(chat_world, make_token, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "message": "2/60"}
    token = await database_sync_to_async(make_token)(chat_world["member"])
    room = chat_world["public"]
    # one send over the API counts against the same budget
    api = Client(headers={"Authorization": f"Bearer {token}"})
    response = await database_sync_to_async(post_json)(api, f"/rooms/{room.id}/messages", {"body": "via api"})
    assert response.status_code == 201
    ws = WebsocketCommunicator(application, "/ws/", headers=[(b"authorization", f"Bearer {token}".encode())])
    assert (await ws.connect())[0]
    assert orjson.loads(await ws.receive_from())["type"] == "hello"
    await ws.send_to(text_data=orjson.dumps({"type": "message.send", "room": room.id, "body": "a", "client_id": "a"}).decode())
    assert orjson.loads(await ws.receive_from())["type"] == "message.ack"
    await ws.send_to(text_data=orjson.dumps({"type": "message.send", "room": room.id, "body": "b", "client_id": "b"}).decode())
    error = orjson.loads(await ws.receive_from())
    assert error["type"] == "error" and error["code"] == "rate_limited" and error["ref"] == "b"
    assert error["retryable"] is True and error["retry_after"] >= 1
    # the socket stays open and usable
    await ws.send_to(text_data=orjson.dumps({"type": "ping", "ref": 1}).decode())
    assert orjson.loads(await ws.receive_from()) == {"type": "pong", "ref": 1}
    assert await database_sync_to_async(Message.objects.count)() == 2
    await ws.disconnect()


def test_record_counts_without_refusing_and_usage_reads_without_counting(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "probe": "2/300"}
    fresh, off = ratelimit.usage(("probe", "a"), ("off", "a"))
    assert off is None and fresh.count == 0 and fresh.limit == 2 and not fresh.exhausted
    for _ in range(3):
        ratelimit.record("probe", "a")  # past the limit, and never raises
    (used,) = ratelimit.usage(("probe", "a"))
    assert used.count == 3 and used.exhausted and 1 <= used.retry_after <= 301
    assert ratelimit.usage(("probe", "a"))[0].count == 3
    # hit shares the counter and refuses past the limit
    with pytest.raises(ratelimit.RateLimited):
        ratelimit.hit("probe", "a")
    ratelimit.hit("probe", "b")
    assert ratelimit.usage(("probe", "b"))[0].count == 1
