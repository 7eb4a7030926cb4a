"""Who may do what, on every surface that offers it: pages, the JSON API (bearer token and
session + CSRF) and the WebSocket.

The MATRIX below is the specification (docs/ARCHITECTURE.md "Access rules",
docs/SECURITY.md). Each row is an action, each column a role (tests/security/
conftest.py). Outcomes:

* OK: allowed;
* FORBIDDEN: the user can see the object but may not do this (403 / ``forbidden``);
* HIDDEN: answered *exactly* like an object that does not exist: same status,
  same body, same error frame. Every HIDDEN case is compared byte for byte
  with a request for a nonexistent id or slug, so nothing hints that it exists;
* LOGIN: no credentials: pages redirect to the login page, the API answers
  401, a socket is closed with 4401.

Nothing may change on a denied write: each denied write also checks the database.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat.models import Message, Reaction, RoomMember, SavedMessage
from chatsite.asgi import application
from projects.models import Invitation, Membership
from tests.security.conftest import MISSING_ID, MISSING_SLUG, PRIVATE_ROOM_NAME, ROLES, World, page_client, session_api_client

OK, FORBIDDEN, HIDDEN, LOGIN = "ok", "forbidden", "hidden", "login"

# fmt: off
MATRIX: dict[str, tuple[str, ...]] = {
    # action                     anonymous  non_member  staff   member     private_member  admin
    "read_project":             (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "list_rooms":               (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "invite_to_project":        (LOGIN,     HIDDEN,     HIDDEN, FORBIDDEN, FORBIDDEN,      OK),
    # the invitation is the non-member's: only they may answer it
    "accept_invitation":        (LOGIN,     OK,         HIDDEN, HIDDEN,    HIDDEN,         HIDDEN),
    "decline_invitation":       (LOGIN,     OK,         HIDDEN, HIDDEN,    HIDDEN,         HIDDEN),
    "leave_project":            (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "remove_member":            (LOGIN,     HIDDEN,     HIDDEN, FORBIDDEN, FORBIDDEN,      OK),
    "public.read_history":      (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.post":              (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.edit_others":       (LOGIN,     HIDDEN,     HIDDEN, FORBIDDEN, FORBIDDEN,      OK),
    "public.delete_others":     (LOGIN,     HIDDEN,     HIDDEN, FORBIDDEN, FORBIDDEN,      OK),
    "public.subscribe":         (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.resume":            (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "private.read_history":     (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.post":             (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.edit_others":      (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    FORBIDDEN,      HIDDEN),
    "private.delete_others":    (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    FORBIDDEN,      HIDDEN),
    "private.subscribe":        (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.resume":           (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.add_member":       (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "public.react":             (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.save":              (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.reply":             (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.read_thread":       (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "private.react":            (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.save":             (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.reply":            (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.read_thread":      (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
}
# fmt: on

# Which surface offers which action (the verb after the room prefix).
PROJECT_MEMBERSHIP_ACTIONS = {"invite_to_project", "accept_invitation", "decline_invitation", "leave_project", "remove_member"}
INVITATION_ACTIONS = {"accept_invitation", "decline_invitation"}
PAGE_ACTIONS = {"read_project", "list_rooms", "read_history", "add_member"} | PROJECT_MEMBERSHIP_ACTIONS
API_ACTIONS = {
    "read_project", "list_rooms", "read_history", "post", "edit_others", "delete_others", "add_member",
    "react", "reply", "read_thread",
} | PROJECT_MEMBERSHIP_ACTIONS  # fmt: skip
# Saves over the API are test_pin_isolation.py's matrix; here over the socket.
WS_ACTIONS = {"post", "subscribe", "resume", "react", "reply", "save"}


def cases(surface_actions: set[str]) -> list[Any]:
    return [
        pytest.param(role, action, outcome, id=f"{action}-{role}")
        for action, outcomes in MATRIX.items()
        for role, outcome in zip(ROLES, outcomes)
        if action.rpartition(".")[2] in surface_actions
    ]


def split(action: str) -> tuple[str | None, str]:
    room, _, verb = action.rpartition(".")
    return room or None, verb


def _invitation_id(world: World, *, missing: bool) -> int:
    """The non-member's pending invitation to the project (made on first use), or an id nobody has."""
    if missing:
        return MISSING_ID
    invitation, _ = Invitation.objects.get_or_create(
        project=world.project, user=world.user("non_member"), defaults={"invited_by": world.project.created_by}
    )
    return invitation.id


def _bystander_id(world: World) -> int:
    return Membership.objects.get(project=world.project, user__username="bystander").user_id


def test_matrix_covers_every_role_and_action():
    assert all(len(row) == len(ROLES) for row in MATRIX.values())
    offered = PAGE_ACTIONS | API_ACTIONS | WS_ACTIONS
    assert {split(action)[1] for action in MATRIX} == offered


# --- Pages ------------------------------------------------------------------


def _page_request(client: Client, world: World, room_kind: str | None, verb: str, *, missing: bool) -> Any:
    project = MISSING_SLUG if missing and room_kind is None else world.project.slug
    room = getattr(world, room_kind) if room_kind else None
    room_slug = MISSING_SLUG if missing else (room.slug if room else "")
    if verb in ("read_project", "list_rooms"):
        return client.get(f"/p/{project}/")
    if verb == "invite_to_project":
        return client.post(f"/p/{project}/invite/", {"username": "newbie", "role": "member"})
    if verb in INVITATION_ACTIONS:
        return client.post(f"/invitations/{_invitation_id(world, missing=missing)}/{verb.partition('_')[0]}/")
    if verb == "leave_project":
        return client.post(f"/p/{project}/leave/")
    if verb == "remove_member":
        return client.post(f"/p/{project}/members/{_bystander_id(world)}/remove/")
    if verb == "read_history":
        return client.get(f"/p/{project}/r/{room_slug}/")
    if verb == "add_member":
        return client.post(f"/p/{project}/r/{room_slug}/members/", {"username": "bystander"})
    raise AssertionError(verb)


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "expected"), cases(PAGE_ACTIONS))
def test_pages(world: World, role: str, action: str, expected: str) -> None:
    room_kind, verb = split(action)
    client = page_client(world.user(role))
    response = _page_request(client, world, room_kind, verb, missing=False)

    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    elif expected == HIDDEN:
        probe = _page_request(client, world, room_kind, verb, missing=True)
        assert (response.status_code, response.content) == (probe.status_code, probe.content)
        if verb in INVITATION_ACTIONS:
            # Answered like an invitation already answered: back to the project list, "no longer pending".
            assert response.status_code == 302 and response["Location"] == probe["Location"] == "/"
        else:
            assert response.status_code == 404
    elif expected == FORBIDDEN:
        assert response.status_code == 403
    else:
        assert response.status_code in (200, 302), response.status_code
        body = response.content.decode()
        if verb == "read_project":
            assert response.status_code == 200 and "World" in body
        elif verb == "list_rooms":
            assert "general" in body
            assert (PRIVATE_ROOM_NAME in body) == (role == "private_member")
        elif verb == "read_history":
            messages = world.public_messages if room_kind == "public" else world.private_messages
            assert response.status_code == 200 and all(m.body in body for m in messages)
        elif verb in ("invite_to_project", "add_member", "leave_project", "remove_member") or verb in INVITATION_ACTIONS:
            assert response.status_code == 302

    _assert_membership_writes(world, role, verb, expected)
    added = RoomMember.objects.filter(room=world.private, user__username="bystander").exists()
    assert added == (verb == "add_member" and expected == OK)


def _assert_membership_writes(world: World, role: str, verb: str, expected: str) -> None:
    """Invitations and memberships changed exactly as an allowed action would, and not at all otherwise."""
    allowed = expected == OK
    assert Invitation.objects.filter(project=world.project, user__username="newbie").exists() == (
        verb == "invite_to_project" and allowed
    )
    assert not Membership.objects.filter(project=world.project, user__username="newbie").exists()
    outsider = world.user("non_member")
    assert Membership.objects.filter(project=world.project, user=outsider).exists() == (
        verb == "accept_invitation" and allowed
    )
    if verb in INVITATION_ACTIONS:
        assert Invitation.objects.filter(project=world.project, user=outsider).exists() == (not allowed)
    user = world.user(role)
    if verb == "leave_project" and user is not None:
        assert Membership.objects.filter(project=world.project, user=user).exists() == (not allowed and role in (
            "member", "private_member", "admin"
        ))
    assert Membership.objects.filter(project=world.project, user__username="bystander").exists() == (
        not (verb == "remove_member" and allowed)
    )


# --- JSON API ---------------------------------------------------------------

API = "/api/v1"
NOT_AUTHENTICATED = "not_authenticated"


def _api_request(
    client: Client, headers: dict[str, str], world: World, room_kind: str | None, verb: str, *, missing: bool
) -> list[Any]:
    """The request(s) of one action; a read action checks the room and its history."""
    slug = MISSING_SLUG if missing else world.project.slug
    room = getattr(world, room_kind) if room_kind else None
    room_id = MISSING_ID if missing else (room.id if room else 0)
    messages = (world.public_messages if room_kind == "public" else world.private_messages) if room_kind else []
    message_id = MISSING_ID if missing else (messages[0].id if messages else 0)

    def write(method: str, path: str, payload: dict | None = None) -> Any:
        data = orjson.dumps(payload) if payload is not None else b""
        return getattr(client, method)(f"{API}{path}", data=data, content_type="application/json", headers=headers)

    def read(path: str) -> Any:
        return client.get(f"{API}{path}", headers=headers)

    if verb == "read_project":
        return [read(f"/projects/{slug}")]
    if verb == "list_rooms":
        return [read(f"/projects/{slug}/rooms")]
    if verb == "invite_to_project":
        return [write("post", f"/projects/{slug}/invitations", {"username": "newbie"})]
    if verb in INVITATION_ACTIONS:
        return [write("post", f"/invitations/{_invitation_id(world, missing=missing)}/{verb.partition('_')[0]}")]
    if verb == "leave_project":
        return [write("post", f"/projects/{slug}/leave")]
    if verb == "remove_member":
        return [write("delete", f"/projects/{slug}/members/{_bystander_id(world)}")]
    if verb == "read_history":
        return [read(f"/rooms/{room_id}"), read(f"/rooms/{room_id}/messages")]
    if verb == "post":
        return [write("post", f"/rooms/{room_id}/messages", {"body": "isolation probe", "client_id": "iso-probe"})]
    if verb == "edit_others":
        return [write("patch", f"/messages/{message_id}", {"body": "rewritten"})]
    if verb == "delete_others":
        return [write("delete", f"/messages/{message_id}")]
    if verb == "add_member":
        return [write("post", f"/rooms/{room_id}/members", {"username": "bystander"})]
    if verb == "react":
        return [write("post", f"/messages/{message_id}/reactions", {"emoji": "👍"})]
    if verb == "reply":
        probe = {"body": "isolation probe", "client_id": "iso-probe", "thread_root": message_id}
        return [write("post", f"/rooms/{room_id}/messages", probe)]
    if verb == "read_thread":
        return [read(f"/messages/{message_id}/thread")]
    raise AssertionError(verb)


def _api_client(auth: str, world: World, role: str) -> tuple[Client, dict[str, str]]:
    user = world.user(role)
    if auth == "bearer":
        headers = {"Authorization": f"Bearer {world.tokens[role]}"} if user is not None else {}
        return Client(), headers
    return session_api_client(user)


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize(("role", "action", "expected"), cases(API_ACTIONS))
def test_api(world: World, role: str, action: str, expected: str, auth: str) -> None:
    room_kind, verb = split(action)
    client, headers = _api_client(auth, world, role)
    responses = _api_request(client, headers, world, room_kind, verb, missing=False)

    if expected == LOGIN:
        for response in responses:
            assert response.status_code == 401
            assert response.json()["code"] == NOT_AUTHENTICATED
    elif expected == HIDDEN:
        probes = _api_request(client, headers, world, room_kind, verb, missing=True)
        for response, probe in zip(responses, probes, strict=True):
            assert response.status_code == 404
            assert response.json()["code"] == "not_found"
            assert (response.status_code, response.content) == (probe.status_code, probe.content)
    elif expected == FORBIDDEN:
        for response in responses:
            assert response.status_code == 403
            assert response.json()["code"] == "forbidden"
    else:
        expected_status = {
            "invite_to_project": 202,
            "accept_invitation": 201,
            "decline_invitation": 204,
            "leave_project": 204,
            "remove_member": 204,
            "post": 201,
            "reply": 201,
            "react": 201,
            "add_member": 201,
            "delete_others": 204,
        }.get(verb, 200)
        for response in responses:
            assert response.status_code == expected_status, response.content
        if verb == "list_rooms":
            slugs = {room["slug"] for room in responses[0].json()["items"]}
            assert "general" in slugs
            assert (world.private.slug in slugs) == (role == "private_member")
        if verb == "read_history":
            messages = world.public_messages if room_kind == "public" else world.private_messages
            assert [m["id"] for m in responses[1].json()["items"]] == [m.id for m in messages]

    _assert_writes(world, role, room_kind, verb, expected)


def _assert_writes(world: World, role: str, room_kind: str | None, verb: str, expected: str) -> None:
    """A denied write changed nothing; an allowed one happened."""
    allowed = expected == OK
    _assert_membership_writes(world, role, verb, expected)
    assert RoomMember.objects.filter(room=world.private, user__username="bystander").exists() == (
        verb == "add_member" and allowed
    )
    assert Message.objects.filter(client_id="iso-probe").exists() == (verb in ("post", "reply") and allowed)
    assert Message.objects.filter(client_id="iso-probe", thread_root__isnull=False).exists() == (verb == "reply" and allowed)
    assert Reaction.objects.exists() == (verb == "react" and allowed)
    for messages in (world.public_messages, world.private_messages):
        target = Message.objects.get(pk=messages[0].id)
        touched = allowed and room_kind is not None and messages is getattr(world, f"{room_kind}_messages")
        assert (target.body == "rewritten") == (touched and verb == "edit_others")
        assert (target.deleted_at is not None) == (touched and verb == "delete_others")


# --- WebSocket --------------------------------------------------------------


async def _open(world: World, role: str) -> WebsocketCommunicator:
    token = world.tokens.get(role)
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    communicator = WebsocketCommunicator(application, "/ws/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _events(communicator: WebsocketCommunicator, until: str) -> list[dict[str, Any]]:
    """Events up to and including the first of type ``until`` (or an error), unpacking batches."""
    events: list[dict[str, Any]] = []
    while True:
        frame = orjson.loads(await communicator.receive_from(timeout=5))
        for event in frame if isinstance(frame, list) else [frame]:
            if event["type"] in ("presence", "typing"):
                continue
            events.append(event)
            if event["type"] in (until, "error"):
                return events


def _ws_frame(world: World, room_kind: str, verb: str, *, missing: bool) -> tuple[dict[str, Any], str]:
    room = getattr(world, room_kind)
    room_id = MISSING_ID if missing else room.id
    messages = world.public_messages if room_kind == "public" else world.private_messages
    if verb == "subscribe":
        return {"type": "subscribe", "room": room_id, "ref": "probe"}, "subscribed"
    if verb == "resume":
        return {"type": "subscribe", "room": room_id, "last_id": messages[0].id, "ref": "probe"}, "subscribed"
    if verb == "post":
        return {"type": "message.send", "room": room_id, "body": "isolation probe", "client_id": "iso-probe"}, "message.ack"
    message_id = MISSING_ID if missing else messages[0].id
    if verb == "reply":
        frame = {"type": "message.send", "room": room_id, "body": "isolation probe", "client_id": "iso-probe"}
        return {**frame, "thread_root": message_id}, "message.ack"
    if verb == "react":
        return {"type": "reaction.add", "message": message_id, "emoji": "👍", "ref": "probe"}, "reaction.ack"
    if verb == "save":
        return {"type": "save", "message": message_id, "ref": "probe"}, "save.ack"
    raise AssertionError(verb)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("role", "action", "expected"), cases(WS_ACTIONS))
async def test_websocket(world: World, role: str, action: str, expected: str) -> None:
    room_kind, verb = split(action)
    assert room_kind is not None
    communicator = await _open(world, role)
    try:
        if expected == LOGIN:
            assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
            return
        assert (await _events(communicator, "hello"))[-1]["type"] == "hello"
        frame, answer = _ws_frame(world, room_kind, verb, missing=False)
        await communicator.send_to(text_data=orjson.dumps(frame).decode())
        events = await _events(communicator, answer)
        if expected == HIDDEN:
            probe_frame, _ = _ws_frame(world, room_kind, verb, missing=True)
            await communicator.send_to(text_data=orjson.dumps(probe_frame).decode())
            probe = await _events(communicator, answer)
            assert events == probe
            assert events[-1]["type"] == "error" and events[-1]["code"] == "not_found"
        else:
            assert expected == OK
            assert events[-1]["type"] == answer, events
            messages = world.public_messages if room_kind == "public" else world.private_messages
            if verb == "resume":
                assert [e["message"]["id"] for e in events[:-1]] == [messages[1].id]
                assert events[-1]["resumed"] == 1
    finally:
        await communicator.disconnect()
    stored = await database_sync_to_async(Message.objects.filter(client_id="iso-probe").exists)()
    assert stored == (verb in ("post", "reply") and expected == OK)
    reacted = await database_sync_to_async(Reaction.objects.exists)()
    assert reacted == (verb == "react" and expected == OK)
    saved = await database_sync_to_async(SavedMessage.objects.exists)()
    assert saved == (verb == "save" and expected == OK)


# --- Staff-only pages and what the public site must not serve ---------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/", "/perf/db/"])
@pytest.mark.parametrize("role", ["anonymous", "member", "admin", "staff"])
def test_admin_and_perf_pages_are_staff_only(world: World, role: str, path: str) -> None:
    response = page_client(world.user(role)).get(path)
    if role == "staff":
        assert response.status_code == 200
    else:
        # Anonymous and non-staff users (project admins included) are sent to the admin login.
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/metrics", "/metrics/"])
@pytest.mark.parametrize("role", ["anonymous", "member", "staff"])
def test_metrics_are_not_served_on_the_public_site(world: World, role: str, path: str) -> None:
    client = page_client(world.user(role))
    assert client.get(path).status_code == 404
    headers = {"Authorization": f"Bearer {world.tokens[role]}"} if role in world.tokens else {}
    assert Client().get(path, headers=headers).status_code == 404
