"""Redis (channel layer, cache, presence, rate limits) dies while people chat, then comes back.

What happens, measured against channels-redis' RedisPubSubChannelLayer:

* open sockets neither crash nor close; they stop receiving live events. Every
  publish fails (logged as "publish failed", counted in
  chat_publish_failures_total); the layer's receive task logs once a second
  until Redis answers again;
* sends still persist and are acknowledged, over the WebSocket and the HTTP
  API; pages and API reads work (the cache degrades to the database);
* when Redis returns, redis-py's pub/sub connection reconnects and
  re-subscribes by itself: open sockets receive live events again, and the
  first live message fills the gap (the consumer fetches the missed seqs from
  the database), so an open socket ends up with every acknowledged message;
* a reconnecting client resumes with ``last_id`` and gets the rest.

Two edges have their own tests below: a socket opened during the outage is
accepted and closed with 4503 ("unavailable, retry"), and the first subscribe
after Redis returns keeps the socket (presence degrades instead of raising
on the stale pooled connection). The main test tolerates both the way a real
client does: it reconnects.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from django.test import Client

from tests.faults.conftest import PrivateRedis, Reader, ServerLog, http
from tests.servers import app_servers
from tests.waiting import wait_until
from tests.wsclient import ChatSocket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def people(chat_world, make_token) -> dict[str, Any]:
    tokens = {name: make_token(chat_world[name]) for name in ("member", "owner", "admin", "insider")}
    browser = Client()
    browser.force_login(chat_world["member"])  # the session is in the database too (cached_db)
    return {**chat_world, "tokens": tokens, "cookie": f"sessionid={browser.cookies['sessionid'].value}"}


def test_chat_survives_a_redis_outage_and_nobody_misses_a_message(people, private_redis: PrivateRedis) -> None:
    room = people["public"]
    tokens = people["tokens"]

    with app_servers(1, REDIS_URL=private_redis.url) as servers:
        ((port, proc),) = servers
        log = ServerLog(proc)

        async def scenario() -> None:
            alice = Reader("alice", tokens["member"], room.id)
            bob = Reader("bob", tokens["owner"], room.id)
            for reader in (alice, bob):
                await reader.connect(port, resume=False)
            acked: list[int] = []
            ack = await alice.send("before")
            acked.append(ack["id"])
            await bob.read_until(set(acked))

            private_redis.kill()

            # Sends persist and are acknowledged on both surfaces.
            for i in range(3):
                ack = await alice.send(f"outage-ws-{i}")
                assert ack["type"] == "message.ack", ack
                acked.append(ack["id"])
            for i in range(2):
                status, _, body = await asyncio.to_thread(
                    http, port, "POST", f"/api/v1/rooms/{room.id}/messages", token=tokens["admin"], body={"body": f"outage-api-{i}"}
                )
                assert status == 201, body
                acked.append(json.loads(body)["id"])
            # Reads work: the API history and the room page.
            status, _, body = await asyncio.to_thread(http, port, "GET", f"/api/v1/rooms/{room.id}/messages", token=tokens["owner"])
            assert status == 200
            assert [m["id"] for m in json.loads(body)["items"]] == acked
            status, _, page = await asyncio.to_thread(http, port, "GET", f"/p/{room.project.slug}/r/{room.slug}/", cookie=people["cookie"])
            assert status == 200 and b"outage-api-1" in page
            status, _, body = await asyncio.to_thread(http, port, "GET", "/healthz")
            assert status == 503 and b'"redis": "error"' in body
            # Every failed publish is logged.
            assert log.count("publish failed") >= 5, log.tail()

            private_redis.start()

            # Open sockets: live delivery resumes by itself, and the first live
            # message after the restart brings the missed ones with it (gap fill).
            for i in range(30):
                ack = await alice.send(f"after-{i}")
                assert ack["type"] == "message.ack", ack
                acked.append(ack["id"])
                try:
                    await bob.read_until(set(acked), timeout=1)
                    break
                except (asyncio.TimeoutError, TimeoutError):
                    continue
            assert set(acked) <= bob.ids
            await alice.read_until(set(acked))

            # Reconnecting clients resume from their last id; a newcomer gets everything.
            carol = Reader("carol", tokens["admin"], room.id)
            for reader in (alice, bob, carol):
                if reader.sock is not None:
                    await reader.sock.close()
                await reader.connect(port)
            for reader in (alice, bob, carol):
                assert reader.ids == set(acked), (reader.name, sorted(set(acked) - reader.ids))
                reader.assert_sessions_clean()
                await reader.sock.close()
            assert carol.sessions[-1] == acked

        asyncio.run(scenario())
        assert proc.poll() is None


def test_a_socket_opened_during_a_redis_outage_is_closed_with_4503(people, private_redis: PrivateRedis) -> None:
    """Not an HTTP 500 at the handshake: accepted, then closed with 4503
    ("unavailable, retry"; an application may send only 1000 or 3000-4999, so
    not 1013), which clients treat as "reconnect with backoff"."""
    with app_servers(1, REDIS_URL=private_redis.url) as servers:
        ((port, proc),) = servers
        ServerLog(proc)
        private_redis.kill()

        async def scenario() -> int | str:
            try:
                ws = await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws/", additional_headers={"Authorization": f"Bearer {people['tokens']['member']}"}
                )
            except websockets.InvalidStatus as refused:
                return f"HTTP {refused.response.status_code}"
            try:
                for _ in range(10):
                    await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else 1006
            return "still open"

        assert asyncio.run(scenario()) == 4503


def test_subscribing_right_after_redis_returns_keeps_the_socket(people, private_redis: PrivateRedis, make_room) -> None:
    """The stale pooled presence connection's ConnectionError must not escape into
    on_subscribe (it used to crash the consumer: close 1011). Presence never raises."""
    other = make_room(people["project"], name="second")
    with app_servers(1, REDIS_URL=private_redis.url) as servers:
        ((port, proc),) = servers
        ServerLog(proc)

        async def scenario() -> dict[str, Any]:
            sock = await ChatSocket.open(port, people["tokens"]["member"])
            await sock.send({"type": "subscribe", "room": people["public"].id})
            await sock.until("subscribed")
            private_redis.kill()
            private_redis.start()
            wait_until(private_redis.answers, timeout=10, interval=0.1, message="redis did not come back")
            await sock.send({"type": "subscribe", "room": other.id, "ref": "again"})
            try:
                for _ in range(100):
                    event = await sock.recv()
                    if event["type"] in ("subscribed", "error"):
                        return event
            except websockets.ConnectionClosed as closed:
                return {"closed": closed.rcvd.code if closed.rcvd else 1006}
            raise AssertionError("no answer")

        answer = asyncio.run(scenario())
        # "subscribed", or a retryable error frame: either way the socket lives.
        assert answer.get("type") == "subscribed" or (answer.get("type") == "error" and answer.get("retryable")), answer
