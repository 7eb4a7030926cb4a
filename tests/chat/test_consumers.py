"""The chat WebSocket against the real router, the Redis channel layer and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat.models import Message
from chat.services import messages as message_services
from chatsite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(token: str | None = None, *, headers: list | None = None) -> WebsocketCommunicator:
    hdrs = list(headers or [])
    if token:
        hdrs.append((b"authorization", f"Bearer {token}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/", headers=hdrs)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


_pending: dict[int, list[dict[str, Any]]] = {}


EPHEMERAL = ("presence", "typing")


async def recv(communicator: WebsocketCommunicator, timeout: float = 5, *, skip: tuple = EPHEMERAL) -> dict[str, Any]:
    """The next event; a batched frame (a JSON array) yields its events one by one.

    Ephemeral events (presence, typing) are skipped unless ``skip`` says otherwise.
    """
    queue = _pending.setdefault(id(communicator), [])
    while True:
        if not queue:
            frame = orjson.loads(await communicator.receive_from(timeout=timeout))
            queue.extend(frame if isinstance(frame, list) else [frame])
        event = queue.pop(0)
        if event["type"] not in skip:
            return event


async def recv_until(communicator: WebsocketCommunicator, frame_type: str, timeout: float = 5) -> tuple[dict, list[dict]]:
    """Frames up to and including the first of ``frame_type``; returns (that frame, the ones before)."""
    before = []
    while True:
        frame = await recv(communicator, timeout)
        if frame["type"] == frame_type:
            return frame, before
        before.append(frame)


async def hello(token: str) -> WebsocketCommunicator:
    communicator = await connect(token)
    assert (await recv(communicator))["type"] == "hello"
    return communicator


async def subscribe(communicator, room_id: int, last_id: int | None = None) -> tuple[dict, list[dict]]:
    frame: dict[str, Any] = {"type": "subscribe", "room": room_id}
    if last_id is not None:
        frame["last_id"] = last_id
    await communicator.send_to(text_data=orjson.dumps(frame).decode())
    return await recv_until(communicator, "subscribed")


async def send(communicator, frame: dict) -> None:
    await communicator.send_to(text_data=orjson.dumps(frame).decode())


async def test_anonymous_socket_is_closed_with_4401():
    communicator = WebsocketCommunicator(application, "/ws/", headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    connected, _ = await communicator.connect()
    assert connected
    output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4401}
    await communicator.disconnect()


async def test_bad_token_without_origin_is_refused():
    communicator = WebsocketCommunicator(application, "/ws/", headers=[(b"authorization", b"Bearer nope")])
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_session_cookie_needs_an_allowed_origin(world):
    client = Client()
    await database_sync_to_async(client.force_login)(world["member"])
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    bad = WebsocketCommunicator(application, "/ws/", headers=[(b"cookie", cookie), (b"origin", b"http://evil.example"), (b"host", b"127.0.0.1")])
    connected, _ = await bad.connect()
    assert not connected
    await bad.disconnect()

    good = WebsocketCommunicator(application, "/ws/", headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    connected, _ = await good.connect()
    assert connected
    frame = await recv(good)
    assert frame["type"] == "hello" and frame["user"]["username"] == "member"
    await good.disconnect()


async def test_send_ack_and_delivery_to_a_second_client(world):
    room = world["public"]
    alice = await hello(world["tokens"]["member"])
    bob = await hello(world["tokens"]["owner"])
    await subscribe(alice, room.id)
    await subscribe(bob, room.id)

    await send(alice, {"type": "message.send", "room": room.id, "body": "hello bob", "client_id": "a-1"})
    ack, _ = await recv_until(alice, "message.ack")
    assert ack["client_id"] == "a-1" and ack["duplicate"] is False and ack["seq"] == 1
    stored = await database_sync_to_async(Message.objects.get)(pk=ack["id"])
    assert stored.body == "hello bob"

    event = await recv(bob)
    assert event["type"] == "message.new"
    assert event["message"]["id"] == ack["id"] and event["message"]["body"] == "hello bob"
    assert event["message"]["author"]["username"] == "member"
    # the sender's other tabs see it too
    own = await recv(alice)
    assert own["type"] == "message.new" and own["message"]["id"] == ack["id"]
    await alice.disconnect()
    await bob.disconnect()


async def test_duplicate_client_id_returns_original_ack(world):
    room = world["public"]
    alice = await hello(world["tokens"]["member"])
    await send(alice, {"type": "message.send", "room": room.id, "body": "once", "client_id": "dup"})
    first, _ = await recv_until(alice, "message.ack")
    await send(alice, {"type": "message.send", "room": room.id, "body": "once", "client_id": "dup"})
    second, _ = await recv_until(alice, "message.ack")
    assert second["id"] == first["id"] and second["duplicate"] is True
    assert await database_sync_to_async(Message.objects.filter(client_id="dup").count)() == 1
    await alice.disconnect()


async def test_non_member_cannot_subscribe_or_send(world):
    outsider = await hello(world["tokens"]["outsider"])
    await send(outsider, {"type": "subscribe", "room": world["public"].id, "ref": "s1"})
    error = await recv(outsider)
    assert error == {"type": "error", "code": "not_found", "message": "Room not found.", "ref": "s1"}
    await send(outsider, {"type": "message.send", "room": world["public"].id, "body": "x", "client_id": "o-1"})
    error = await recv(outsider)
    assert error["type"] == "error" and error["code"] == "not_found" and error["ref"] == "o-1"
    assert not await database_sync_to_async(Message.objects.exists)()
    await outsider.disconnect()

    # a project member outside a private room: same answer as a room that does not exist
    member = await hello(world["tokens"]["member"])
    await send(member, {"type": "subscribe", "room": world["private"].id})
    assert (await recv(member))["code"] == "not_found"
    await send(member, {"type": "subscribe", "room": 987654321})
    assert (await recv(member))["code"] == "not_found"
    await member.disconnect()


async def test_private_room_events_reach_only_its_members(world):
    private = world["private"]
    insider = await hello(world["tokens"]["insider"])
    await subscribe(insider, private.id)
    await send(insider, {"type": "message.send", "room": private.id, "body": "secret", "client_id": "p-1"})
    ack, _ = await recv_until(insider, "message.ack")
    event = await recv(insider)
    assert event["message"]["id"] == ack["id"]
    await insider.disconnect()


async def test_resume_after_disconnect_delivers_exactly_the_missed_messages(world):
    room, member, owner = world["public"], world["member"], world["owner"]
    bob = await hello(world["tokens"]["owner"])
    await subscribe(bob, room.id)
    alice = await hello(world["tokens"]["member"])
    for i in range(3):
        await send(alice, {"type": "message.send", "room": room.id, "body": f"seen {i}", "client_id": f"s{i}"})
        await recv_until(alice, "message.ack")
    seen = [(await recv(bob))["message"]["id"] for _ in range(3)]
    await bob.disconnect()

    missed = []
    for i in range(5):
        await send(alice, {"type": "message.send", "room": room.id, "body": f"missed {i}", "client_id": f"m{i}"})
        ack, _ = await recv_until(alice, "message.ack")
        missed.append(ack["id"])

    bob = await hello(world["tokens"]["owner"])
    subscribed, backlog = await subscribe(bob, room.id, last_id=seen[-1])
    assert [f["message"]["id"] for f in backlog] == missed
    assert subscribed["resumed"] == 5
    # live delivery continues after the backlog, without repeats
    await send(alice, {"type": "message.send", "room": room.id, "body": "live", "client_id": "live"})
    ack, _ = await recv_until(alice, "message.ack")
    event = await recv(bob)
    assert event["message"]["id"] == ack["id"]
    assert all(e["type"] in EPHEMERAL for e in _pending.get(id(bob), []))
    assert await bob.receive_nothing(timeout=0.3)
    await alice.disconnect()
    await bob.disconnect()


async def test_resume_beyond_the_cap_asks_for_resync(world, settings):
    settings.CHAT_RESUME_MAX_MESSAGES = 3
    room = world["public"]
    for i in range(5):
        await database_sync_to_async(message_services.message_create)(room=room, author=world["member"], body=f"m{i}")
    bob = await hello(world["tokens"]["owner"])
    subscribed, before = await subscribe(bob, room.id, last_id=0)
    assert [f["type"] for f in before] == ["resync"]
    assert before[0]["reason"] == "too_many_missed" and before[0]["room"] == room.id
    assert subscribed["resumed"] == 0 and subscribed["seq"] == 5
    await bob.disconnect()


async def test_events_for_edits_and_deletes(world):
    room = world["public"]
    bob = await hello(world["tokens"]["owner"])
    await subscribe(bob, room.id)
    message = await database_sync_to_async(message_services.message_create)(room=room, author=world["member"], body="typo")
    assert (await recv(bob))["type"] == "message.new"

    from chat.selectors import history as history_selectors

    def edit_then_delete():
        loaded = history_selectors.message_get_for_user(user=world["member"], message_id=message[0].id)
        message_services.message_edit(message=loaded, by=world["member"], body="fixed")
        message_services.message_delete(message=loaded, by=world["member"])

    await database_sync_to_async(edit_then_delete)()
    edited = await recv(bob)
    assert edited["type"] == "message.edited" and edited["message"]["body"] == "fixed"
    assert edited["seq"] == 2 and edited["message"]["seq"] == 1  # the edit's place in the room, the message's
    deleted = await recv(bob)
    assert deleted == {"type": "message.deleted", "id": message[0].id, "room": room.id, "seq": 3, "thread_root": None}
    await bob.disconnect()


async def test_gap_in_live_events_is_filled_from_the_database(world):
    """A publish that is lost or overtaken must not leave a hole on the client."""
    room = world["public"]
    bob = await hello(world["tokens"]["owner"])
    await subscribe(bob, room.id)
    from chat import events

    from channels.layers import get_channel_layer

    first, _ = await database_sync_to_async(message_services.message_create)(room=room, author=world["member"], body="first")
    assert (await recv(bob))["message"]["id"] == first.id
    # Rows 2 and 3 are committed, but only the event of 3 is ever published.
    second = await database_sync_to_async(Message.objects.create)(
        room=room, author=world["member"], body="second", seq=2
    )
    third = await database_sync_to_async(Message.objects.create)(room=room, author=world["member"], body="third", seq=3)
    await get_channel_layer().group_send(
        events.room_group(room.id),
        events.room_event_message(
            room_id=room.id, kind="message.new", payload={"message": {"id": third.id, "seq": 3}}, seq=3
        ),
    )
    filled = await recv(bob)
    assert filled["type"] == "message.new" and filled["message"]["id"] == second.id
    live = await recv(bob)
    assert live["message"]["id"] == third.id
    await bob.disconnect()


async def test_read_marker_over_the_socket(world):
    room = world["public"]
    message, _ = await database_sync_to_async(message_services.message_create)(room=room, author=world["owner"], body="x")
    alice = await hello(world["tokens"]["member"])
    await send(alice, {"type": "read", "room": room.id, "last_id": message.id})
    ack = await recv(alice)
    assert ack == {"type": "read.ack", "room": room.id, "last_id": message.id}
    await alice.disconnect()


@pytest.mark.parametrize(
    "raw,code",
    [
        ("not json", "bad_json"),
        ("[1,2]", "bad_frame"),
        ('{"no":"type"}', "bad_frame"),
        ('{"type":"nope"}', "unknown_type"),
        ('{"type":"subscribe","room":"1"}', "invalid_field"),
        ('{"type":"subscribe","room":-1}', "invalid_field"),
        ('{"type":"subscribe","room":true}', "invalid_field"),
        ('{"type":"message.send","room":1,"body":"x"}', "invalid_client_id"),
        ('{"type":"message.send","room":1,"body":"x","client_id":5}', "invalid_client_id"),
    ],
)
async def test_bad_frames_get_error_frames_and_the_socket_stays_open(world, raw, code):
    alice = await hello(world["tokens"]["member"])
    await alice.send_to(text_data=raw)
    frame = await recv(alice)
    assert frame["type"] == "error" and frame["code"] == code
    await send(alice, {"type": "ping", "ref": 7})
    assert await recv(alice) == {"type": "pong", "ref": 7}
    await alice.disconnect()


async def test_bad_bodies_get_error_frames(world):
    alice = await hello(world["tokens"]["member"])
    room = world["public"].id
    for body, code in [("", "empty_body"), ("x" * 10_001, "body_too_long"), (["list"], "invalid_body"), ("a\x00b", "invalid_body")]:
        await send(alice, {"type": "message.send", "room": room, "body": body, "client_id": code})
        frame = await recv(alice)
        assert frame["code"] == code and frame["ref"] == code
    await alice.send_to(bytes_data=b"\x00\x01")
    assert (await recv(alice))["code"] == "binary_not_supported"
    assert not await database_sync_to_async(Message.objects.exists)()
    await alice.disconnect()


async def test_every_client_sees_increasing_ids_under_concurrent_senders(world, make_user):
    room = world["public"]
    watchers = [await hello(world["tokens"]["owner"]) for _ in range(3)]
    for watcher in watchers:
        await subscribe(watcher, room.id)
    senders = [await hello(world["tokens"][name]) for name in ("member", "admin")]

    async def burst(communicator, prefix):
        for i in range(15):
            await send(communicator, {"type": "message.send", "room": room.id, "body": f"{prefix}{i}", "client_id": f"{prefix}{i}"})
        for _ in range(15):
            await recv_until(communicator, "message.ack")

    await asyncio.gather(*(burst(c, p) for c, p in zip(senders, ("m", "a"))))
    expected = list(await database_sync_to_async(lambda: list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True)))())
    assert len(expected) == 30
    for watcher in watchers:
        got = [(await recv(watcher))["message"]["id"] for _ in range(30)]
        assert got == expected
        await watcher.disconnect()
    for communicator in senders:
        await communicator.disconnect()


async def test_typing_is_relayed_to_others_and_rate_limited(world):
    room = world["public"]
    bob = await hello(world["tokens"]["owner"])
    await subscribe(bob, room.id)
    alice = await hello(world["tokens"]["member"])
    await send(alice, {"type": "typing", "room": room.id})
    assert (await recv(alice))["code"] == "not_subscribed"
    await subscribe(alice, room.id)
    await send(alice, {"type": "typing", "room": room.id})
    await send(alice, {"type": "typing", "room": room.id})  # within the interval: coalesced
    await send(alice, {"type": "ping", "ref": "p"})
    assert (await recv(alice))["type"] == "pong"
    seen = []
    while True:
        event = await recv(bob, skip=())
        seen.append(event)
        if event["type"] == "typing":
            break
    assert event == {"type": "typing", "room": room.id, "user": {"id": world["member"].id, "username": "member", "display_name": "member"}}
    # the message that follows arrives; no second typing event before it
    await send(alice, {"type": "message.send", "room": room.id, "body": "typed", "client_id": "t1"})
    nxt = await recv(bob, skip=("presence",))
    assert nxt["type"] == "message.new"
    await alice.disconnect()
    await bob.disconnect()


async def test_presence_online_and_offline(world, settings):
    settings.CHAT_PRESENCE_INTERVAL = 0.1
    room = world["public"]
    owner, member = world["owner"].id, world["member"].id
    bob = await hello(world["tokens"]["owner"])
    subscribed, _ = await subscribe(bob, room.id)
    assert subscribed["online"] == [owner] and subscribed["online_count"] == 1
    event = await recv(bob, skip=())
    assert event == {"type": "presence", "room": room.id, "online_count": 1, "joined": [owner], "left": [], "more": False}
    alice = await hello(world["tokens"]["member"])
    subscribed, _ = await subscribe(alice, room.id)
    assert sorted(subscribed["online"]) == sorted([owner, member]) and subscribed["online_count"] == 2
    event = await recv(bob, skip=())
    assert event["type"] == "presence" and event["joined"] == [member] and event["online_count"] == 2
    # A second socket of a user already there changes nothing anyone hears.
    alice2 = await hello(world["tokens"]["member"])
    await subscribe(alice2, room.id)
    await alice2.disconnect()
    await alice.disconnect()
    event = await recv(bob, skip=())
    assert event["type"] == "presence" and event["left"] == [member] and event["joined"] == []
    assert event["online_count"] == 1
    await bob.disconnect()


async def test_presence_query_answers_for_the_users_asked_about(world):
    room = world["public"]
    bob = await hello(world["tokens"]["owner"])
    await subscribe(bob, room.id)
    await bob.send_json_to({"type": "presence", "room": room.id, "users": [world["owner"].id, world["member"].id]})
    state = await recv(bob)
    assert state == {"type": "presence.state", "room": room.id, "online_count": 1, "online": [world["owner"].id]}
    for bad in ([1] * 101, "3", [True], [-1]):
        await bob.send_json_to({"type": "presence", "room": room.id, "users": bad})
        error = await recv(bob)
        assert error["type"] == "error" and error["code"] == "invalid_users"
    await bob.send_json_to({"type": "presence", "room": world["private"].id, "users": [1]})
    error = await recv(bob)
    assert error["type"] == "error" and error["code"] == "not_subscribed"
    await bob.disconnect()


async def test_slow_consumer_is_closed_with_4408_and_recovers_everything_by_resume(world, settings):
    room = world["public"]
    settings.CHAT_WS_SEND_BUFFER_BYTES = 1500  # about five message.new events
    settings.CHAT_WS_BATCH_WINDOW = 0.5  # the writer holds events long enough to pile up
    slow = await hello(world["tokens"]["owner"])
    subscribed, _ = await subscribe(slow, room.id)
    ids = []
    for i in range(12):
        message, _ = await database_sync_to_async(message_services.message_create)(room=room, author=world["member"], body=f"burst {i}")
        ids.append(message.id)
    output = await slow.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4408}
    await slow.disconnect()

    settings.CHAT_WS_SEND_BUFFER_BYTES = 1024 * 1024
    settings.CHAT_WS_BATCH_WINDOW = 0.002
    again = await hello(world["tokens"]["owner"])
    _, backlog = await subscribe(again, room.id, last_id=0)
    assert [f["message"]["id"] for f in backlog] == ids
    await again.disconnect()


async def test_resume_backlog_is_batched_into_few_frames(world):
    room = world["public"]
    for i in range(30):
        await database_sync_to_async(message_services.message_create)(room=room, author=world["member"], body=f"b{i}")
    bob = await hello(world["tokens"]["owner"])
    await send(bob, {"type": "subscribe", "room": room.id, "last_id": 0})
    frame = orjson.loads(await bob.receive_from(timeout=5))
    assert isinstance(frame, list) and len(frame) >= 30
    assert [e["message"]["seq"] for e in frame[:30]] == list(range(1, 31))
    await bob.disconnect()


async def test_reconnect_storm_every_client_ends_with_every_message_once(world, settings):
    """200 clients drop and reconnect while messages flow; each ends with every message exactly once."""
    settings.CHAT_WS_MAX_SOCKETS_PER_USER = 0  # one user holds all 200 sockets here
    room = world["public"]
    token = world["tokens"]["owner"]
    clients = []
    for _ in range(200):
        c = await hello(token)
        await subscribe(c, room.id)
        clients.append(c)
    seen: list[list[int]] = [[] for _ in clients]
    sender = await hello(world["tokens"]["member"])

    async def burst(prefix: str, n: int) -> None:
        for i in range(n):
            await send(sender, {"type": "message.send", "room": room.id, "body": f"{prefix}{i}", "client_id": f"{prefix}{i}"})
        for _ in range(n):
            await recv_until(sender, "message.ack")

    await burst("x", 10)
    for idx, c in enumerate(clients):
        while len(seen[idx]) < 10:
            seen[idx].append((await recv(c))["message"]["id"])
    # every other client drops; messages flow while they are away
    for idx in range(0, 200, 2):
        await clients[idx].disconnect()
    await burst("y", 15)
    for idx in range(0, 200, 2):
        c = await hello(token)
        clients[idx] = c
        _, backlog = await subscribe(c, room.id, last_id=seen[idx][-1])
        seen[idx].extend(f["message"]["id"] for f in backlog if f["type"] == "message.new")
    await burst("z", 5)
    for idx, c in enumerate(clients):
        while len(seen[idx]) < 30:
            seen[idx].append((await recv(c))["message"]["id"])
    expected = list(await database_sync_to_async(lambda: list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True)))())
    assert len(expected) == 30
    for ids in seen:
        assert ids == expected
    for c in clients + [sender]:
        await c.disconnect()


async def test_client_frames_take_no_hop_to_the_shared_sync_thread(world, monkeypatch):
    """Channels' dispatch runs close_old_connections on the one shared sync thread before
    every message; ChatConsumer's database work never uses that thread, so it skips it."""
    import channels.consumer

    hops = []
    original = channels.consumer.aclose_old_connections

    async def counted() -> None:
        hops.append(1)
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    alice = await hello(world["tokens"]["member"])
    room = world["public"].id
    await subscribe(alice, room)
    for ref in range(5):
        await send(alice, {"type": "ping", "ref": ref})
        assert await recv(alice) == {"type": "pong", "ref": ref}
    await send(alice, {"type": "message.send", "room": room, "body": "no hop", "client_id": "nh-1"})
    assert (await recv_until(alice, "message.new"))[0]["message"]["body"] == "no hop"
    await alice.disconnect()
    assert hops == []
