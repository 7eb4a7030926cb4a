"""Access and credentials that end while a socket is open: the socket stops at once.

In one process, through the real router, the Redis channel layer and
PostgreSQL. tests/security/test_access_ends_across_processes.py makes the
same changes through another server process.
"""

from __future__ import annotations

import asyncio
import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client

from chat.models import ApiToken, RoomMember
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from chatsite.asgi import application
from perf import cache as perf_cache
from projects import services as project_services
from tests.chat.test_consumers import connect, hello, recv, recv_until, send, subscribe

pytestmark = pytest.mark.django_db(transaction=True)

# A liveness bound, far below WS_AUTH_RECHECK (300 s): a socket that acts within it acted on
# the change's event, not on its periodic check. How fast it acts is for a benchmark to show.
REACT_WITHIN = 10.0


async def post(room, author, body: str):
    message, _ = await database_sync_to_async(message_services.message_create)(room=room, author=author, body=body)
    return message


async def nothing_more_of(communicator: WebsocketCommunicator, room_id: int, *, wait: float = 1.0) -> list[dict]:
    """Every event of ``room_id`` the socket receives within ``wait`` seconds (there should be none).

    receive_nothing, not a receive timeout: asgiref cancels the application when a receive times out.
    """
    from tests.chat.test_consumers import _pending

    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (left := deadline - loop.time()) > 0:
        if not _pending.get(id(communicator)) and await communicator.receive_nothing(timeout=min(0.1, left)):
            continue
        event = await recv(communicator, skip=())
        if event.get("room") == room_id or event.get("message", {}).get("room") == room_id:
            seen.append(event)
    return seen


async def revoked_error(communicator: WebsocketCommunicator, room_id: int) -> dict:
    frame, _ = await recv_until(communicator, "error", timeout=REACT_WITHIN)
    assert frame["code"] == "access_revoked" and frame["ref"] == room_id, frame
    return frame


async def closed_with(communicator: WebsocketCommunicator, code: int) -> None:
    """The socket is closed with ``code`` within REACT_WITHIN (events before the close are skipped)."""
    while True:
        output = await communicator.receive_output(timeout=REACT_WITHIN)
        if output["type"] == "websocket.close":
            assert output.get("code") == code, output
            return


# --- access ends -----------------------------------------------------------------


async def test_a_removed_project_member_hears_nothing_more_and_cannot_type_or_send(world):
    room, member = world["public"], world["member"]
    sock = await hello(world["tokens"]["member"])
    await subscribe(sock, room.id)
    await post(room, world["owner"], "before")
    assert (await recv(sock))["message"]["body"] == "before"

    await database_sync_to_async(project_services.membership_remove)(project=world["project"], user=member, by=world["owner"])
    await revoked_error(sock, room.id)

    await post(room, world["owner"], "after")
    edited = await post(room, world["owner"], "to be edited")
    await database_sync_to_async(message_services.message_edit)(message=edited, by=world["owner"], body="edited")
    assert await nothing_more_of(sock, room.id) == []

    await send(sock, {"type": "typing", "room": room.id})
    assert (await recv(sock))["code"] == "not_subscribed"
    await send(sock, {"type": "message.send", "room": room.id, "body": "still here?", "client_id": "late"})
    error = await recv(sock)
    assert error["type"] == "error" and error["code"] == "not_found" and error["ref"] == "late"
    await sock.disconnect()


async def test_typing_of_a_removed_member_no_longer_reaches_the_room(world):
    room = world["public"]
    removed = await hello(world["tokens"]["member"])
    watcher = await hello(world["tokens"]["owner"])
    await subscribe(removed, room.id)
    await subscribe(watcher, room.id)
    await database_sync_to_async(project_services.membership_remove)(
        project=world["project"], user=world["member"], by=world["owner"]
    )
    await revoked_error(removed, room.id)
    await send(removed, {"type": "typing", "room": room.id})
    assert (await recv(removed))["code"] == "not_subscribed"
    typing = [e for e in await nothing_more_of(watcher, room.id, wait=0.5) if e["type"] == "typing"]
    assert typing == []
    await removed.disconnect()
    await watcher.disconnect()


async def test_a_removed_private_room_member_hears_nothing_more(world):
    room = world["private"]
    await database_sync_to_async(room_services.room_member_add)(room=room, username="member", by=world["insider"])
    sock = await hello(world["tokens"]["member"])
    await subscribe(sock, room.id)
    public = world["public"]
    await subscribe(sock, public.id)

    await database_sync_to_async(room_services.room_member_remove)(room=room, user=world["member"], by=world["member"])
    await revoked_error(sock, room.id)
    await post(room, world["insider"], "secret after")
    assert await nothing_more_of(sock, room.id) == []
    # the public room is untouched
    await post(public, world["owner"], "public after")
    event = await recv(sock)
    assert event["type"] == "message.new" and event["message"]["body"] == "public after"
    await sock.disconnect()


async def test_a_room_made_private_drops_the_readers_who_are_not_its_members(world):
    """RoomMember is membership only: reading a public room (a read marker) does not keep it after the switch."""
    room = world["public"]
    reader = await hello(world["tokens"]["member"])
    await subscribe(reader, room.id)
    await send(reader, {"type": "read", "room": room.id, "last_id": 0})
    await recv_until(reader, "read.ack")
    creator = await hello(world["tokens"]["owner"])  # created the room: a member
    await subscribe(creator, room.id)

    def make_private() -> None:
        room.is_private = True
        room.save()  # as the admin's change form does

    await database_sync_to_async(make_private)()
    await revoked_error(reader, room.id)
    await post(room, world["owner"], "members only")
    assert await nothing_more_of(reader, room.id) == []
    event = await recv(creator)
    assert event["type"] == "message.new" and event["message"]["body"] == "members only"
    await reader.disconnect()
    await creator.disconnect()


async def test_a_resubscribe_that_fails_ends_the_old_subscription(world):
    """Access removed without an event (raw SQL): the re-subscribe's not_found drops the subscription."""
    room = world["private"]
    await database_sync_to_async(room_services.room_member_add)(room=room, username="member", by=world["insider"])
    sock = await hello(world["tokens"]["member"])
    await subscribe(sock, room.id)

    def remove_quietly() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {RoomMember._meta.db_table} WHERE room_id = %s AND user_id = %s", [room.id, world["member"].id]
            )
        perf_cache.invalidate_pattern("room_access:*")

    await database_sync_to_async(remove_quietly)()
    await send(sock, {"type": "subscribe", "room": room.id, "ref": "again"})
    error, _ = await recv_until(sock, "error")
    assert error["code"] == "not_found"
    await post(room, world["insider"], "after the failed resubscribe")
    assert await nothing_more_of(sock, room.id) == []
    await sock.disconnect()


async def test_an_access_check_keeps_rooms_still_readable_and_loses_nothing(world):
    """A project change that leaves access as it was: held events arrive, in order, none lost."""
    room = world["public"]
    sock = await hello(world["tokens"]["member"])
    await subscribe(sock, room.id)
    # another member leaves: a check for them, not for this socket's user
    await database_sync_to_async(project_services.membership_remove)(
        project=world["project"], user=world["admin"], by=world["admin"]
    )
    bodies = [f"m{i}" for i in range(5)]
    for body in bodies:
        await post(room, world["owner"], body)
    got = [(await recv(sock))["message"]["body"] for _ in bodies]
    assert got == bodies
    await sock.disconnect()


# --- credentials end -------------------------------------------------------------


async def test_a_deleted_token_closes_its_socket_with_4401(world):
    room = world["public"]
    sock = await hello(world["tokens"]["member"])
    other = await hello(world["tokens"]["owner"])
    await subscribe(sock, room.id)
    await database_sync_to_async(lambda: ApiToken.objects.filter(user=world["member"]).delete())()
    await closed_with(sock, 4401)
    # nothing the closed socket sends is stored
    count = await database_sync_to_async(lambda: room.messages.count())()
    await sock.send_to(text_data=orjson.dumps({"type": "message.send", "room": room.id, "body": "x", "client_id": "c"}).decode())
    await asyncio.sleep(0.2)
    assert await database_sync_to_async(lambda: room.messages.count())() == count
    # another user's socket is untouched
    await send(other, {"type": "ping", "ref": 1})
    assert (await recv_until(other, "pong"))[0]["ref"] == 1
    await other.disconnect()


async def test_a_deactivated_user_loses_every_socket(world):
    member = world["member"]
    client = Client()
    await database_sync_to_async(client.force_login)(member)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    by_token = await hello(world["tokens"]["member"])
    by_session = await connect(headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    assert (await recv(by_session))["type"] == "hello"

    def deactivate() -> None:
        member.is_active = False
        member.save()

    await database_sync_to_async(deactivate)()
    await closed_with(by_token, 4401)
    await closed_with(by_session, 4401)


async def test_logging_out_closes_that_sessions_socket_only(world):
    member = world["member"]
    leaving, staying = Client(), Client()
    for client in (leaving, staying):
        await database_sync_to_async(client.force_login)(member)
    socks = []
    for client in (leaving, staying):
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        sock = await connect(headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
        assert (await recv(sock))["type"] == "hello"
        socks.append(sock)
    response = await database_sync_to_async(leaving.post)("/logout/")
    assert response.status_code == 302
    await closed_with(socks[0], 4401)
    await send(socks[1], {"type": "ping", "ref": "still"})
    assert (await recv_until(socks[1], "pong"))[0]["ref"] == "still"
    await socks[1].disconnect()


async def test_a_password_change_ends_the_other_sessions_sockets(world):
    member = world["member"]
    client = Client()
    await database_sync_to_async(client.force_login)(member)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    sock = await connect(headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    assert (await recv(sock))["type"] == "hello"

    def new_password() -> None:
        member.set_password("a-whole-new-password")
        member.save()

    await database_sync_to_async(new_password)()
    await closed_with(sock, 4401)


async def test_a_session_that_ends_without_an_event_is_noticed_by_the_periodic_check(world, settings):
    """Its row deleted behind the app's back (as an expiry would be): the hub's round of checks closes the socket."""
    settings.CHAT_PRESENCE_TTL = 3  # the hub's round every second
    settings.CHAT_WS_AUTH_RECHECK = 0
    client = Client()
    await database_sync_to_async(client.force_login)(world["member"])
    key = client.cookies["sessionid"].value
    sock = await connect(headers=[(b"cookie", f"sessionid={key}".encode()), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    assert (await recv(sock))["type"] == "hello"

    def forget_session() -> None:
        from importlib import import_module

        from django.conf import settings as django_settings

        import_module(django_settings.SESSION_ENGINE).SessionStore(session_key=key).delete()

    await database_sync_to_async(forget_session)()
    output = await sock.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4401}


async def test_a_display_name_change_keeps_the_socket(world):
    sock = await hello(world["tokens"]["member"])
    await database_sync_to_async(account_services.user_update_profile)(user=world["member"], first_name="Mem")
    await asyncio.sleep(0.3)  # the check ran; the credentials are still good
    await send(sock, {"type": "ping", "ref": "ok"})
    assert (await recv_until(sock, "pong"))[0]["ref"] == "ok"
    await sock.disconnect()


# --- per-user resources ----------------------------------------------------------


async def test_sockets_per_user_are_capped(world, settings):
    settings.CHAT_WS_MAX_SOCKETS_PER_USER = 3
    open_ = [await hello(world["tokens"]["member"]) for _ in range(3)]
    extra = await connect(world["tokens"]["member"])
    output = await extra.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4429}
    # another user is not affected, and a closed socket frees its place
    other = await hello(world["tokens"]["owner"])
    await open_[0].disconnect()
    again = await hello(world["tokens"]["member"])
    for sock in [*open_[1:], other, again]:
        await sock.disconnect()


async def test_subscribes_per_socket_are_rate_limited(world, settings):
    settings.CHAT_WS_SUBSCRIBE_RATE = "5/60"
    room = world["public"]
    sock = await hello(world["tokens"]["member"])
    for _ in range(5):
        await subscribe(sock, room.id, last_id=0)
    await send(sock, {"type": "subscribe", "room": room.id, "last_id": 0, "ref": "sixth"})
    error, _ = await recv_until(sock, "error")
    assert error["code"] == "rate_limited" and error["retryable"] and error["retry_after"] >= 1 and error["ref"] == "sixth"
    await sock.disconnect()


async def test_subscribes_per_user_are_rate_limited_across_sockets(world, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "subscribe": "4/60"}
    room = world["public"]
    first, second = await hello(world["tokens"]["member"]), await hello(world["tokens"]["member"])
    for sock in (first, second):
        await subscribe(sock, room.id)
        await subscribe(sock, room.id)
    await send(first, {"type": "subscribe", "room": room.id, "ref": "fifth"})
    error, _ = await recv_until(first, "error")
    assert error["code"] == "rate_limited" and error["ref"] == "fifth"
    for sock in (first, second):
        await sock.disconnect()


async def test_unknown_rooms_leave_only_short_lived_cache_entries(world, settings):
    import redis

    from chatsite import env

    sock = await hello(world["tokens"]["member"])
    for room_id in range(900_000, 900_020):
        await send(sock, {"type": "subscribe", "room": room_id})
        error, _ = await recv_until(sock, "error")
        assert error["code"] == "not_found"
    client = redis.Redis.from_url(env.REDIS_URL)
    try:
        keys = [k for k in client.scan_iter(match="*room_k:9000*")]
        assert keys, "the misses are cached (briefly)"
        assert all(0 < client.ttl(k) <= env.CACHE_TTL_MISSING for k in keys)
    finally:
        client.close()
    await sock.disconnect()


async def test_a_resume_too_large_for_the_send_buffer_is_a_resync_not_a_close(world, settings):
    settings.CHAT_WS_SEND_BUFFER_BYTES = 4000
    room = world["public"]
    for i in range(10):
        await post(room, world["owner"], "x" * 500)
    sock = await hello(world["tokens"]["member"])
    subscribed, before = await subscribe(sock, room.id, last_id=0)
    assert [f["type"] for f in before] == ["resync"] and subscribed["resumed"] == 0
    await send(sock, {"type": "ping", "ref": "alive"})
    assert (await recv_until(sock, "pong"))[0]["ref"] == "alive"
    await sock.disconnect()


# --- message bodies ------------------------------------------------------------------

INVISIBLE = ["\u200b", "\ufeff\ufeff", "\u2060 \u2060", "\u3164", "\u200b\u200d\u202e", "\u115f\u1160", " \u00a0\t"]


@pytest.mark.parametrize("body", INVISIBLE)
async def test_bodies_that_draw_nothing_are_empty(world, body: str):
    sock = await hello(world["tokens"]["member"])
    await send(sock, {"type": "message.send", "room": world["public"].id, "body": body, "client_id": "inv"})
    error, _ = await recv_until(sock, "error")
    assert error["code"] == "empty_body"
    await sock.disconnect()
