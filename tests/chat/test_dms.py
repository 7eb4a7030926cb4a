"""Direct messages: get-or-create (under a race too), the API, listing apart from rooms, unread counts,
the pages and the notification of recipients, against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.test import Client

from chat.models import Room, RoomMember
from chat.selectors import dms as dm_selectors
from chat.selectors import rooms as room_selectors
from chat.services import dms as dm_services
from chat.services import rooms as room_services
from chatsite.errors import Forbidden, InvalidInput, NotFound
from chatsite.ratelimit import RateLimited
from projects import services as project_services
from projects.models import Membership
from tests.servers import app_servers, background_worker
from tests.wsclient import ChatSocket

API = "/api/v1"


@pytest.fixture
def people(make_user, make_project) -> dict[str, Any]:
    """Project "team" with alice (owner), bob, carol and eight more members; dave is outside it."""
    alice = make_user("alice", first_name="Alice")
    bob = make_user("bob", first_name="Bob", last_name="Builder")
    carol = make_user("carol")
    extra = [make_user(f"extra{i}") for i in range(8)]
    dave = make_user("dave")
    project = make_project(alice, name="Team", members=(bob, carol, *extra))
    return {"project": project, "alice": alice, "bob": bob, "carol": carol, "extra": extra, "dave": dave}


def post_json(client: Client, path: str, data: Any) -> Any:
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    return client.post(f"{API}{path}", data=body, content_type="application/json")


def slug_of(project) -> str:
    return project.slug


# --- The service --------------------------------------------------------------


def test_the_same_two_people_always_get_the_same_room(people):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    room, created = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    assert created
    assert room.kind == Room.Kind.DM and room.is_private
    assert room.dm_key == ",".join(str(i) for i in sorted([alice.pk, bob.pk]))
    assert room.slug.startswith("dm-") and len(room.slug) == 19
    assert set(RoomMember.objects.filter(room=room).values_list("user_id", flat=True)) == {alice.pk, bob.pk}

    # Bob starting it, by id, with a leading @, or naming himself too: the same room.
    for by, users in ((bob, ["alice"]), (bob, [alice.pk]), (alice, ["@bob"]), (alice, ["bob", "alice", bob.pk])):
        again, created = dm_services.dm_get_or_create(project=project, by=by, users=users)
        assert (again.id, created) == (room.id, False)
    assert Room.objects.filter(project=project, kind=Room.Kind.DM).count() == 1


def test_group_dms_of_up_to_nine_people(people):
    project, alice, extra = people["project"], people["alice"], people["extra"]
    group, created = dm_services.dm_get_or_create(project=project, by=alice, users=[u.username for u in extra])
    assert created and RoomMember.objects.filter(room=group).count() == 9
    # Another set of people is another conversation; the same set in any order is the same one.
    other, created = dm_services.dm_get_or_create(project=project, by=alice, users=["bob", "carol"])
    assert created and other.id != group.id
    same, created = dm_services.dm_get_or_create(project=project, by=people["carol"], users=[alice.pk, "bob"])
    assert (same.id, created) == (other.id, False)

    with pytest.raises(InvalidInput) as too_many:
        dm_services.dm_get_or_create(project=project, by=alice, users=["bob", *(u.username for u in extra)])
    assert too_many.value.code == "too_many_people"
    # Nine names of which one is the starter: nine people, allowed.
    nine, _ = dm_services.dm_get_or_create(project=project, by=people["bob"], users=["alice", *(u.username for u in extra[:7])])
    assert RoomMember.objects.filter(room=nine).count() == 9


def test_notes_to_self(people):
    project, alice = people["project"], people["alice"]
    room, created = dm_services.dm_get_or_create(project=project, by=alice, users=["alice"])
    assert created and room.dm_key == str(alice.pk)
    assert list(RoomMember.objects.filter(room=room).values_list("user_id", flat=True)) == [alice.pk]
    assert dm_services.dm_get_or_create(project=project, by=alice, users=[alice.pk])[0].id == room.id


@pytest.mark.parametrize(
    ("users", "error", "code"),
    [
        ([], InvalidInput, "no_people"),
        ("bob", InvalidInput, "invalid_user"),
        (["  "], InvalidInput, "invalid_user"),
        (["@"], InvalidInput, "invalid_user"),
        ([True], InvalidInput, "invalid_user"),
        ([None], InvalidInput, "invalid_user"),
        ([1.5], InvalidInput, "invalid_user"),
        (["nobody"], NotFound, "user_not_found"),
        (["dave"], NotFound, "user_not_found"),  # exists, but not in the project
        ([2**70], NotFound, "user_not_found"),
        ([-1], NotFound, "user_not_found"),
        (["bob", "nobody"], NotFound, "user_not_found"),
        ([f"u{i}" for i in range(10)], InvalidInput, "too_many_people"),
    ],
)
def test_bad_input_is_a_clear_error_and_creates_nothing(people, users, error, code):
    with pytest.raises(error) as exc:
        dm_services.dm_get_or_create(project=people["project"], by=people["alice"], users=users)
    assert exc.value.code == code and exc.value.message
    assert not Room.objects.filter(kind=Room.Kind.DM).exists()


def test_unknown_users_and_non_members_answer_alike(people):
    project, alice = people["project"], people["alice"]
    answers = []
    for name in ("dave", "no-such-user"):
        with pytest.raises(NotFound) as exc:
            dm_services.dm_get_or_create(project=project, by=alice, users=[name])
        answers.append(exc.value.message.replace(name, "X"))
    assert answers[0] == answers[1] == "No project member named 'X'."


def test_archived_project_refuses_new_dms_but_finds_existing_ones(people):
    project, alice = people["project"], people["alice"]
    existing, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    project.archived = True
    project.save()
    with pytest.raises(Forbidden) as exc:
        dm_services.dm_get_or_create(project=project, by=alice, users=["carol"])
    assert exc.value.code == "archived"
    assert dm_services.dm_get_or_create(project=project, by=alice, users=["bob"]) == (existing, False)


def test_creating_counts_against_the_room_limit_and_finding_does_not(people, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "room_create": "2/3600"}
    project, alice = people["project"], people["alice"]
    dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    for _ in range(5):
        dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    dm_services.dm_get_or_create(project=project, by=alice, users=["carol"])
    with pytest.raises(RateLimited):
        dm_services.dm_get_or_create(project=project, by=alice, users=["bob", "carol"])
    assert Room.objects.filter(kind=Room.Kind.DM).count() == 2


def test_room_create_never_takes_a_dm_slug(people):
    project, alice = people["project"], people["alice"]
    for kwargs in ({"name": "DM planning"}, {"name": "Planning", "slug": "dm-0123456789abcdef"}):
        with pytest.raises(InvalidInput) as exc:
            room_services.room_create(project=project, user=alice, **kwargs)
        assert exc.value.code == "reserved_slug" and "direct messages" in exc.value.message
    # A room whose slug only contains "dm" elsewhere is fine.
    assert room_services.room_create(project=project, user=alice, name="admin dm").slug == "admin-dm"


def test_dm_membership_is_fixed(people):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    with pytest.raises(Forbidden) as added:
        room_services.room_member_add(room=room, username="carol", by=alice)  # alice owns the project
    with pytest.raises(Forbidden) as left:
        room_services.room_member_remove(room=room, user=bob, by=bob)
    with pytest.raises(Forbidden) as removed:
        room_services.room_member_remove(room=room, user=bob, by=alice)
    assert added.value.code == left.value.code == removed.value.code == "dm_members_fixed"
    assert set(RoomMember.objects.filter(room=room).values_list("user_id", flat=True)) == {alice.pk, bob.pk}


def test_leaving_the_project_ends_access_and_coming_back_restores_it(people):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    project_services.membership_remove(project=project, user=bob, by=bob)
    with pytest.raises(NotFound):
        room_selectors.room_get_for_user(user=bob, room_id=room.id)
    # Alice still has the conversation, with Bob's name on it.
    (listed,) = dm_selectors.dms_for_user(user=alice, project=project)
    assert [p["username"] for p in listed.people] == ["bob"]

    Membership.objects.create(project=project, user=bob, role=Membership.Role.MEMBER)
    again, created = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    assert (again.id, created) == (room.id, False)
    assert room_selectors.room_get_for_user(user=bob, room_id=room.id).id == room.id


def test_creating_a_dm_refreshes_every_members_cached_lists(people):
    project, alice, bob, carol = people["project"], people["alice"], people["bob"], people["carol"]
    for user in (alice, bob, carol):
        assert dm_selectors.dms_for_user(user=user, project=project) == []  # cached now
        room_selectors.room_get_for_user(user=user, room_id=Room.objects.get(project=project, slug="general").id)
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob", "carol"])
    for user in (alice, bob, carol):
        assert [d.id for d in dm_selectors.dms_for_user(user=user, project=project)] == [room.id]
        assert room_selectors.room_get_for_user(user=user, room_id=room.id).id == room.id
    assert dm_selectors.dms_for_user(user=people["extra"][0], project=project) == []


@pytest.mark.django_db(transaction=True)
def test_two_people_starting_the_same_dm_at_once_get_one_room(people):
    """Bob's insert waits on Alice's uncommitted one, fails on the unique key when she commits, and finds hers."""
    project, alice, bob = people["project"], people["alice"], people["bob"]
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    alice_inserted, release_alice = threading.Event(), threading.Event()

    def alice_starts() -> None:
        try:
            with transaction.atomic():
                results["alice"] = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
                alice_inserted.set()
                release_alice.wait(30)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
        finally:
            alice_inserted.set()
            connections.close_all()

    def bob_starts() -> None:
        try:
            results["bob"] = dm_services.dm_get_or_create(project=project, by=bob, users=["alice"])
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    first = threading.Thread(target=alice_starts)
    first.start()
    assert alice_inserted.wait(30)
    second = threading.Thread(target=bob_starts)
    second.start()
    try:
        # Bob's insert is blocked on Alice's row lock: the race is real, not sequential.
        deadline = time.monotonic() + 30
        while not _someone_waits_on_a_lock():
            assert time.monotonic() < deadline, "the second insert never waited on the first"
            assert second.is_alive(), "the second starter finished without waiting on the first"
            time.sleep(0.02)
    finally:
        release_alice.set()
        first.join(30)
        second.join(30)
    assert not errors, errors
    room, created = results["alice"]
    assert created
    assert (results["bob"][0].id, results["bob"][1]) == (room.id, False)
    assert Room.objects.filter(project=project, kind=Room.Kind.DM).count() == 1
    assert RoomMember.objects.filter(room=room).count() == 2


def _someone_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_stampede_of_starters_gets_one_room(people):
    project = people["project"]
    starters = [people["alice"], people["bob"], people["carol"], *people["extra"][:5]]
    names = [u.username for u in starters]
    barrier = threading.Barrier(len(starters))
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def start(user: Any) -> None:
        try:
            barrier.wait(10)
            room, created = dm_services.dm_get_or_create(project=project, by=user, users=[n for n in names if n != user.username])
            results.append((room.id, created))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start, args=(u,)) for u in starters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len({room_id for room_id, _ in results}) == 1 and len(results) == len(starters)
    assert sum(created for _, created in results) == 1
    assert Room.objects.filter(project=project, kind=Room.Kind.DM).count() == 1


# --- The API --------------------------------------------------------------------


def test_api_create_then_find(people, api_client):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    created = post_json(api_client(alice), f"/projects/{project.slug}/dms", {"users": ["bob"]})
    assert created.status_code == 201, created.content
    body = created.json()
    room = Room.objects.get(pk=body["id"])
    assert body == {
        "id": room.id,
        "slug": room.slug,
        "project": project.slug,
        "people": [{"id": bob.pk, "username": "bob", "display_name": "Bob Builder"}],
        "last_message_at": None,
        "unread": None,
    }
    found = post_json(api_client(bob), f"/projects/{project.slug}/dms", {"users": [alice.pk]})
    assert found.status_code == 200
    assert found.json()["id"] == room.id
    assert found.json()["people"] == [{"id": alice.pk, "username": "alice", "display_name": "Alice"}]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"users": []}, 400, "no_people"),
        ({"users": ["nobody"]}, 404, "user_not_found"),
        ({"users": ["dave"]}, 404, "user_not_found"),
        ({"users": [f"u{i}" for i in range(10)]}, 400, "too_many_people"),
        ({"users": ["   "]}, 400, "invalid_user"),
        ({"users": [2**63]}, 404, "user_not_found"),  # more than any id
        (b'{"users": [1180591620717411303424]}', 400, "invalid_user"),  # no integer of ours
        ({"users": [True]}, 400, "invalid_user"),
        ({"users": [None, None, None, None, None, None, None, None, None]}, 400, "invalid_user"),
        ({"users": [{"username": "bob"}]}, 400, "invalid_user"),
        ({"users": ["bo\x00b"]}, 400, "invalid_user"),
        ({"users": "bob"}, 422, "validation_error"),
        ({}, 422, "validation_error"),
    ],
)
def test_api_bad_input_is_4xx(people, api_client, payload, status, code):
    response = post_json(api_client(people["alice"]), f"/projects/{people['project'].slug}/dms", payload)
    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    assert response.json()["detail"]
    assert not Room.objects.filter(kind=Room.Kind.DM).exists()


def test_api_outsiders_and_anonymous(people, api_client):
    slug = people["project"].slug
    outsider = post_json(api_client(people["dave"]), f"/projects/{slug}/dms", {"users": ["alice"]})
    assert (outsider.status_code, outsider.json()["code"]) == (404, "not_found")
    assert api_client(people["dave"]).get(f"{API}/projects/{slug}/dms").status_code == 404
    assert post_json(api_client(None), f"/projects/{slug}/dms", {"users": ["alice"]}).status_code == 401
    assert api_client(None).get(f"{API}/projects/{slug}/dms").status_code == 401


def test_api_member_changes_on_a_dm_are_refused(people, api_client):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    added = post_json(api_client(alice), f"/rooms/{room.id}/members", {"username": "carol"})
    assert (added.status_code, added.json()["code"]) == (403, "dm_members_fixed")
    left = api_client(bob).delete(f"{API}/rooms/{room.id}/members/{bob.pk}")
    assert (left.status_code, left.json()["code"]) == (403, "dm_members_fixed")
    assert RoomMember.objects.filter(room=room).count() == 2


def test_rooms_and_dms_are_listed_apart(people, api_client, make_message):
    project, alice, bob, carol = people["project"], people["alice"], people["bob"], people["carol"]
    one, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    group, _ = dm_services.dm_get_or_create(project=project, by=carol, users=["alice", "bob"])
    quiet, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["alice"])
    make_message(group, carol, body="first")
    make_message(one, bob, body="newest")
    make_message(one, bob, body="newest again")
    client = api_client(alice)

    rooms = client.get(f"{API}/projects/{project.slug}/rooms").json()["items"]
    assert [r["slug"] for r in rooms] == ["general"]

    dms = client.get(f"{API}/projects/{project.slug}/dms").json()
    assert dms["next_cursor"] is None
    assert [d["id"] for d in dms["items"]] == [one.id, group.id, quiet.id]  # newest activity first
    by_id = {d["id"]: d for d in dms["items"]}
    assert by_id[one.id]["unread"] == 2 and by_id[group.id]["unread"] == 1 and by_id[quiet.id]["unread"] == 0
    assert [p["username"] for p in by_id[group.id]["people"]] == ["bob", "carol"]
    assert by_id[quiet.id]["people"] == []
    assert by_id[one.id]["last_message_at"] is not None and by_id[quiet.id]["last_message_at"] is None

    # Reading one DM through the room endpoint clears its count; Bob's own messages are never unread for him.
    newest = client.get(f"{API}/rooms/{one.id}/messages").json()["items"][-1]["id"]
    assert post_json(client, f"/rooms/{one.id}/read", {"last_id": newest}).status_code == 200
    assert {d["id"]: d["unread"] for d in client.get(f"{API}/projects/{project.slug}/dms").json()["items"]}[one.id] == 0
    bobs = api_client(bob).get(f"{API}/projects/{project.slug}/dms").json()["items"]
    assert [(d["id"], d["unread"]) for d in bobs] == [(one.id, 0), (group.id, 1)]
    # Carol is not in the 1:1: she sees only the group.
    assert [d["id"] for d in api_client(carol).get(f"{API}/projects/{project.slug}/dms").json()["items"]] == [group.id]


def test_dm_list_pages_by_activity(people, api_client, make_message):
    project, alice = people["project"], people["alice"]
    made = [dm_services.dm_get_or_create(project=project, by=alice, users=[u.username])[0] for u in people["extra"][:5]]
    make_message(made[1], alice)
    make_message(made[3], alice)
    client = api_client(alice)
    expected = [d["id"] for d in client.get(f"{API}/projects/{project.slug}/dms").json()["items"]]
    assert expected[:2] == [made[3].id, made[1].id] and sorted(expected) == sorted(r.id for r in made)

    seen, cursor = [], None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = client.get(f"{API}/projects/{project.slug}/dms{query}").json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected

    fields = client.get(f"{API}/projects/{project.slug}/dms?fields=id,unread").json()["items"]
    assert set(fields[0]) == {"id", "unread"}
    bad = client.get(f"{API}/projects/{project.slug}/dms?cursor=garbage")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")
    bad = client.get(f"{API}/projects/{project.slug}/dms?fields=nope")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_fields")


@pytest.mark.parametrize("count", [1, 20])
def test_dm_list_query_count_does_not_grow(people, make_user, api_client, make_message, django_assert_num_queries, count):
    project, alice = people["project"], people["alice"]
    partners = [make_user(f"partner{i}") for i in range(count)]
    for user in partners:
        Membership.objects.create(project=project, user=user, role=Membership.Role.MEMBER)
        room, _ = dm_services.dm_get_or_create(project=project, by=user, users=["alice"])
        make_message(room, user, body="hi alice")
    client = api_client(alice)
    cache.clear()
    # Cold: token -> user, project, membership, the room list, room counters and
    # markers, the unread tails, the profiles of the people.
    with django_assert_num_queries(7):
        cold = client.get(f"{API}/projects/{project.slug}/dms?limit=100")
    # Warm: room counters and markers only.
    with django_assert_num_queries(1):
        warm = client.get(f"{API}/projects/{project.slug}/dms?limit=100")
    assert cold.json() == warm.json()
    assert len(warm.json()["items"]) == count and all(d["unread"] == 1 for d in warm.json()["items"])


def test_a_dm_works_as_a_room_for_its_members(people, api_client):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    sent = post_json(api_client(alice), f"/rooms/{room.id}/messages", {"body": "hi bob", "client_id": "dm-1"})
    assert sent.status_code == 201
    history = api_client(bob).get(f"{API}/rooms/{room.id}/messages").json()["items"]
    assert [m["body"] for m in history] == ["hi bob"]
    assert api_client(bob).get(f"{API}/rooms/{room.id}").json()["is_private"] is True
    assert api_client(people["carol"]).get(f"{API}/rooms/{room.id}/messages").status_code == 404


# --- Pages ----------------------------------------------------------------------


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_sidebar_lists_dms_under_rooms_with_badges(people, make_message):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    room, _ = dm_services.dm_get_or_create(project=project, by=bob, users=["alice", "carol"])
    make_message(room, bob, body="hello both")
    page = logged_in(alice).get(f"/p/{project.slug}/r/general/")
    html = page.content.decode()
    assert page.status_code == 200
    rooms_at, dms_at = html.index("<h2 class=\"nav-heading\">Rooms</h2>"), html.index("Direct messages</h2>")
    link_at = html.index(f'data-room-id="{room.id}"')
    assert rooms_at < dms_at < link_at
    assert f'href="/p/{project.slug}/r/{room.slug}/"' in html
    assert "Bob Builder, carol" in html[dms_at:]
    assert 'data-unread="1"' in html[link_at : html.index("</a>", link_at)]
    assert room.id in page.context["chat_config"]["other_rooms"]
    assert [r.slug for r in page.context["rooms"]] == ["general"]
    # The project page lists it too.
    project_page = logged_in(alice).get(f"/p/{project.slug}/").content.decode()
    assert 'id="dm-table"' in project_page and f'data-room-id="{room.id}"' in project_page


def test_dm_page_shows_the_people_and_no_member_form(people, make_message):
    project, alice, bob = people["project"], people["alice"], people["bob"]
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    page = logged_in(alice).get(f"/p/{project.slug}/r/{room.slug}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "<title>Bob Builder · Team" in html
    assert 'id="dm-people"' in html and "@bob" in html
    assert "room-member-form" not in html and "Members (" not in html
    # A conversation, not a channel: no "#" before the people's names.
    assert 'placeholder="Message Bob Builder"' in html and "beginning of your conversation with Bob Builder" in html
    assert page.context["chat_config"]["room"] == room.id
    assert "Alice" in logged_in(bob).get(f"/p/{project.slug}/r/{room.slug}/").content.decode()
    # Nobody else reads it; its member form does not exist.
    assert logged_in(people["carol"]).get(f"/p/{project.slug}/r/{room.slug}/").status_code == 404
    refused = logged_in(alice).post(f"/p/{project.slug}/r/{room.slug}/members/", {"username": "carol"})
    assert refused.status_code == 404
    assert RoomMember.objects.filter(room=room).count() == 2


def test_new_message_form_opens_the_dm(people):
    project, alice = people["project"], people["alice"]
    client = logged_in(alice)
    response = client.post(f"/p/{project.slug}/dms/", {"users": "@bob, carol"})
    room = Room.objects.get(project=project, kind=Room.Kind.DM)
    assert response.status_code == 302 and response["Location"] == f"/p/{project.slug}/r/{room.slug}/"
    again = client.post(f"/p/{project.slug}/dms/", {"users": "carol bob"})
    assert again["Location"] == response["Location"]
    assert Room.objects.filter(project=project, kind=Room.Kind.DM).count() == 1


@pytest.mark.parametrize(("users", "error"), [("nobody", "No project member named"), (" , ", "Name at least one person")])
def test_new_message_form_errors_show_on_the_project_page(people, users, error):
    project = people["project"]
    response = logged_in(people["alice"]).post(f"/p/{project.slug}/dms/", {"users": users})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Room.objects.filter(kind=Room.Kind.DM).exists()


def test_new_message_form_is_for_members_only(people):
    response = logged_in(people["dave"]).post(f"/p/{people['project'].slug}/dms/", {"users": "alice"})
    assert response.status_code == 404
    assert not Room.objects.filter(kind=Room.Kind.DM).exists()


def test_a_new_dm_changes_the_room_page_etag(people):
    project, alice = people["project"], people["alice"]
    client = logged_in(alice)
    first = client.get(f"/p/{project.slug}/r/general/")
    assert client.get(f"/p/{project.slug}/r/general/", headers={"If-None-Match": first["ETag"]}).status_code == 304
    dm_services.dm_get_or_create(project=project, by=people["bob"], users=["alice"])
    fresh = client.get(f"/p/{project.slug}/r/general/", headers={"If-None-Match": first["ETag"]})
    assert fresh.status_code == 200 and "Bob Builder" in fresh.content.decode()


# --- Notifications --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_dm_notifies_its_other_members_as_a_mention(people, make_token):
    project, alice = people["project"], people["alice"]
    group, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob", "carol"])
    general = Room.objects.get(project=project, slug="general")
    tokens = {name: make_token(people[name]) for name in ("alice", "bob", "carol")}
    outsider_token = make_token(people["extra"][0])

    async def scenario(port: int) -> None:
        alice_ws = await ChatSocket.open(port, tokens["alice"])
        bob_ws = await ChatSocket.open(port, tokens["bob"])  # follows no room at all
        carol_ws = await ChatSocket.open(port, tokens["carol"])
        extra_ws = await ChatSocket.open(port, outsider_token)
        await alice_ws.send({"type": "message.send", "room": group.id, "body": "lunch?", "client_id": "dm-n1"})
        ack, _ = await alice_ws.until("message.ack")
        for ws in (bob_ws, carol_ws):
            note, _ = await ws.until("mention")
            assert note["room"] == group.id and note["dm"] is True and note["room_slug"] == group.slug
            assert note["message"]["id"] == ack["id"] and note["message"]["body"] == "lunch?"
        # Someone outside the DM hears nothing of it: their next notification is a later mention in a room.
        await alice_ws.send({"type": "message.send", "room": general.id, "body": "@extra0 see general", "client_id": "dm-n2"})
        later, _ = await alice_ws.until("message.ack")
        note, _ = await extra_ws.until("mention")
        assert note["message"]["id"] == later["id"] and note["dm"] is False
        # The author is not notified of their own message.
        await bob_ws.send({"type": "message.send", "room": group.id, "body": "yes", "client_id": "dm-n3"})
        reply, _ = await bob_ws.until("message.ack")
        note, before = await alice_ws.until("mention")
        assert note["message"]["id"] == reply["id"]
        assert all(e.get("message", {}).get("id") != ack["id"] for e in before if e["type"] == "mention")
        for ws in (alice_ws, bob_ws, carol_ws, extra_ws):
            await ws.close()

    with app_servers(1) as servers, background_worker():
        asyncio.run(scenario(servers[0][0]))


def test_the_writer_knows_which_rooms_are_dms(people, django_assert_num_queries):
    project, alice = people["project"], people["alice"]
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["bob"])
    general = Room.objects.get(project=project, slug="general")
    by_id = [Room(id=general.id), Room(id=room.id), Room(id=987_654_321)]  # as the socket's sends know them
    assert room_selectors.rooms_dm_ids(rooms=by_id) == {room.id}
    cache.clear()
    with django_assert_num_queries(0):  # a room's kind never changes: the process keeps what it learned
        assert room_selectors.rooms_dm_ids(rooms=by_id[:2]) == {room.id}
    # A loaded room answers itself.
    other, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["carol"])
    with django_assert_num_queries(0):
        assert room_selectors.rooms_dm_ids(rooms=[other, general]) == {other.id}


def test_the_writer_learns_a_rooms_kind_by_id_once(people, django_assert_num_queries):
    project, alice = people["project"], people["alice"]
    room, _ = dm_services.dm_get_or_create(project=project, by=alice, users=["carol"])
    cache.clear()
    with django_assert_num_queries(1):
        assert room_selectors.rooms_dm_ids(rooms=[Room(id=room.id)]) == {room.id}
    cache.clear()
    with django_assert_num_queries(0):
        assert room_selectors.rooms_dm_ids(rooms=[Room(id=room.id)]) == {room.id}
