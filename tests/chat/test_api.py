"""The rooms and messages endpoints of /api/v1/, against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import base64
import re

import orjson
import psycopg
import pytest
from django.core.cache import cache
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from chat import events
from chat.services import messages as message_services
from chatsite.api_schemas import page_cursor_decode, page_cursor_encode
from chat.models import Message, ReadMarker, Room, RoomMember
from chatsite.errors import InvalidInput

API = "/api/v1"


def post_json(client, path: str, data, method: str = "post"):
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    return getattr(client, method)(f"{API}{path}", data=body, content_type="application/json")


def ids(response) -> list[int]:
    return [item["id"] for item in response.json()["items"]]


def raw_cursor(data) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode()


# --- Cursor codec -----------------------------------------------------------


def test_page_cursor_round_trip():
    cursor = page_cursor_encode({"b": 12345})
    assert "=" not in cursor
    assert page_cursor_decode(cursor, fields={"b": int, "a": int}) == {"b": 12345}


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "x" * 600,
        raw_cursor([1]),
        raw_cursor({}),
        raw_cursor({"b": "1"}),
        raw_cursor({"b": -1}),
        raw_cursor({"b": True}),
        raw_cursor({"b": 2**63}),
        raw_cursor({"z": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_page_cursor_decode_refuses_what_we_never_issue(cursor):
    with pytest.raises(InvalidInput) as exc:
        page_cursor_decode(cursor, fields={"b": int, "a": int})
    assert exc.value.code == "invalid_cursor"


# --- Rooms ------------------------------------------------------------------


def test_room_list_shows_readable_rooms_with_unread(chat_world, api_client, make_message):
    public, private = chat_world["public"], chat_world["private"]
    make_message(public, chat_world["owner"])
    make_message(public, chat_world["owner"])
    make_message(public, chat_world["member"])  # own messages are never unread

    response = api_client(chat_world["member"]).get(f"{API}/projects/world/rooms")
    assert response.status_code == 200
    data = response.json()
    assert data["next_cursor"] is None
    assert [r["slug"] for r in data["items"]] == ["general"]
    room = data["items"][0]
    assert room["id"] == public.id and room["unread"] == 2 and room["project"] == "world"
    assert room["is_private"] is False and room["name"] == "general" and room["last_message_at"]

    insider = api_client(chat_world["insider"]).get(f"{API}/projects/world/rooms").json()
    assert [r["id"] for r in insider["items"]] == [public.id, private.id]


@pytest.mark.parametrize("who", ["outsider", "staff"])
def test_room_list_of_foreign_project_is_404(chat_world, api_client, who):
    response = api_client(chat_world[who]).get(f"{API}/projects/world/rooms")
    assert response.status_code == 404
    assert response.json() == {"detail": "Project not found.", "code": "not_found"}


def test_room_list_unknown_project_is_404(chat_world, api_client):
    assert api_client(chat_world["member"]).get(f"{API}/projects/nope/rooms").status_code == 404


def test_room_list_pages_by_id(chat_world, api_client, make_room):
    project = chat_world["project"]
    for name in ("zeta", "alpha", "mid", "beta"):
        make_room(project, name=name)
    client = api_client(chat_world["member"])
    expected = sorted(Room.objects.filter(project=project, is_private=False).values_list("id", flat=True))

    seen, cursor, pages = [], None, 0
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        response = client.get(f"{API}/projects/world/rooms{query}")
        assert response.status_code == 200
        seen += ids(response)
        pages += 1
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3


def test_room_list_query_count_does_not_grow(chat_world, api_client, make_room, django_assert_num_queries):
    for i in range(6):
        make_room(chat_world["project"], name=f"extra {i}")
    client = api_client(chat_world["member"])
    # Cold: token -> user, project, membership, the room list, room counters
    # and markers, one grouped unread count.
    with django_assert_num_queries(6):
        client.get(f"{API}/projects/world/rooms?limit=1")
    # Warm: room counters and markers; the token, project, list and counts are cached. A page
    # reads the unread state of its own rooms only, so the large page's are cached by its first read.
    client.get(f"{API}/projects/world/rooms?limit=100")
    with django_assert_num_queries(1):
        small = client.get(f"{API}/projects/world/rooms?limit=1")
    with django_assert_num_queries(1):
        large = client.get(f"{API}/projects/world/rooms?limit=100")
    assert len(small.json()["items"]) == 1 and len(large.json()["items"]) == 7


def test_room_list_bad_cursor_and_limit(chat_world, api_client):
    client = api_client(chat_world["member"])
    bad = client.get(f"{API}/projects/world/rooms?cursor=garbage")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    assert client.get(f"{API}/projects/world/rooms?limit=0").status_code == 422
    assert client.get(f"{API}/projects/world/rooms?limit=abc").status_code == 422


def test_room_create(chat_world, api_client):
    response = post_json(
        api_client(chat_world["member"]),
        "/projects/world/rooms",
        {"name": "Design Review", "topic": "pixels", "is_private": True},
    )
    assert response.status_code == 201
    data = response.json()
    assert data["slug"] == "design-review" and data["topic"] == "pixels" and data["is_private"] is True
    assert data["unread"] == 0 and data["project"] == "world"
    room = Room.objects.get(pk=data["id"])
    assert RoomMember.objects.filter(room=room, user=chat_world["member"]).exists()
    # Private: another member cannot see it.
    assert api_client(chat_world["owner"]).get(f"{API}/rooms/{room.id}").status_code == 404


def test_room_create_errors(chat_world, api_client):
    client = api_client(chat_world["member"])
    taken = post_json(client, "/projects/world/rooms", {"name": "general"})
    assert taken.status_code == 409 and taken.json()["code"] == "slug_taken"
    assert post_json(client, "/projects/world/rooms", {"name": "   "}).status_code == 400
    assert post_json(client, "/projects/world/rooms", {"name": "x" * 101}).status_code == 400
    assert post_json(client, "/projects/world/rooms", {"topic": "no name"}).status_code == 422
    assert post_json(client, "/projects/world/rooms", {"name": "x", "is_private": "yes"}).status_code == 422
    assert post_json(client, "/projects/world/rooms", b"{oops").status_code == 400
    outsider = post_json(api_client(chat_world["outsider"]), "/projects/world/rooms", {"name": "sneaky"})
    assert outsider.status_code == 404
    assert not Room.objects.filter(slug="sneaky").exists()


def test_room_create_in_archived_project_is_403(chat_world, api_client):
    project = chat_world["project"]
    project.archived = True
    project.save()
    response = post_json(api_client(chat_world["member"]), "/projects/world/rooms", {"name": "late"})
    assert response.status_code == 403
    assert response.json()["code"] == "archived"


def test_room_detail(chat_world, api_client):
    public, private = chat_world["public"], chat_world["private"]
    member = api_client(chat_world["member"])
    response = member.get(f"{API}/rooms/{public.id}")
    assert response.status_code == 200
    assert response.json()["slug"] == "general"
    assert member.get(f"{API}/rooms/{private.id}").status_code == 404
    assert api_client(chat_world["insider"]).get(f"{API}/rooms/{private.id}").status_code == 200
    assert api_client(chat_world["outsider"]).get(f"{API}/rooms/{public.id}").status_code == 404
    assert api_client(chat_world["staff"]).get(f"{API}/rooms/{public.id}").status_code == 404


@pytest.mark.parametrize(
    "room_id,status", [("999999", 404), ("99999999999999999999999", 404), ("abc", 422), ("-1", 404)]
)
def test_room_detail_bad_ids(chat_world, api_client, room_id, status):
    response = api_client(chat_world["member"]).get(f"{API}/rooms/{room_id}")
    assert response.status_code == status
    assert response.json()["code"] in ("not_found", "validation_error")


def test_room_member_add_to_private_room(chat_world, api_client):
    private = chat_world["private"]
    response = post_json(api_client(chat_world["insider"]), f"/rooms/{private.id}/members", {"username": "member"})
    assert response.status_code == 201
    assert response.json() == {
        "room": private.id,
        "user": {"id": chat_world["member"].id, "username": "member", "display_name": "member"},
    }
    assert api_client(chat_world["member"]).get(f"{API}/rooms/{private.id}").status_code == 200


def test_room_member_add_errors(chat_world, api_client):
    private, public = chat_world["private"], chat_world["public"]
    insider = api_client(chat_world["insider"])
    # Not a project member, or no such user: the same 404.
    outsider = post_json(insider, f"/rooms/{private.id}/members", {"username": "outsider"})
    assert outsider.status_code == 404 and outsider.json()["code"] == "user_not_found"
    assert post_json(insider, f"/rooms/{private.id}/members", {"username": "ghost"}).status_code == 404
    assert post_json(insider, f"/rooms/{private.id}/members", {}).status_code == 422
    assert post_json(insider, f"/rooms/{private.id}/members", {"username": 7}).status_code == 422
    # A member who cannot see the private room cannot learn it exists.
    member = api_client(chat_world["member"])
    assert post_json(member, f"/rooms/{private.id}/members", {"username": "admin1"}).status_code == 404
    # Seeing a public room is not enough to invite to it: room members and admins only.
    forbidden = post_json(member, f"/rooms/{public.id}/members", {"username": "insider"})
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"


def test_room_member_leave_and_remove(chat_world, api_client):
    private = chat_world["private"]
    insider, member = chat_world["insider"], chat_world["member"]
    assert post_json(api_client(insider), f"/rooms/{private.id}/members", {"username": "member"}).status_code == 201
    assert post_json(api_client(insider), f"/rooms/{private.id}/members", {"username": "admin1"}).status_code == 201
    # a room member who is not a project admin removes nobody else
    refused = api_client(insider).delete(f"{API}/rooms/{private.id}/members/{member.id}")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    # a project admin in the room does; then the member no longer sees the room
    assert api_client(chat_world["admin"]).delete(f"{API}/rooms/{private.id}/members/{member.id}").status_code == 204
    gone = api_client(member).get(f"{API}/rooms/{private.id}")
    assert gone.status_code == 404
    # leaving: the admin leaves; the last member cannot
    assert api_client(chat_world["admin"]).delete(f"{API}/rooms/{private.id}/members/{chat_world['admin'].id}").status_code == 204
    last = api_client(insider).delete(f"{API}/rooms/{private.id}/members/{insider.id}")
    assert last.status_code == 409 and last.json()["code"] == "last_member"
    # someone who cannot see the room learns nothing: the room's own 404
    hidden = api_client(member).delete(f"{API}/rooms/{private.id}/members/{insider.id}")
    assert hidden.status_code == 404 and hidden.json() == {"detail": "Room not found.", "code": "not_found"}
    # a user who is not a member of the room
    absent = api_client(insider).delete(f"{API}/rooms/{private.id}/members/{chat_world['outsider'].id}")
    assert absent.status_code == 404 and absent.json()["code"] == "not_a_member"


def test_room_read_marker(chat_world, api_client, make_message):
    public = chat_world["public"]
    messages = [make_message(public, chat_world["owner"]) for _ in range(3)]
    client = api_client(chat_world["member"])

    response = post_json(client, f"/rooms/{public.id}/read", {"last_id": messages[1].id})
    assert response.status_code == 200
    assert response.json() == {"last_id": messages[1].id}
    rooms = client.get(f"{API}/projects/world/rooms").json()["items"]
    assert rooms[0]["unread"] == 1

    # Clamped to the newest message; never moves back.
    assert post_json(client, f"/rooms/{public.id}/read", {"last_id": 10**12}).json() == {"last_id": messages[2].id}
    post_json(client, f"/rooms/{public.id}/read", {"last_id": messages[0].id})
    assert ReadMarker.objects.get(room=public, user=chat_world["member"]).last_read_message_id == messages[2].id


def test_room_read_marker_errors(chat_world, api_client):
    public = chat_world["public"]
    client = api_client(chat_world["member"])
    for body in ({}, {"last_id": -1}, {"last_id": "5"}, {"last_id": 1.5}, {"last_id": True}, {"last_id": None}):
        response = post_json(client, f"/rooms/{public.id}/read", body)
        assert response.status_code == 422, body
        assert "last_id" in response.json()["detail"]
    assert post_json(api_client(chat_world["outsider"]), f"/rooms/{public.id}/read", {"last_id": 1}).status_code == 404


# --- Messages: reading -------------------------------------------------------


def test_message_list_empty_room(chat_world, api_client):
    response = api_client(chat_world["member"]).get(f"{API}/rooms/{chat_world['public'].id}/messages")
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


def test_message_list_default_is_newest_page_oldest_first(chat_world, api_client, seed_messages):
    public = chat_world["public"]
    messages = seed_messages(public, [chat_world["owner"], chat_world["member"]], 60)
    response = api_client(chat_world["member"]).get(f"{API}/rooms/{public.id}/messages")
    assert response.status_code == 200
    assert ids(response) == [m.id for m in messages[-50:]]
    first = response.json()["items"][0]
    assert set(first) == {"id", "room", "seq", "author", "body", "html", "created_at", "edited_at", "deleted", "client_id", "reactions", "thread_root", "thread"}
    assert first["author"]["username"] in ("owner", "member")
    assert page_cursor_decode(response.json()["next_cursor"], fields={"b": int}) == {"b": messages[10].id}


def test_history_walks_back_through_every_message_while_new_ones_arrive(
    chat_world, api_client, seed_messages, make_message
):
    public = chat_world["public"]
    authors = [chat_world["owner"], chat_world["member"], chat_world["admin"]]
    seeded = seed_messages(public, authors, 120)
    client = api_client(chat_world["member"])

    seen, cursor, fetched_pages = [], None, []
    while True:
        query = f"?limit=50&cursor={cursor}" if cursor else "?limit=50"
        response = client.get(f"{API}/rooms/{public.id}/messages{query}")
        assert response.status_code == 200
        page = ids(response)
        assert page == sorted(page)
        fetched_pages.append(len(page))
        seen = page + seen
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
        # Traffic between page fetches must not shift the pages.
        make_message(public, chat_world["owner"], body="arrived while paging")
    assert fetched_pages == [50, 50, 20]
    assert seen == [m.id for m in seeded]
    assert len(set(seen)) == 120


def test_history_page_ending_exactly_at_the_first_message_has_no_cursor(chat_world, api_client, seed_messages):
    public = chat_world["public"]
    seeded = seed_messages(public, [chat_world["owner"]], 4)
    client = api_client(chat_world["member"])
    first = client.get(f"{API}/rooms/{public.id}/messages?limit=2").json()
    second = client.get(f"{API}/rooms/{public.id}/messages?limit=2&cursor={first['next_cursor']}").json()
    assert [m["id"] for m in second["items"]] == [seeded[0].id, seeded[1].id]
    assert second["next_cursor"] is None


def test_after_catches_up_forward(chat_world, api_client, seed_messages, make_message):
    public = chat_world["public"]
    seeded = seed_messages(public, [chat_world["owner"], chat_world["member"]], 7)
    client = api_client(chat_world["member"])

    response = client.get(f"{API}/rooms/{public.id}/messages?after={seeded[1].id}&limit=3")
    assert ids(response) == [m.id for m in seeded[2:5]]
    cursor = response.json()["next_cursor"]
    assert page_cursor_decode(cursor, fields={"a": int}) == {"a": seeded[4].id}

    late = make_message(public, chat_world["owner"], body="late")
    response = client.get(f"{API}/rooms/{public.id}/messages?limit=3&cursor={cursor}")
    assert ids(response) == [seeded[5].id, seeded[6].id, late.id]
    assert response.json()["next_cursor"] is None  # caught up

    response = client.get(f"{API}/rooms/{public.id}/messages?after={late.id}")
    assert response.json() == {"items": [], "next_cursor": None}
    assert ids(client.get(f"{API}/rooms/{public.id}/messages?after=0&limit=2")) == [seeded[0].id, seeded[1].id]


def test_deleted_messages_are_tombstones_in_history(chat_world, api_client, make_message):
    public = chat_world["public"]
    message = make_message(public, chat_world["member"], body="regret")
    client = api_client(chat_world["member"])
    assert client.delete(f"{API}/messages/{message.id}").status_code == 204
    item = client.get(f"{API}/rooms/{public.id}/messages").json()["items"][0]
    assert item["id"] == message.id and item["deleted"] is True and item["body"] == ""


def test_limit_is_clamped_to_100(chat_world, api_client, seed_messages):
    public = chat_world["public"]
    seed_messages(public, [chat_world["owner"]], 105)
    response = api_client(chat_world["member"]).get(f"{API}/rooms/{public.id}/messages?limit=5000")
    assert response.status_code == 200
    assert len(response.json()["items"]) == 100
    assert response.json()["next_cursor"] is not None


@pytest.mark.parametrize("query", ["limit=0", "limit=-5", "limit=abc", "after=-1", "after=x", "limit="])
def test_bad_query_parameters_are_422(chat_world, api_client, query):
    response = api_client(chat_world["member"]).get(f"{API}/rooms/{chat_world['public'].id}/messages?{query}")
    assert response.status_code == 422
    assert query.split("=")[0] in response.json()["detail"]


@pytest.mark.parametrize(
    "cursor",
    ["garbage", raw_cursor({"b": "x"}), raw_cursor({"a": 1, "b": 2}), raw_cursor({"i": 3}), raw_cursor({"b": -3})],
)
def test_undecodable_cursor_is_400(chat_world, api_client, cursor):
    response = api_client(chat_world["member"]).get(f"{API}/rooms/{chat_world['public'].id}/messages?cursor={cursor}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


def test_cursor_and_after_together_is_400(chat_world, api_client):
    cursor = page_cursor_encode({"b": 10})
    response = api_client(chat_world["member"]).get(
        f"{API}/rooms/{chat_world['public'].id}/messages?cursor={cursor}&after=3"
    )
    assert response.status_code == 400


def test_message_list_hidden_rooms_are_404(chat_world, api_client, make_message):
    make_message(chat_world["private"], chat_world["insider"], body="secret plans")
    member = api_client(chat_world["member"])
    response = member.get(f"{API}/rooms/{chat_world['private'].id}/messages")
    assert response.status_code == 404
    assert b"secret" not in response.content
    assert api_client(chat_world["outsider"]).get(f"{API}/rooms/{chat_world['public'].id}/messages").status_code == 404
    assert member.get(f"{API}/rooms/424242/messages").status_code == 404


def test_message_list_query_count_does_not_grow_with_page_size(
    chat_world, api_client, seed_messages, django_assert_num_queries
):
    public = chat_world["public"]
    authors = [chat_world["owner"], chat_world["member"], chat_world["admin"], chat_world["insider"]]
    seed_messages(public, authors, 110)
    client = api_client(chat_world["member"])
    # Cold cache: token -> user, room, project role, the page's ids, the
    # messages, their reactions, their threads, their authors' profiles; the same for 1 and for 100 messages.
    cache.clear()
    with django_assert_num_queries(8):
        client.get(f"{API}/rooms/{public.id}/messages?limit=1")
    cache.clear()
    with django_assert_num_queries(8):
        client.get(f"{API}/rooms/{public.id}/messages?limit=100")
    client.get(f"{API}/rooms/{public.id}/messages?limit=1")  # rendered again: the clear above dropped it

    def sizes(query: str, queries: int) -> list[list[dict]]:
        pages = []
        for limit in (1, 100):
            with django_assert_num_queries(queries):
                pages.append(client.get(f"{API}/rooms/{public.id}/messages?limit={limit}{query}").json()["items"])
        assert [len(items) for items in pages] == [1, 100]
        return pages

    # Warm: token, room, access and the rendered page come from the cache.
    _, large = sizes("", 0)
    assert {m["author"]["username"] for m in large} == {"owner", "member", "admin1", "insider"}
    # A page that is not cached rendered (forward from an id): the page's ids
    # (an index-only scan); messages and profiles from the cache.
    sizes("&after=0", 1)


# --- Messages: writing ------------------------------------------------------


def test_message_create(chat_world, api_client):
    public = chat_world["public"]
    response = post_json(api_client(chat_world["member"]), f"/rooms/{public.id}/messages", {"body": "hello"})
    assert response.status_code == 201
    data = response.json()
    message = Message.objects.get()
    assert data["id"] == message.id and data["room"] == public.id and data["seq"] == 1
    assert data["body"] == "hello" and data["deleted"] is False and data["client_id"] is None
    assert data["author"] == {"id": chat_world["member"].id, "username": "member", "display_name": "member"}


def test_message_create_broadcasts_to_the_room_after_commit(chat_world, api_client, django_capture_on_commit_callbacks):
    public = chat_world["public"]
    client = api_client(chat_world["member"])
    layer = get_channel_layer()

    def post():
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = post_json(client, f"/rooms/{public.id}/messages", {"body": "live"})
        return response, callbacks

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add(events.room_group(public.id), channel)
        try:
            response, callbacks = await sync_to_async(post)()
            event = await asyncio.wait_for(layer.receive(channel), timeout=10)
        finally:
            await layer.group_discard(events.room_group(public.id), channel)
        return response, callbacks, event

    response, callbacks, event = async_to_sync(scenario)()
    assert response.status_code == 201
    # One after-commit callback (message_services._messages_created) makes the event.
    assert len([c for c in callbacks if getattr(c, "func", None) is message_services._messages_created]) == 1
    frame = orjson.loads(event["text"])
    assert frame["type"] == "message.new"
    assert frame["message"] == response.json()


def test_rejected_message_broadcasts_nothing(chat_world, api_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_json(
            api_client(chat_world["member"]), f"/rooms/{chat_world['public'].id}/messages", {"body": " "}
        )
    assert response.status_code == 400
    assert callbacks == []


def test_duplicate_client_id_returns_the_original(chat_world, api_client):
    public = chat_world["public"]
    client = api_client(chat_world["member"])
    first = post_json(client, f"/rooms/{public.id}/messages", {"body": "once", "client_id": "c-77"})
    again = post_json(client, f"/rooms/{public.id}/messages", {"body": "once (retry)", "client_id": "c-77"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert Message.objects.count() == 1


def test_client_id_reused_in_another_room_is_409(chat_world, api_client):
    client = api_client(chat_world["insider"])
    post_json(client, f"/rooms/{chat_world['public'].id}/messages", {"body": "a", "client_id": "same"})
    response = post_json(client, f"/rooms/{chat_world['private'].id}/messages", {"body": "b", "client_id": "same"})
    assert response.status_code == 409
    assert response.json()["code"] == "client_id_reused"


@pytest.mark.parametrize(
    "payload,status,code",
    [
        ({}, 422, "validation_error"),
        ({"client_id": "x"}, 422, "validation_error"),
        ({"body": 5}, 422, "validation_error"),
        ({"body": None}, 422, "validation_error"),
        ({"body": ["hi"]}, 422, "validation_error"),
        ({"body": "hi", "client_id": 5}, 422, "validation_error"),
        ({"body": "nul\x00byte"}, 422, "validation_error"),
        ({"body": "hi", "client_id": "\x00"}, 422, "validation_error"),
        ({"body": ""}, 400, "empty_body"),
        ({"body": " \n\t"}, 400, "empty_body"),
        ({"body": "x" * 10_001}, 400, "body_too_long"),
        ({"body": "hi", "client_id": "c" * 65}, 400, "invalid_client_id"),
        (b"", 422, "validation_error"),
        (b"{\"body\": \"unterminated", 400, "malformed_body"),
        (b"[\"body\"]", 422, "validation_error"),
    ],
)
def test_message_create_bad_input(chat_world, api_client, payload, status, code):
    response = post_json(api_client(chat_world["member"]), f"/rooms/{chat_world['public'].id}/messages", payload)
    assert response.status_code == status
    assert response.json()["code"] == code
    if code == "validation_error" and isinstance(payload, dict):
        assert any(e["field"] in ("body", "client_id") for e in response.json()["errors"])
    assert not Message.objects.exists()


def test_message_of_max_length_is_accepted(chat_world, api_client):
    client = api_client(chat_world["member"])
    response = post_json(client, f"/rooms/{chat_world['public'].id}/messages", {"body": "y" * 10_000})
    assert response.status_code == 201
    assert len(response.json()["body"]) == 10_000


def test_message_create_where_not_allowed(chat_world, api_client):
    member = api_client(chat_world["member"])
    assert post_json(member, f"/rooms/{chat_world['private'].id}/messages", {"body": "hi"}).status_code == 404
    outsider = api_client(chat_world["outsider"])
    assert post_json(outsider, f"/rooms/{chat_world['public'].id}/messages", {"body": "hi"}).status_code == 404
    project = chat_world["project"]
    project.archived = True
    project.save()
    archived = post_json(member, f"/rooms/{chat_world['public'].id}/messages", {"body": "hi"})
    assert archived.status_code == 403 and archived.json()["code"] == "archived"
    assert not Message.objects.exists()


def test_message_edit_by_author_and_admin(chat_world, api_client, make_message):
    message = make_message(chat_world["public"], chat_world["member"], body="first")
    response = post_json(api_client(chat_world["member"]), f"/messages/{message.id}", {"body": "second"}, "patch")
    assert response.status_code == 200
    assert response.json()["body"] == "second" and response.json()["edited_at"]
    response = post_json(api_client(chat_world["admin"]), f"/messages/{message.id}", {"body": "moderated"}, "patch")
    assert response.status_code == 200
    assert Message.objects.get(pk=message.pk).body == "moderated"


def test_message_edit_errors(chat_world, api_client, make_message):
    message = make_message(chat_world["public"], chat_world["member"], body="mine")
    path = f"/messages/{message.id}"
    other = post_json(api_client(chat_world["insider"]), path, {"body": "hijack"}, "patch")
    assert other.status_code == 403 and other.json()["code"] == "forbidden"
    assert post_json(api_client(chat_world["outsider"]), path, {"body": "x"}, "patch").status_code == 404
    author = api_client(chat_world["member"])
    assert post_json(author, "/messages/999999", {"body": "x"}, "patch").status_code == 404
    assert post_json(author, path, {}, "patch").status_code == 422
    assert post_json(author, path, {"body": 1}, "patch").status_code == 422
    assert post_json(author, path, {"body": "x" * 10_001}, "patch").status_code == 400
    assert post_json(author, path, {"body": ""}, "patch").status_code == 400
    assert Message.objects.get(pk=message.pk).body == "mine"
    author.delete(f"{API}{path}")
    gone = post_json(author, path, {"body": "undead"}, "patch")
    assert gone.status_code == 409 and gone.json()["code"] == "deleted"


def test_message_delete(chat_world, api_client, make_message):
    mine = make_message(chat_world["public"], chat_world["member"])
    theirs = make_message(chat_world["public"], chat_world["insider"])
    member = api_client(chat_world["member"])
    response = member.delete(f"{API}/messages/{mine.id}")
    assert response.status_code == 204 and response.content == b""
    assert member.delete(f"{API}/messages/{mine.id}").status_code == 204  # idempotent
    forbidden = member.delete(f"{API}/messages/{theirs.id}")
    assert forbidden.status_code == 403
    assert Message.objects.get(pk=theirs.pk).deleted_at is None
    assert api_client(chat_world["owner"]).delete(f"{API}/messages/{theirs.id}").status_code == 204
    assert Message.objects.get(pk=theirs.pk).deleted_at is not None


def test_message_in_hidden_room_is_404_for_change(chat_world, api_client, make_message):
    secret = make_message(chat_world["private"], chat_world["insider"])
    # Even a project admin cannot act on a private room they are not in: it is invisible.
    admin = api_client(chat_world["admin"])
    assert admin.delete(f"{API}/messages/{secret.id}").status_code == 404
    assert post_json(admin, f"/messages/{secret.id}", {"body": "x"}, "patch").status_code == 404


# --- Database unavailable ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_database_error_is_503_unavailable(chat_world, api_client):
    """A real lock wait that PostgreSQL aborts (OperationalError), not a mock."""
    public = chat_world["public"]
    client = api_client(chat_world["member"])
    db = settings.DATABASES["default"]
    blocker = psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
    )
    try:
        # Hold the room's row lock, which message_create needs to bump the counter.
        blocker.execute(f"SELECT id FROM {Room._meta.db_table} WHERE id = %s FOR UPDATE", [public.id])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")
        try:
            response = post_json(client, f"/rooms/{public.id}/messages", {"body": "blocked"})
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    finally:
        blocker.rollback()
        blocker.close()
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert not Message.objects.exists()


def test_a_room_list_page_reads_the_state_of_its_own_rooms_only(chat_world, api_client, make_room):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for i in range(30):
        make_room(chat_world["project"], name=f"wide {i:02d}")
    client = api_client(chat_world["member"])
    client.get(f"{API}/projects/world/rooms?limit=100")  # the list itself is cached now
    with CaptureQueriesContext(connection) as captured:
        page = client.get(f"{API}/projects/world/rooms?limit=5").json()
    assert len(page["items"]) == 5 and page["next_cursor"]
    (live,) = [q["sql"] for q in captured.captured_queries if '"chat_room"' in q["sql"] and "last_message_seq" in q["sql"]]
    # The counters and markers of the page's 5 rooms and the one after it, not of all 32.
    assert len(re.search(r'"chat_room"\."id" IN \(([^)]*)\)', live).group(1).split(",")) == 6
