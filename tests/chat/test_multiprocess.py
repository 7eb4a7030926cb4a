"""Two real server processes sharing the Redis channel layer."""

from __future__ import annotations

import asyncio

import pytest

from tests.servers import app_servers
from tests.wsclient import ChatSocket

pytestmark = pytest.mark.django_db(transaction=True)


def test_clients_on_two_processes_chat_and_resume_across_them(chat_world, make_token):
    room = chat_world["public"]
    alice_token, bob_token = make_token(chat_world["member"]), make_token(chat_world["owner"])

    async def scenario(port_a: int, port_b: int) -> None:
        alice = await ChatSocket.open(port_a, alice_token)
        bob = await ChatSocket.open(port_b, bob_token)
        for sock in (alice, bob):
            await sock.send({"type": "subscribe", "room": room.id})
            await sock.until("subscribed")

        acked = []
        for i in range(20):
            await alice.send({"type": "message.send", "room": room.id, "body": f"a{i}", "client_id": f"a{i}"})
        for _ in range(20):
            ack, _ = await alice.until("message.ack")
            acked.append(ack["id"])
        received = [(await bob.until("message.new"))[0]["message"]["id"] for _ in range(20)]
        assert received == acked

        # bob answers from the other process
        await bob.send({"type": "message.send", "room": room.id, "body": "hi", "client_id": "b0"})
        ack, _ = await bob.until("message.ack")
        got, _ = await alice.until("message.new")
        while got["message"]["id"] != ack["id"]:
            got, _ = await alice.until("message.new")

        # bob drops; alice keeps talking; bob comes back on the *other* process and resumes
        last_seen = ack["id"]
        await bob.close()
        missed = []
        for i in range(7):
            await alice.send({"type": "message.send", "room": room.id, "body": f"m{i}", "client_id": f"m{i}"})
            ack, _ = await alice.until("message.ack")
            missed.append(ack["id"])
        bob = await ChatSocket.open(port_a, bob_token)
        await bob.send({"type": "subscribe", "room": room.id, "last_id": last_seen})
        subscribed, backlog = await bob.until("subscribed")
        assert [f["message"]["id"] for f in backlog] == missed
        await alice.close()
        await bob.close()

    with app_servers(2) as servers:
        (port_a, _), (port_b, _) = servers
        asyncio.run(scenario(port_a, port_b))
