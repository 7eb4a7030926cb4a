"""Who finds what with message search, over the JSON API (bearer token and session): the rooms' one access
rule decides, and nothing of another project, a private room or someone else's DM leaks.

The world of tests/security/conftest.py: two "note" messages by someone else in
the public room and two in the private one. Each test adds a DM between the
owner and the member, and another project whose messages say "note" too, with
the member and the private member in it, so a leak across projects would show.
A project the caller is not in answers byte for byte as one that does not exist.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat.models import Message, Room
from chat.services import dms as dm_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects import services as project_services
from projects.models import Membership
from tests.security.conftest import MISSING_SLUG, PRIVATE_ROOM_NAME, ROLES, World, session_api_client

API = "/api/v1"
PUBLIC, PRIVATE, DM, NONE = "public", "private", "dm", "none"
HIDDEN, LOGIN = "hidden", "login"

# What a search for "note" in the world project finds, by role.
# fmt: off
FINDS: dict[str, Any] = {
    "anonymous":      LOGIN,
    "non_member":     HIDDEN,
    "staff":          HIDDEN,
    "member":         {PUBLIC, DM},
    "private_member": {PUBLIC, PRIVATE},
    "admin":          {PUBLIC},  # a project admin outside the private room finds none of it, nor others' DMs
}
# fmt: on


@pytest.fixture
def extra(world: World, make_user) -> dict[str, Any]:
    """A DM of the owner and the member, and another project with its own "note" messages."""
    owner, member = world.project.memberships.get(role=Membership.Role.OWNER).user, world.user("member")
    dm, _ = dm_services.dm_get_or_create(project=world.project, by=owner, users=[member.username])
    dm_notes = [message_services.message_create(room=dm, author=owner, body=f"dm note {i}")[0] for i in range(2)]
    other_owner = make_user("elsewhere")
    other = project_services.project_create(user=other_owner, name="Other", slug="other")
    for role in ("member", "private_member"):
        Membership.objects.create(project=other, user=world.user(role), role=Membership.Role.MEMBER)
    other_general = Room.objects.get(project=other, slug="general")
    other_notes = [message_services.message_create(room=other_general, author=other_owner, body="other note")[0]]
    return {"dm": dm, "dm_notes": dm_notes, "other": other, "other_notes": other_notes}


def _client(auth: str, world: World, role: str) -> tuple[Client, dict[str, str]]:
    if auth == "bearer":
        return Client(), ({"Authorization": f"Bearer {world.tokens[role]}"} if role in world.tokens else {})
    return session_api_client(world.user(role))


def _search(client: Client, headers: dict[str, str], slug: str, q: str) -> Any:
    return client.get(f"{API}/projects/{slug}/search", {"q": q}, headers=headers)


def test_the_table_covers_every_role():
    assert set(FINDS) == set(ROLES)


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize("role", ROLES)
def test_search_finds_only_what_the_role_reads(world: World, extra: dict[str, Any], role: str, auth: str) -> None:
    client, headers = _client(auth, world, role)
    response = _search(client, headers, world.project.slug, "note")
    expected = FINDS[role]
    if expected == LOGIN:
        assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
        return
    if expected == HIDDEN:
        probe = _search(client, headers, MISSING_SLUG, "note")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert (response.status_code, response.content) == (probe.status_code, probe.content)
        return
    assert response.status_code == 200, response.content
    found = {item["message"]["id"] for item in response.json()["items"]}
    by_kind = {
        PUBLIC: {m.id for m in world.public_messages},
        PRIVATE: {m.id for m in world.private_messages},
        DM: {m.id for m in extra["dm_notes"]},
    }
    assert found == set().union(*(by_kind[kind] for kind in expected))
    # Nothing of the other project, whoever is in it; snippets and rooms only of what was found.
    assert not found & {m.id for m in extra["other_notes"]}
    rooms = {item["room"]["id"] for item in response.json()["items"]}
    assert rooms <= {world.public.id, world.private.id, extra["dm"].id}
    assert all(Message.objects.get(pk=item["message"]["id"]).room_id == item["room"]["id"] for item in response.json()["items"])


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize("role", ["member", "admin"])
def test_naming_a_room_or_dm_you_cannot_read_answers_like_a_missing_one(world: World, extra: dict[str, Any], role: str, auth: str) -> None:
    client, headers = _client(auth, world, role)
    missing = _search(client, headers, world.project.slug, f"note in:{MISSING_SLUG}")
    assert missing.status_code == 400 and missing.json()["code"] == "unknown_room"
    targets = [world.private.slug]
    if role == "admin":
        targets.append(extra["dm"].slug)  # someone else's DM
    for slug in targets:
        hidden = _search(client, headers, world.project.slug, f"note in:{slug}")
        assert hidden.status_code == 400
        assert hidden.content == missing.content.replace(MISSING_SLUG.encode(), slug.encode())
    assert world.private.slug == PRIVATE_ROOM_NAME


@pytest.mark.django_db
def test_a_room_of_another_project_is_not_a_room_of_this_one(world: World, extra: dict[str, Any]) -> None:
    """in: names rooms of the project searched: the other project's room "general" is not reachable through it."""
    client, headers = _client("bearer", world, "member")
    response = _search(client, headers, world.project.slug, "other in:general")
    assert response.status_code == 200 and response.json()["items"] == []
    there = _search(client, headers, extra["other"].slug, "note")
    assert {item["message"]["id"] for item in there.json()["items"]} == {m.id for m in extra["other_notes"]}


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
def test_leaving_a_private_room_or_the_project_ends_finding_its_messages(world: World, extra: dict[str, Any], auth: str) -> None:
    insider = world.user("private_member")
    client, headers = _client(auth, world, "private_member")
    private_ids = {m.id for m in world.private_messages}
    assert private_ids <= {i["message"]["id"] for i in _search(client, headers, world.project.slug, "note").json()["items"]}

    room_services.room_member_remove(room=world.private, user=insider, by=insider)
    found = {i["message"]["id"] for i in _search(client, headers, world.project.slug, "note").json()["items"]}
    assert found == {m.id for m in world.public_messages}

    project_services.membership_remove(project=world.project, user=insider, by=insider)
    gone = _search(client, headers, world.project.slug, "note")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
