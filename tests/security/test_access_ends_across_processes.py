"""Access that ends, ends on open sockets too: two real server processes, the change made through the other one.

A socket on server A; the membership, token, session or user changes
through server B's API and pages (or, for deactivation, from this process,
as the admin's form would). On that change's event the socket on A drops the
room (an ``access_revoked`` error frame) or is closed with 4401; after that it
receives nothing more of the room and nothing it sends is stored.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import httpx
import pytest
import websockets

from chat.models import Message, Room
from tests.conftest import PASSWORD
from tests.servers import app_servers
from tests.wsclient import ChatSocket

pytestmark = pytest.mark.django_db(transaction=True)

# The promise of docs/SECURITY.md ("When access ends"): an open socket acts within a second
# of the change, on every server process. (Its periodic check, WS_AUTH_RECHECK, is 300 s.)
REACT_WITHIN = 1.0


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker) -> Iterator[tuple[int, int]]:
    with app_servers(2) as procs:
        (port_a, _), (port_b, _) = procs
        yield port_a, port_b


@pytest.fixture
def world(chat_world, make_token) -> dict[str, Any]:
    tokens = {name: make_token(chat_world[name]) for name in ("owner", "member", "insider", "admin")}
    return {**chat_world, "tokens": tokens}


def api(port: int, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10)


async def call(func: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(func, *args, **kwargs)


async def subscribed(port: int, token: str, room_id: int) -> ChatSocket:
    sock = await ChatSocket.open(port, token)
    await sock.send({"type": "subscribe", "room": room_id})
    await sock.until("subscribed")
    return sock


async def quiet_about(sock: ChatSocket, room_id: int, wait: float = 1.0) -> list[dict]:
    """Events of ``room_id`` that reach the socket within ``wait`` seconds (expected: none)."""
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (left := deadline - loop.time()) > 0:
        try:
            event = await sock.recv(timeout=left, skip=())
        except asyncio.TimeoutError:
            break
        if event.get("room") == room_id or event.get("message", {}).get("room") == room_id:
            seen.append(event)
    return seen


async def closed_code(sock: ChatSocket) -> int:
    """The close code, once the server closes the socket (within REACT_WITHIN)."""
    try:
        while True:
            await sock.recv(timeout=REACT_WITHIN, skip=())
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else -1


def post(port: int, token: str, room_id: int, body: str) -> int:
    with api(port, token) as client:
        response = client.post(f"/rooms/{room_id}/messages", json={"body": body})
        assert response.status_code == 201, response.text
        return response.json()["id"]


async def assert_room_is_gone_for(sock: ChatSocket, room_id: int, *, writer_port: int, writer_token: str) -> None:
    error, _ = await sock.until("error", timeout=REACT_WITHIN)
    assert error["code"] == "access_revoked" and error["ref"] == room_id, error
    await call(post, writer_port, writer_token, room_id, "after the change")
    assert await quiet_about(sock, room_id) == []
    await sock.send({"type": "message.send", "room": room_id, "body": "am I in?", "client_id": "late-1"})
    refused, _ = await sock.until("error")
    assert refused["code"] == "not_found" and refused["ref"] == "late-1"
    await sock.send({"type": "typing", "room": room_id})
    refused, _ = await sock.until("error")
    assert refused["code"] == "not_subscribed"


async def assert_closed_and_stores_nothing(sock: ChatSocket, room_id: int) -> None:
    before = await call(lambda: Message.objects.filter(room_id=room_id).count())
    assert await closed_code(sock) == 4401
    with pytest.raises(websockets.ConnectionClosed):
        await sock.send({"type": "message.send", "room": room_id, "body": "ghost", "client_id": "ghost"})
    assert await call(lambda: Message.objects.filter(room_id=room_id).count()) == before


def test_a_project_member_removed_through_the_other_process(servers, world) -> None:
    port_a, port_b = servers
    room, member = world["public"], world["member"]

    async def scenario() -> None:
        sock = await subscribed(port_a, world["tokens"]["member"], room.id)
        with api(port_b, world["tokens"]["owner"]) as owner:
            response = await call(owner.delete, f"/projects/{world['project'].slug}/members/{member.id}")
        assert response.status_code == 204, response.text
        await assert_room_is_gone_for(sock, room.id, writer_port=port_b, writer_token=world["tokens"]["owner"])
        await sock.close()

    asyncio.run(scenario())


def test_a_private_room_member_removed_through_the_other_process(servers, world) -> None:
    port_a, port_b = servers
    room = world["private"]
    with api(port_b, world["tokens"]["insider"]) as insider:
        for name in ("member", "admin1"):
            assert insider.post(f"/rooms/{room.id}/members", json={"username": name}).status_code == 201

    async def scenario() -> None:
        sock = await subscribed(port_a, world["tokens"]["member"], room.id)
        with api(port_b, world["tokens"]["admin"]) as admin:  # a project admin who is in the room
            response = await call(admin.delete, f"/rooms/{room.id}/members/{world['member'].id}")
        assert response.status_code == 204, response.text
        await assert_room_is_gone_for(sock, room.id, writer_port=port_b, writer_token=world["tokens"]["insider"])
        await sock.close()

    asyncio.run(scenario())


def test_a_room_made_private_through_the_other_process(servers, world, make_user) -> None:
    """The switch is made in the Django admin on B: readers who are not room members lose the room."""
    port_a, port_b = servers
    room = world["public"]
    make_user("root", is_staff=True)

    async def scenario() -> None:
        reader = await subscribed(port_a, world["tokens"]["member"], room.id)
        creator = await subscribed(port_a, world["tokens"]["owner"], room.id)

        def tick_is_private() -> int:
            with httpx.Client(base_url=f"http://127.0.0.1:{port_b}", timeout=10) as browser:
                browser.get("/admin/login/")
                token = browser.cookies["csrftoken"]
                browser.post(
                    "/admin/login/",
                    data={"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"},
                )
                url = f"/admin/chat/room/{room.id}/change/"
                assert browser.get(url).status_code == 200
                data = {
                    "project": str(room.project_id),
                    "slug": room.slug,
                    "name": room.name,
                    "topic": room.topic,
                    "is_private": "on",
                    "created_by": str(room.created_by_id or ""),
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                    "_save": "Save",
                    # the members inline, left as it is
                    "members-TOTAL_FORMS": "0",
                    "members-INITIAL_FORMS": "0",
                    "members-MIN_NUM_FORMS": "0",
                    "members-MAX_NUM_FORMS": "1000",
                }
                return browser.post(url, data=data).status_code

        assert await call(tick_is_private) == 302
        assert await call(lambda: Room.objects.get(pk=room.id).is_private)
        await assert_room_is_gone_for(reader, room.id, writer_port=port_b, writer_token=world["tokens"]["owner"])
        event, _ = await creator.until("message.new")
        assert event["message"]["body"] == "after the change"
        for sock in (reader, creator):
            await sock.close()

    asyncio.run(scenario())


def test_a_token_revoked_through_the_other_process(servers, world) -> None:
    port_a, port_b = servers
    room = world["public"]
    token = world["tokens"]["member"]

    async def scenario() -> None:
        sock = await subscribed(port_a, token, room.id)
        with api(port_b, token) as client:
            response = await call(client.delete, "/auth/token")
        assert response.status_code == 204, response.text
        await assert_closed_and_stores_nothing(sock, room.id)

    asyncio.run(scenario())


def test_a_session_logged_out_through_the_other_process(servers, world) -> None:
    port_a, port_b = servers
    room = world["public"]

    async def scenario() -> None:
        browser = httpx.Client(base_url=f"http://127.0.0.1:{port_b}", timeout=10)
        await call(browser.get, "/login/")
        response = await call(
            browser.post,
            "/login/",
            data={"username": "member", "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        )
        assert response.status_code == 302, response.text
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port_a}/ws/",
            additional_headers={"Cookie": f"sessionid={browser.cookies['sessionid']}", "Origin": f"http://127.0.0.1:{port_a}"},
        )
        sock = ChatSocket(ws)
        assert (await sock.recv())["type"] == "hello"
        await sock.send({"type": "subscribe", "room": room.id})
        await sock.until("subscribed")
        out = await call(browser.post, "/logout/", data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]})
        assert out.status_code == 302
        await assert_closed_and_stores_nothing(sock, room.id)
        browser.close()

    asyncio.run(scenario())


def test_a_deactivated_user_loses_the_sockets_on_every_process(servers, world) -> None:
    port_a, port_b = servers
    room, member = world["public"], world["member"]

    async def scenario() -> None:
        on_a = await subscribed(port_a, world["tokens"]["member"], room.id)
        on_b = await subscribed(port_b, world["tokens"]["member"], room.id)

        def deactivate() -> None:
            member.is_active = False
            member.save()

        await call(deactivate)
        await assert_closed_and_stores_nothing(on_a, room.id)
        await assert_closed_and_stores_nothing(on_b, room.id)

    asyncio.run(scenario())
