"""The background worker delivers @mentions to the mentioned users' sockets."""

from __future__ import annotations

import asyncio

import pytest

from chat.selectors import history as history_selectors
from tests.servers import background_worker, app_servers
from tests.wsclient import ChatSocket

pytestmark = pytest.mark.django_db(transaction=True)


def test_mentioned_readers_only_includes_people_who_can_read_the_room(chat_world):
    public, private = chat_world["public"], chat_world["private"]
    body = "hi @member and @insider, also @outsider and @nobody. cc @owner."
    assert {u.username for u in history_selectors.mentioned_readers(room=public, body=body)} == {"member", "insider", "owner"}
    assert {u.username for u in history_selectors.mentioned_readers(room=private, body=body)} == {"insider"}
    assert history_selectors.mentioned_readers(room=public, body="mail me at x@member.com") == []


def test_mention_reaches_every_socket_of_the_mentioned_user(chat_world, make_token):
    room = chat_world["public"]
    alice_token, bob_token = make_token(chat_world["member"]), make_token(chat_world["owner"])

    async def scenario(port: int) -> None:
        alice = await ChatSocket.open(port, alice_token)
        bob = await ChatSocket.open(port, bob_token)  # bob follows no room at all
        await alice.send({"type": "message.send", "room": room.id, "body": "ping @owner please", "client_id": "m1"})
        ack, _ = await alice.until("message.ack")
        mention, _ = await bob.until("mention")
        assert mention["room"] == room.id and mention["message"]["id"] == ack["id"]
        await alice.close()
        await bob.close()

    with app_servers(1) as servers, background_worker():
        asyncio.run(scenario(servers[0][0]))
