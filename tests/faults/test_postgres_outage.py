"""PostgreSQL loses its connections, then goes away and comes back, under a running server.

A private cluster (tests/faults/conftest.py) so the shared server is never
touched. The server runs with ``DB_POOL_TIMEOUT=3``:

* after ``pg_terminate_backend`` on every connection, the pool replaces its
  dead connections by itself: requests succeed again without a restart, and a
  WebSocket send either acks or answers ``unavailable`` (retryable);
* while PostgreSQL is down, every API request answers 503 JSON
  (``unavailable``) within the pool timeout (never a 500, never a hang), pages
  answer a 503 page, and WebSocket sends answer an ``unavailable`` error frame
  with ``retryable: true``: never an ack;
* after PostgreSQL is back, the same server and the same sockets work again,
  retried sends (same ``client_id``) are stored exactly once, and every
  acknowledged message is in the database.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.faults.conftest import PrivatePostgres, Reader, ServerLog, http
from tests.servers import app_servers

POOL_TIMEOUT = 3
# A request may wait for the pool once (POOL_TIMEOUT) plus a little work; far
# less than this means "no hang". A liveness bound, not a speed check.
REQUEST_BOUND = POOL_TIMEOUT + 12


def _stored(cluster: PrivatePostgres, room_id: int) -> dict[str, list[int]]:
    rows = cluster.execute(f"SELECT client_id, id FROM chat_message WHERE room_id = {room_id}", database=cluster.database)
    stored: dict[str, list[int]] = {}
    for client_id, message_id in rows:
        stored.setdefault(client_id, []).append(message_id)
    return stored


async def _send_until_acked(reader: Reader, client_id: str, *, attempts: int = 40) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send, and resend the same client_id after each retryable error; (ack, errors seen)."""
    errors = []
    for _ in range(attempts):
        answer = await reader.send(client_id)
        if answer["type"] == "message.ack":
            return answer, errors
        assert answer["code"] == "unavailable" and answer.get("retryable") is True, answer
        errors.append(answer)
        await asyncio.sleep(0.5)
    raise AssertionError(f"{client_id} never acknowledged: {errors[-3:]}")


async def _api_until_ok(port: int, token: str, path: str, *, attempts: int = 60) -> list[int]:
    statuses = []
    for _ in range(attempts):
        status, _, body = await asyncio.to_thread(http, port, "GET", path, token=token, timeout=REQUEST_BOUND)
        statuses.append(status)
        if status == 200:
            return statuses
        assert status == 503 and json.loads(body)["code"] == "unavailable", (status, body)
        await asyncio.sleep(0.5)
    raise AssertionError(f"the API never recovered: {statuses[-5:]}")


def test_the_pool_recovers_from_killed_connections_and_a_restart(private_postgres, transactional_db) -> None:
    cluster, seed = private_postgres
    room_id, tokens = seed["room"], seed["tokens"]
    history = f"/api/v1/rooms/{room_id}/messages"

    with app_servers(1, DATABASE_URL=cluster.url(), DB_POOL_TIMEOUT=str(POOL_TIMEOUT)) as servers:
        ((port, proc),) = servers
        log = ServerLog(proc)

        async def scenario() -> tuple[list[int], list[str]]:
            alice, bob = Reader("alice", tokens["alice"], room_id), Reader("bob", tokens["bob"], room_id)
            for reader in (alice, bob):
                await reader.connect(port)
            acked: list[int] = []
            client_ids: list[str] = []

            async def send(client_id: str) -> list[dict[str, Any]]:
                ack, errors = await _send_until_acked(alice, client_id)
                acked.append(ack["id"])
                client_ids.append(client_id)
                return errors

            await send("warm-up")

            # 1. Every server connection is killed: the pool heals itself.
            assert cluster.terminate_backends() >= 1
            await _api_until_ok(port, tokens["bob"], history, attempts=5)
            await send("after-terminate")

            # 2. PostgreSQL stops.
            cluster.stop("fast")
            for path in (history, f"/api/v1/rooms/{room_id}", "/api/v1/projects"):
                status, headers, body = await asyncio.to_thread(http, port, "GET", path, token=tokens["bob"], timeout=REQUEST_BOUND)
                assert status == 503, (path, status, body)
                assert headers["Content-Type"].startswith("application/json")
                assert json.loads(body)["code"] == "unavailable"
            status, _, body = await asyncio.to_thread(
                http, port, "POST", f"/api/v1/rooms/{room_id}/messages", token=tokens["bob"], body={"body": "lost?", "client_id": "api-outage"}, timeout=REQUEST_BOUND
            )
            assert status == 503 and json.loads(body)["code"] == "unavailable", body
            status, _, _ = await asyncio.to_thread(http, port, "GET", "/healthz", timeout=REQUEST_BOUND)
            assert status == 503
            # WebSocket: an error frame that says "retry", never an ack.
            for i in range(2):
                answer = await alice.send(f"outage-{i}")
                assert answer["type"] == "error", answer
                assert answer["code"] == "unavailable" and answer["retryable"] is True and answer["ref"] == f"outage-{i}"

            # 3. PostgreSQL is back: the same server recovers, retries are stored once.
            cluster.start()
            await _api_until_ok(port, tokens["bob"], history)
            for i in range(2):
                await send(f"outage-{i}")
            await send("after-restart")

            await bob.read_until(set(acked))
            for reader in (alice, bob):
                await reader.sock.close()
                await reader.connect(port)
                assert set(acked) <= reader.ids
                reader.assert_sessions_clean()
                await reader.sock.close()
            return acked, client_ids

        acked, client_ids = asyncio.run(scenario())
        assert proc.poll() is None
        # The outage is logged as such (the API, the middleware and the consumer each say so).
        assert log.count("database unavailable") >= 1, log.tail()

    stored = _stored(cluster, room_id)
    # Every acknowledged message is stored, each client_id exactly once, nothing else.
    assert {client_id: ids for client_id, ids in stored.items() if client_id in client_ids} == {
        client_id: [message_id] for client_id, message_id in zip(client_ids, acked)
    }
    assert "api-outage" not in stored
