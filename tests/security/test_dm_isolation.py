"""Who may do what with a direct message, on every surface: the permission matrix of
tests/security/test_isolation.py, for a DM between two project members.

The DM is between ``private_member`` and a second member who wrote its two
messages. Everyone else, the project's admin included, is answered exactly
as for a room that does not exist (HIDDEN, compared byte for byte with a
request for a missing id or slug). Its people cannot add anyone or leave
(FORBIDDEN): a DM's people are fixed.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from django.test import Client

from chat.models import Message, Room, RoomMember
from chat.services import dms as dm_services
from chat.services import messages as message_services
from tests.security.conftest import MISSING_ID, MISSING_SLUG, ROLES, World, page_client, session_api_client
from tests.security.test_isolation import FORBIDDEN, HIDDEN, LOGIN, OK, _events, _open

# fmt: off
MATRIX: dict[str, tuple[str, ...]] = {
    # action            anonymous  non_member  staff   member     private_member  admin
    "list_dms":        (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "room_detail":     (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "read_history":    (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "post":            (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "edit_others":     (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    FORBIDDEN,      HIDDEN),
    "mark_read":       (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "add_member":      (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    FORBIDDEN,      HIDDEN),
    "leave":           (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    FORBIDDEN,      HIDDEN),
    "subscribe":       (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "resume":          (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
}
# fmt: on

PAGE_ACTIONS = {"list_dms", "read_history"}
API_ACTIONS = {"list_dms", "room_detail", "read_history", "post", "edit_others", "mark_read", "add_member", "leave"}
WS_ACTIONS = {"post", "subscribe", "resume"}
API = "/api/v1"


def cases(surface_actions: set[str]) -> list[Any]:
    return [
        pytest.param(role, action, outcome, id=f"dm.{action}-{role}")
        for action, outcomes in MATRIX.items()
        for role, outcome in zip(ROLES, outcomes)
        if action in surface_actions
    ]


def test_matrix_covers_every_role_and_action():
    assert all(len(row) == len(ROLES) for row in MATRIX.values())
    assert set(MATRIX) == PAGE_ACTIONS | API_ACTIONS | WS_ACTIONS


@pytest.fixture
def dm(world: World) -> dict[str, Any]:
    """The DM of private_member and insider2, with two messages by insider2, oldest first."""
    insider2 = world.project.memberships.get(user__username="insider2").user
    room, _ = dm_services.dm_get_or_create(project=world.project, by=world.user("private_member"), users=["insider2"])
    room = Room.objects.select_related("project").get(pk=room.pk)
    messages = [message_services.message_create(room=room, author=insider2, body=f"dm note {i}")[0] for i in range(2)]
    return {"room": room, "messages": messages, "other": insider2}


def _assert_unchanged(dm: dict[str, Any], *, posted: bool) -> None:
    room = dm["room"]
    assert RoomMember.objects.filter(room=room).count() == 2
    assert not RoomMember.objects.filter(room=room, user__username="bystander").exists()
    assert Message.objects.get(pk=dm["messages"][0].id).body == "dm note 0"
    assert Message.objects.filter(client_id="dm-probe").exists() == posted


# --- Pages ------------------------------------------------------------------


def _page_request(client: Client, world: World, dm: dict[str, Any], action: str, *, missing: bool) -> Any:
    if action == "list_dms":
        return client.get(f"/p/{MISSING_SLUG if missing else world.project.slug}/")
    if action == "read_history":
        return client.get(f"/p/{world.project.slug}/r/{MISSING_SLUG if missing else dm['room'].slug}/")
    raise AssertionError(action)


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "expected"), cases(PAGE_ACTIONS))
def test_pages(world: World, dm: dict[str, Any], role: str, action: str, expected: str) -> None:
    client = page_client(world.user(role))
    response = _page_request(client, world, dm, action, missing=False)
    if expected == LOGIN:
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
    elif expected == HIDDEN:
        probe = _page_request(client, world, dm, action, missing=True)
        assert response.status_code == 404
        assert (response.status_code, response.content) == (probe.status_code, probe.content)
    else:
        assert expected == OK and response.status_code == 200
        body = response.content.decode()
        if action == "list_dms":
            # Only its people see the DM listed; the project's admin does not.
            assert (f'data-room-id="{dm["room"].id}"' in body) == (role == "private_member")
        else:
            assert all(m.body in body for m in dm["messages"])
    _assert_unchanged(dm, posted=False)


# --- JSON API ---------------------------------------------------------------


def _api_request(client: Client, headers: dict[str, str], world: World, dm: dict[str, Any], action: str, *, missing: bool) -> Any:
    room_id = MISSING_ID if missing else dm["room"].id
    message_id = MISSING_ID if missing else dm["messages"][0].id

    def write(method: str, path: str, payload: dict | None = None) -> Any:
        data = orjson.dumps(payload) if payload is not None else b""
        return getattr(client, method)(f"{API}{path}", data=data, content_type="application/json", headers=headers)

    def read(path: str) -> Any:
        return client.get(f"{API}{path}", headers=headers)

    if action == "list_dms":
        return read(f"/projects/{MISSING_SLUG if missing else world.project.slug}/dms")
    if action == "room_detail":
        return read(f"/rooms/{room_id}")
    if action == "read_history":
        return read(f"/rooms/{room_id}/messages")
    if action == "post":
        return write("post", f"/rooms/{room_id}/messages", {"body": "dm probe", "client_id": "dm-probe"})
    if action == "edit_others":
        return write("patch", f"/messages/{message_id}", {"body": "rewritten"})
    if action == "mark_read":
        return write("post", f"/rooms/{room_id}/read", {"last_id": dm["messages"][-1].id})
    if action == "add_member":
        return write("post", f"/rooms/{room_id}/members", {"username": "bystander"})
    if action == "leave":
        user = world.user("private_member")
        return write("delete", f"/rooms/{room_id}/members/{user.id}")
    raise AssertionError(action)


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize(("role", "action", "expected"), cases(API_ACTIONS))
def test_api(world: World, dm: dict[str, Any], role: str, action: str, expected: str, auth: str) -> None:
    user = world.user(role)
    if auth == "bearer":
        client, headers = Client(), ({"Authorization": f"Bearer {world.tokens[role]}"} if user is not None else {})
    else:
        client, headers = session_api_client(user)
    response = _api_request(client, headers, world, dm, action, missing=False)

    if expected == LOGIN:
        assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    elif expected == HIDDEN:
        probe = _api_request(client, headers, world, dm, action, missing=True)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert (response.status_code, response.content) == (probe.status_code, probe.content)
    elif expected == FORBIDDEN:
        assert response.status_code == 403
        assert response.json()["code"] == ("forbidden" if action == "edit_others" else "dm_members_fixed")
    else:
        assert response.status_code == {"post": 201}.get(action, 200), response.content
        if action == "list_dms":
            listed = [d["id"] for d in response.json()["items"]]
            assert listed == ([dm["room"].id] if role == "private_member" else [])
        elif action == "read_history":
            assert [m["id"] for m in response.json()["items"]] == [m.id for m in dm["messages"]]
    _assert_unchanged(dm, posted=action == "post" and expected == OK)


# --- WebSocket --------------------------------------------------------------


def _ws_frame(dm: dict[str, Any], action: str, *, missing: bool) -> tuple[dict[str, Any], str]:
    room_id = MISSING_ID if missing else dm["room"].id
    if action == "subscribe":
        return {"type": "subscribe", "room": room_id, "ref": "probe"}, "subscribed"
    if action == "resume":
        return {"type": "subscribe", "room": room_id, "last_id": dm["messages"][0].id, "ref": "probe"}, "subscribed"
    if action == "post":
        return {"type": "message.send", "room": room_id, "body": "dm probe", "client_id": "dm-probe"}, "message.ack"
    raise AssertionError(action)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("role", "action", "expected"), cases(WS_ACTIONS))
async def test_websocket(world: World, dm: dict[str, Any], role: str, action: str, expected: str) -> None:
    communicator = await _open(world, role)
    try:
        if expected == LOGIN:
            assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
            return
        assert (await _events(communicator, "hello"))[-1]["type"] == "hello"
        frame, answer = _ws_frame(dm, action, missing=False)
        await communicator.send_to(text_data=orjson.dumps(frame).decode())
        events = await _events(communicator, answer)
        if expected == HIDDEN:
            probe_frame, _ = _ws_frame(dm, action, missing=True)
            await communicator.send_to(text_data=orjson.dumps(probe_frame).decode())
            assert events == await _events(communicator, answer)
            assert events[-1]["type"] == "error" and events[-1]["code"] == "not_found"
        else:
            assert expected == OK and events[-1]["type"] == answer, events
            if action == "resume":
                assert [e["message"]["id"] for e in events[:-1]] == [dm["messages"][1].id]
    finally:
        await communicator.disconnect()
    stored = await database_sync_to_async(Message.objects.filter(client_id="dm-probe").exists)()
    assert stored == (action == "post" and expected == OK)
