"""Who may pin, unpin, save and list, over the JSON API (bearer token and session + CSRF), and what
happens when access ends.

Same rules and the same outcomes as test_isolation.py's MATRIX, on the same
world (tests/security/conftest.py): HIDDEN is compared byte for byte with
the same request for an id that does not exist, and every denied write is
checked in the database. The messages of the world are by someone else
(the owner in the public room, a room member in the private one).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.test import Client

from chat.models import Pin, SavedMessage
from chat.selectors import pins as pin_selectors
from chat.services import rooms as room_services
from projects import services as project_services
from tests.security.conftest import MISSING_ID, ROLES, World, session_api_client

OK, FORBIDDEN, HIDDEN, LOGIN = "ok", "forbidden", "hidden", "login"
API = "/api/v1"

# fmt: off
MATRIX: dict[str, tuple[str, ...]] = {
    # action                     anonymous  non_member  staff   member     private_member  admin
    "public.list_pins":         (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.pin_others":        (LOGIN,     HIDDEN,     HIDDEN, FORBIDDEN, FORBIDDEN,      OK),
    "public.unpin_others":      (LOGIN,     HIDDEN,     HIDDEN, FORBIDDEN, FORBIDDEN,      OK),
    "public.save":              (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "public.unsave":            (LOGIN,     HIDDEN,     HIDDEN, OK,        OK,             OK),
    "private.list_pins":        (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.pin_others":       (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    FORBIDDEN,      HIDDEN),
    "private.unpin_others":     (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    FORBIDDEN,      HIDDEN),
    "private.save":             (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
    "private.unsave":           (LOGIN,     HIDDEN,     HIDDEN, HIDDEN,    OK,             HIDDEN),
}
# fmt: on

EXPECTED_STATUS = {"list_pins": 200, "pin_others": 201, "unpin_others": 204, "save": 201, "unsave": 204}


def cases() -> list[Any]:
    return [
        pytest.param(role, action, outcome, id=f"{action}-{role}")
        for action, outcomes in MATRIX.items()
        for role, outcome in zip(ROLES, outcomes)
    ]


def test_matrix_covers_every_role():
    assert all(len(row) == len(ROLES) for row in MATRIX.values())
    assert {action.partition(".")[2] for action in MATRIX} == set(EXPECTED_STATUS)


def _target(world: World, room_kind: str) -> Any:
    return (world.public_messages if room_kind == "public" else world.private_messages)[0]


def _prepare(world: World, room_kind: str, verb: str) -> None:
    """What the action acts on: a pin to remove (made by the message's author), a save of the caller's own to remove."""
    target = _target(world, room_kind)
    if verb == "unpin_others":
        Pin.objects.create(room_id=target.room_id, message=target, pinned_by=target.author)


def _request(client: Client, headers: dict[str, str], world: World, room_kind: str, verb: str, *, missing: bool) -> Any:
    room = getattr(world, room_kind)
    room_id = MISSING_ID if missing else room.id
    message_id = MISSING_ID if missing else _target(world, room_kind).id

    def call(method: str, path: str) -> Any:
        return getattr(client, method)(f"{API}{path}", data=b"", content_type="application/json", headers=headers)

    if verb == "list_pins":
        return call("get", f"/rooms/{room_id}/pins")
    if verb == "pin_others":
        return call("put", f"/messages/{message_id}/pin")
    if verb == "unpin_others":
        return call("delete", f"/messages/{message_id}/pin")
    if verb == "save":
        return call("put", f"/messages/{message_id}/saved")
    if verb == "unsave":
        return call("delete", f"/messages/{message_id}/saved")
    raise AssertionError(verb)


def _client(auth: str, world: World, role: str) -> tuple[Client, dict[str, str]]:
    if auth == "bearer":
        return Client(), ({"Authorization": f"Bearer {world.tokens[role]}"} if role in world.tokens else {})
    return session_api_client(world.user(role))


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize(("role", "action", "expected"), cases())
def test_api(world: World, role: str, action: str, expected: str, auth: str) -> None:
    room_kind, _, verb = action.partition(".")
    target = _target(world, room_kind)
    user = world.user(role)
    _prepare(world, room_kind, verb)
    if verb == "unsave" and user is not None:
        SavedMessage.objects.create(user=user, message=target)  # a save from when they could read it, if ever
    client, headers = _client(auth, world, role)
    response = _request(client, headers, world, room_kind, verb, missing=False)

    if expected == LOGIN:
        assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    elif expected == HIDDEN:
        probe = _request(client, headers, world, room_kind, verb, missing=True)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert (response.status_code, response.content) == (probe.status_code, probe.content)
    elif expected == FORBIDDEN:
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    else:
        assert response.status_code == EXPECTED_STATUS[verb], response.content
        if verb == "list_pins":
            assert response.json() == {"items": []}

    allowed = expected == OK
    pinned = Pin.objects.filter(message=target).exists()
    assert pinned == ((verb == "pin_others" and allowed) or (verb == "unpin_others" and not allowed))
    if user is not None:
        saved = SavedMessage.objects.filter(user=user, message=target).exists()
        assert saved == ((verb == "save" and allowed) or (verb == "unsave" and not allowed))
    # Nobody else's save was made or removed.
    others = SavedMessage.objects.exclude(user=user) if user is not None else SavedMessage.objects.all()
    assert not others.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
def test_saved_list_is_the_callers_own(world: World, auth: str) -> None:
    insider = world.user("private_member")
    SavedMessage.objects.create(user=insider, message=world.private_messages[0])
    for role in ("non_member", "staff", "member", "admin"):
        client, headers = _client(auth, world, role)
        response = client.get(f"{API}/me/saved", headers=headers)
        assert response.status_code == 200 and response.json() == {"items": [], "next_cursor": None}
    anonymous = Client().get(f"{API}/me/saved")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"


# --- When access ends -------------------------------------------------------------


def _every_endpoint(client: Client, headers: dict[str, str], *, room_id: int, message_id: int) -> list[Any]:
    def call(method: str, path: str) -> Any:
        return getattr(client, method)(f"{API}{path}", data=b"", content_type="application/json", headers=headers)

    return [
        call("get", f"/rooms/{room_id}/pins"),
        call("put", f"/messages/{message_id}/pin"),
        call("delete", f"/messages/{message_id}/pin"),
        call("put", f"/messages/{message_id}/saved"),
        call("delete", f"/messages/{message_id}/saved"),
    ]


def _saved_ids(client: Client, headers: dict[str, str]) -> list[int]:
    response = client.get(f"{API}/me/saved", headers=headers)
    assert response.status_code == 200
    return [item["message"]["id"] for item in response.json()["items"]]


def _assert_hidden(client: Client, headers: dict[str, str], *, room_id: int, message_id: int) -> None:
    answers = _every_endpoint(client, headers, room_id=room_id, message_id=message_id)
    probes = _every_endpoint(client, headers, room_id=MISSING_ID, message_id=MISSING_ID)
    for answer, probe in zip(answers, probes, strict=True):
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
        assert answer.content == probe.content


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
def test_leaving_a_private_room_hides_its_pins_and_saves(world: World, auth: str) -> None:
    insider = world.user("private_member")
    client, headers = _client(auth, world, "private_member")
    target = world.private_messages[0]
    own = client.post(
        f"{API}/rooms/{world.private.id}/messages",
        data=orjson.dumps({"body": "mine to pin"}),
        content_type="application/json",
        headers=headers,
    ).json()
    assert client.put(f"{API}/messages/{own['id']}/pin", headers=headers).status_code == 201
    for message_id in (target.id, own["id"]):
        assert client.put(f"{API}/messages/{message_id}/saved", headers=headers).status_code == 201
    public = world.public_messages[0]
    assert client.put(f"{API}/messages/{public.id}/saved", headers=headers).status_code == 201
    assert _saved_ids(client, headers) == [public.id, own["id"], target.id]

    room_services.room_member_remove(room=world.private, user=insider, by=insider)

    _assert_hidden(client, headers, room_id=world.private.id, message_id=target.id)
    _assert_hidden(client, headers, room_id=world.private.id, message_id=own["id"])  # their own message too
    assert _saved_ids(client, headers) == [public.id]
    assert pin_selectors.pinned_message_ids(message_ids=[own["id"]]) == {own["id"]}  # the room keeps its pin


@pytest.mark.django_db
def test_leaving_the_project_hides_every_pin_and_save(world: World) -> None:
    member = world.user("member")
    client, headers = _client("bearer", world, "member")
    target = world.public_messages[0]
    assert client.put(f"{API}/messages/{target.id}/saved", headers=headers).status_code == 201
    assert _saved_ids(client, headers) == [target.id]

    project_services.membership_remove(project=world.project, user=member, by=member)

    _assert_hidden(client, headers, room_id=world.public.id, message_id=target.id)
    assert _saved_ids(client, headers) == []
    assert SavedMessage.objects.filter(user=member).exists()  # kept, unseen: it shows again if they come back
