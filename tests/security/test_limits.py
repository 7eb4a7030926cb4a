"""Size limits: message bodies, WebSocket frames and messages, request bodies, page sizes."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import websockets
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import Message, Room
from chatsite.asgi import application
from projects.models import Membership, Project
from tests.security.conftest import World, session_api_client
from tests.wsclient import ChatSocket

User = get_user_model()

API = "/api/v1"
MAX_BODY = 10_000
ONE_MIB = 1024 * 1024


def bearer(world: World, role: str = "member") -> Client:
    return Client(headers={"Authorization": f"Bearer {world.tokens[role]}"})


def post_json(client: Client, path: str, payload: Any, headers: dict | None = None) -> Any:
    return client.post(f"{API}{path}", data=orjson.dumps(payload), content_type="application/json", headers=headers or {})


# --- Message bodies ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("x" * MAX_BODY, 201, None),
        ("😀" * MAX_BODY, 201, None),  # characters, not bytes: 40,000 bytes of UTF-8
        ("x" * (MAX_BODY + 1), 400, "body_too_long"),
        ("x" * (10 * MAX_BODY), 400, "body_too_long"),
    ],
    ids=["10000", "10000-emoji", "10001", "100000"],
)
def test_api_message_body_limit(world: World, body: str, status: int, code: str | None) -> None:
    response = post_json(bearer(world), f"/rooms/{world.public.id}/messages", {"body": body})
    assert response.status_code == status, response.content
    if code:
        assert response.json()["code"] == code
        assert not Message.objects.filter(body=body).exists()
    else:
        assert Message.objects.get(pk=response.json()["id"]).body == body


@pytest.mark.django_db
def test_api_edit_is_held_to_the_same_limit(world: World) -> None:
    client = bearer(world, "admin")
    message = world.public_messages[0]
    too_long = client.patch(f"{API}/messages/{message.id}", data=orjson.dumps({"body": "y" * (MAX_BODY + 1)}), content_type="application/json")
    assert too_long.status_code == 400 and too_long.json()["code"] == "body_too_long"
    assert Message.objects.get(pk=message.id).body == message.body
    at_limit = client.patch(f"{API}/messages/{message.id}", data=orjson.dumps({"body": "y" * MAX_BODY}), content_type="application/json")
    assert at_limit.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(("client_id", "status"), [("c" * 64, 201), ("c" * 65, 400)])
def test_api_client_id_limit(world: World, client_id: str, status: int) -> None:
    response = post_json(bearer(world), f"/rooms/{world.public.id}/messages", {"body": "hi", "client_id": client_id})
    assert response.status_code == status
    if status == 400:
        assert response.json()["code"] == "invalid_client_id"


@pytest.mark.django_db(transaction=True)
async def test_websocket_message_body_limit(world: World) -> None:
    communicator = WebsocketCommunicator(application, "/ws/", headers=[(b"authorization", f"Bearer {world.tokens['member']}".encode())])
    connected, _ = await communicator.connect()
    assert connected
    try:
        assert orjson.loads(await communicator.receive_from(timeout=5))["type"] == "hello"
        for body, client_id, expected in [("x" * (MAX_BODY + 1), "long", "error"), ("x" * MAX_BODY, "max", "message.ack")]:
            frame = {"type": "message.send", "room": world.public.id, "body": body, "client_id": client_id}
            await communicator.send_to(text_data=orjson.dumps(frame).decode())
            answer = orjson.loads(await communicator.receive_from(timeout=5))
            assert answer["type"] == expected, answer
            if expected == "error":
                assert answer == {
                    "type": "error",
                    "code": "body_too_long",
                    "message": f"Message body is longer than {MAX_BODY} characters.",
                    "ref": "long",
                }
    finally:
        await communicator.disconnect()


# --- WebSocket frames over 1 MiB against a real server ------------------------


def _padded_send_frame(room_id: int, size: int) -> str:
    """A message.send frame of exactly ``size`` bytes (its body far over the message limit)."""
    frame = {"type": "message.send", "room": room_id, "body": "", "client_id": "huge"}
    overhead = len(orjson.dumps(frame))
    frame["body"] = "x" * (size - overhead)
    text = orjson.dumps(frame).decode()
    assert len(text.encode()) == size
    return text


async def _closed(sock: ChatSocket) -> int:
    """Read until the server ends the connection; the close code it sent, 1006 if it sent none."""
    try:
        for _ in range(100):
            await asyncio.wait_for(sock.ws.recv(), 10)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006
    raise AssertionError("the connection was not ended")


async def _oversized(port: int, token: str, room_id: int, *, fragmented: bool) -> int:
    """Send one message of 1 MiB + 1 byte, whole or in 64 KiB fragments; how the server ended the socket."""
    sock = await ChatSocket.open(port, token)
    text = _padded_send_frame(room_id, ONE_MIB + 1)
    try:
        await sock.ws.send([text[i : i + 65536] for i in range(0, len(text), 65536)] if fragmented else text)
    except websockets.ConnectionClosed:
        pass  # the server may end it while the frame is still going out
    return await _closed(sock)


@pytest.mark.django_db(transaction=True)
def test_a_frame_of_exactly_one_mib_is_answered_and_the_socket_stays_open(world: World, server_port: int) -> None:
    async def scenario() -> None:
        sock = await ChatSocket.open(server_port, world.tokens["member"])
        await sock.ws.send(_padded_send_frame(world.public.id, ONE_MIB))
        error = await sock.recv()
        assert error["type"] == "error" and error["code"] == "body_too_long" and error["ref"] == "huge"
        await sock.send({"type": "ping", "ref": "still-open"})
        assert await sock.recv() == {"type": "pong", "ref": "still-open"}
        await sock.close()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_larger_messages_end_the_connection_and_the_server_carries_on(world: World, server_port: int) -> None:
    token = world.tokens["member"]

    async def scenario() -> None:
        for fragmented in (False, True):
            await _oversized(server_port, token, world.public.id, fragmented=fragmented)
        sock = await ChatSocket.open(server_port, token)
        await sock.send({"type": "ping", "ref": "after"})
        assert await sock.recv() == {"type": "pong", "ref": "after"}
        await sock.close()

    asyncio.run(scenario())
    assert not Message.objects.filter(client_id="huge").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragments"])
def test_larger_messages_are_closed_with_1009(world: World, server_port: int, fragmented: bool) -> None:
    """docs/PROTOCOL.md: "Frames larger than 1 MiB close the socket (1009)".

    Under daphne this needed autobahn's ``failByDrop`` turned off (chatsite.server
    does it for ASGI_SERVER=daphne); uvicorn's websockets protocol closes with
    1009 itself. See docs/SECURITY.md.
    """
    code = asyncio.run(_oversized(server_port, world.tokens["member"], world.public.id, fragmented=fragmented))
    assert code == 1009


# --- Request bodies over 1 MiB --------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
def test_api_request_body_over_one_mib_is_413_json(world: World, auth: str) -> None:
    if auth == "bearer":
        client, headers = bearer(world), {}
    else:
        client, headers = session_api_client(world.user("member"))
    raw = orjson.dumps({"body": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    response = client.post(f"{API}/rooms/{world.public.id}/messages", data=raw, content_type="application/json", headers=headers)
    assert response.status_code == 413
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": "The request body is too large.", "code": "too_large"}
    assert not Message.objects.filter(room=world.public, author=world.user("member")).exists()


@pytest.mark.django_db
def test_page_form_body_over_one_mib_is_400_not_500(world: World) -> None:
    client = Client()
    client.force_login(world.user("member"))
    response = client.post(f"/p/{world.project.slug}/rooms/", {"name": "big", "topic": "t" * (ONE_MIB + 1)})
    assert response.status_code == 400
    assert not Room.objects.filter(slug="big").exists()


# --- Page sizes -----------------------------------------------------------------


def _many_messages(world: World, count: int) -> None:
    room = world.public
    start = Room.objects.get(pk=room.id).last_message_seq
    author = world.user("member")
    Message.objects.bulk_create(
        Message(room=room, author=author, body=f"bulk {i}", seq=start + i + 1) for i in range(count)
    )
    Room.objects.filter(pk=room.id).update(last_message_seq=start + count)


def _many_rooms(world: World, count: int) -> None:
    Room.objects.bulk_create(
        Room(project=world.project, slug=f"bulk-{i}", name=f"bulk {i}", created_by=world.user("admin")) for i in range(count)
    )


def _many_members(world: World, count: int) -> None:
    users = User.objects.bulk_create(User(username=f"bulk{i:04d}", password="!") for i in range(count))
    Membership.objects.bulk_create(Membership(project=world.project, user=user) for user in users)


def _many_projects(world: World, count: int) -> None:
    projects = Project.objects.bulk_create(Project(slug=f"bulk-{i}", name=f"Bulk {i}") for i in range(count))
    Membership.objects.bulk_create(Membership(project=p, user=world.user("member")) for p in projects)


LISTS = {
    "messages": (lambda w: f"/rooms/{w.public.id}/messages", _many_messages),
    "rooms": (lambda w: f"/projects/{w.project.slug}/rooms", _many_rooms),
    "members": (lambda w: f"/projects/{w.project.slug}/members", _many_members),
    "projects": (lambda w: "/projects", _many_projects),
}


@pytest.mark.django_db
@pytest.mark.parametrize("limit", ["1000", "101", str(2**70)])
@pytest.mark.parametrize("name", list(LISTS))
def test_every_list_clamps_the_page_size_to_100(world: World, name: str, limit: str) -> None:
    path, fill = LISTS[name]
    fill(world, 120)
    response = bearer(world).get(f"{API}{path(world)}", {"limit": limit})
    assert response.status_code == 200, response.content
    page = response.json()
    assert len(page["items"]) == 100
    assert page["next_cursor"] is not None


@pytest.mark.django_db
@pytest.mark.parametrize("limit", ["0", "-1", "ten", "1.5", ""])
@pytest.mark.parametrize("name", list(LISTS))
def test_every_list_refuses_a_bad_page_size_with_422(world: World, name: str, limit: str) -> None:
    path, _ = LISTS[name]
    response = bearer(world).get(f"{API}{path(world)}", {"limit": limit})
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "validation_error"


@pytest.mark.django_db(transaction=True)
def test_compressed_frames_cannot_inflate_past_the_message_size_limit(world: World, server_port: int) -> None:
    """Deflate is negotiated as browsers offer it, without context takeover; a small frame that
    inflates past the 1 MiB message limit (a decompression bomb) closes the socket with 1009."""

    async def scenario() -> None:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{server_port}/ws/",
            additional_headers={"Authorization": f"Bearer {world.tokens['member']}"},
            compression="deflate",
            max_size=None,
        )
        try:
            extensions = ws.response.headers["Sec-WebSocket-Extensions"]
            assert "permessage-deflate" in extensions and "server_no_context_takeover" in extensions
            hello = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "hello"
            await ws.send("a" * (2 * 1024 * 1024))  # a few kilobytes on the wire
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        finally:
            await ws.close()

    asyncio.run(scenario())
