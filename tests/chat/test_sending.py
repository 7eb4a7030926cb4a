"""chat.sending: the WebSocket's sends, written in groups by the one writer (real PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat.models import Message, Room
from chat.batching import ThreadBatcher
from chat.sending import Send, write_group
from chatsite.errors import InvalidInput, NotFound
from prometheus_client import REGISTRY
from tests.chat.test_consumers import hello, recv_until, send, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


async def test_sends_that_arrive_together_are_one_group_in_order(chat_world):
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    writer = ThreadBatcher(write_group, slots=1, max_group=200)
    sends = [Send(user=(member, owner)[i % 2], room_id=room.id, body=f"m{i}", client_id=f"c{i}") for i in range(20)]
    acks = await asyncio.gather(*(writer.submit(s) for s in sends))
    assert writer.groups == 1 and writer.requests == 20
    assert [a["seq"] for a in acks] == list(range(1, 21)) and [a["client_id"] for a in acks] == [f"c{i}" for i in range(20)]
    rows = await database_sync_to_async(lambda: list(Message.objects.filter(room=room).order_by("id").values_list("seq", "body")))()
    assert rows == [(i + 1, f"m{i}") for i in range(20)]


async def test_a_full_writer_gathers_the_next_sends_into_one_group(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    writer = ThreadBatcher(write_group, slots=1, max_group=5)
    sends = [Send(user=member, room_id=room.id, body=f"m{i}", client_id=f"g{i}") for i in range(12)]
    acks = await asyncio.gather(*(writer.submit(s) for s in sends))
    assert writer.groups == 3  # 5, 5 and 2: never more than max_group in one statement
    assert [a["seq"] for a in acks] == list(range(1, 13))


async def test_each_send_of_a_group_gets_its_own_answer(chat_world):
    room, private, member, outsider = chat_world["public"], chat_world["private"], chat_world["member"], chat_world["outsider"]
    writer = ThreadBatcher(write_group, slots=1, max_group=200)
    results = await asyncio.gather(
        writer.submit(Send(user=member, room_id=room.id, body="fine", client_id="a")),
        writer.submit(Send(user=outsider, room_id=private.id, body="not yours", client_id="b")),
        writer.submit(Send(user=member, room_id=room.id, body="", client_id="c")),
        writer.submit(Send(user=member, room_id=room.id, body="fine", client_id="a")),
        writer.submit(Send(user=member, room_id=room.id, body="also fine", client_id="d")),
        return_exceptions=True,
    )
    first, refused, empty, retry, last = results
    assert isinstance(refused, NotFound) and isinstance(empty, InvalidInput)
    assert (first["seq"], last["seq"]) == (1, 2) and not first["duplicate"]
    assert retry["duplicate"] and retry["id"] == first["id"]
    assert writer.groups == 1


def _lookups(family: str) -> float:
    return sum(
        REGISTRY.get_sample_value("chat_cache_requests_total", {"family": family, "result": result}) or 0.0
        for result in ("hit", "miss")
    )


async def test_a_subscribed_socket_sends_without_asking_for_its_access_again(world):
    room = world["public"]
    communicator = await hello(world["tokens"]["member"])
    await subscribe(communicator, room.id)
    before = _lookups("access"), _lookups("rooms")
    for i in range(5):
        await send(communicator, {"type": "message.send", "room": room.id, "body": f"hi {i}", "client_id": f"s{i}"})
        ack, _ = await recv_until(communicator, "message.ack")
        assert ack["seq"] == i + 1
    assert (_lookups("access"), _lookups("rooms")) == before
    # An unsubscribed room is checked on every send.
    other = world["private"]
    await send(communicator, {"type": "message.send", "room": other.id, "body": "no", "client_id": "x"})
    error, _ = await recv_until(communicator, "error")
    assert error["code"] == "not_found" and _lookups("access") > before[0]
    await communicator.disconnect()


async def test_a_send_to_a_subscribed_room_of_an_archived_project_is_refused(world):
    room = world["public"]
    communicator = await hello(world["tokens"]["member"])
    await subscribe(communicator, room.id)
    await database_sync_to_async(lambda: type(room.project).objects.filter(pk=room.project_id).update(archived=True))()
    await send(communicator, {"type": "message.send", "room": room.id, "body": "late", "client_id": "z"})
    error, _ = await recv_until(communicator, "error")
    assert error["code"] == "archived" and error["ref"] == "z"
    assert await database_sync_to_async(Room.objects.filter(pk=room.id, last_message_seq=0).exists)()
    await communicator.disconnect()


async def test_a_group_is_counted_against_the_message_limit_in_order(chat_world, settings):
    """The group's rate-limit counts (one round trip for the group) refuse a sender's sends past the limit, in order."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "message": "2/3600"}
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    writer = ThreadBatcher(write_group, slots=1, max_group=200)
    sends = [Send(user=member, room_id=room.id, body=f"m{i}", client_id=f"l{i}") for i in range(3)]
    sends.append(Send(user=owner, room_id=room.id, body="other", client_id="o"))
    results = await asyncio.gather(*(writer.submit(s) for s in sends), return_exceptions=True)
    assert writer.groups == 1
    assert [type(r).__name__ for r in results] == ["dict", "dict", "RateLimited", "dict"]
    assert [r["seq"] for r in results if isinstance(r, dict)] == [1, 2, 3]
