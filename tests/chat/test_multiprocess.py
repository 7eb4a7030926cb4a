"""Two real daphne processes sharing the Redis channel layer."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from tests.servers import daphne_servers

pytestmark = pytest.mark.django_db(transaction=True)


async def _open(port: int, token: str):
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/", additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10
    )
    assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
    return ws


async def _until(ws, frame_type: str) -> tuple[dict, list[dict]]:
    before = []
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == frame_type:
            return frame, before
        before.append(frame)


def test_clients_on_two_processes_chat_and_resume_across_them(chat_world, make_token):
    room = chat_world["public"]
    alice_token, bob_token = make_token(chat_world["member"]), make_token(chat_world["owner"])

    async def scenario(port_a: int, port_b: int) -> None:
        alice = await _open(port_a, alice_token)
        bob = await _open(port_b, bob_token)
        for ws in (alice, bob):
            await ws.send(orjson.dumps({"type": "subscribe", "room": room.id}).decode())
            await _until(ws, "subscribed")

        acked = []
        for i in range(20):
            await alice.send(orjson.dumps({"type": "message.send", "room": room.id, "body": f"a{i}", "client_id": f"a{i}"}).decode())
        for _ in range(20):
            ack, _ = await _until(alice, "message.ack")
            acked.append(ack["id"])
        received = [(await _until(bob, "message.new"))[0]["message"]["id"] for _ in range(20)]
        assert received == acked

        # bob answers from the other process
        await bob.send(orjson.dumps({"type": "message.send", "room": room.id, "body": "hi", "client_id": "b0"}).decode())
        ack, _ = await _until(bob, "message.ack")
        got, _ = await _until(alice, "message.new")
        while got["message"]["id"] != ack["id"]:
            got, _ = await _until(alice, "message.new")

        # bob drops; alice keeps talking; bob comes back on the *other* process and resumes
        last_seen = ack["id"]
        await bob.close()
        missed = []
        for i in range(7):
            await alice.send(orjson.dumps({"type": "message.send", "room": room.id, "body": f"m{i}", "client_id": f"m{i}"}).decode())
            ack, _ = await _until(alice, "message.ack")
            missed.append(ack["id"])
        bob = await _open(port_a, bob_token)
        await bob.send(orjson.dumps({"type": "subscribe", "room": room.id, "last_id": last_seen}).decode())
        subscribed, backlog = await _until(bob, "subscribed")
        assert [f["message"]["id"] for f in backlog] == missed
        await alice.close()
        await bob.close()

    with daphne_servers(2) as servers:
        (port_a, _), (port_b, _) = servers
        asyncio.run(scenario(port_a, port_b))
