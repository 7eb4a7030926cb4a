"""`?fields=` on the list endpoints of /api/v1/, against the real PostgreSQL and Redis."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.api_schemas import MessageOut, MessagePage
from chat.services import messages as message_services

API = "/api/v1"

MESSAGE_FIELDS = ["id", "room", "seq", "author", "body", "html", "created_at", "edited_at", "deleted", "client_id", "reactions", "thread_root", "thread"]
ROOM_FIELDS = ["id", "slug", "name", "topic", "is_private", "kind", "project", "last_message_at", "unread"]
PROJECT_FIELDS = ["slug", "name", "description", "archived", "role", "created_at"]
MEMBER_FIELDS = ["id", "username", "display_name", "role", "joined_at"]


@pytest.fixture
def world(chat_world, make_message, api_client):
    public = chat_world["public"]
    for i in range(7):
        make_message(public, chat_world["owner" if i % 2 else "member"], body=f"hello {i}")
    return {**chat_world, "client": api_client(chat_world["member"]), "messages": f"{API}/rooms/{public.id}/messages"}


def test_message_list_returns_only_the_named_fields(world):
    client, url = world["client"], world["messages"]
    full = client.get(url).json()["items"]
    assert list(full[0]) == MESSAGE_FIELDS  # without fields: everything, nulls included

    response = client.get(f"{url}?fields=id,body,author")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [list(item) for item in items] == [["id", "author", "body"]] * 7
    assert items == [{"id": m["id"], "author": m["author"], "body": m["body"]} for m in full]
    assert items[0]["author"] == {"id": world["member"].id, "username": "member", "display_name": "member"}


def test_fields_order_spaces_and_repeats_do_not_matter(world):
    client, url = world["client"], world["messages"]
    a = client.get(f"{url}?fields=body,id").json()
    b = client.get(f"{url}?fields= id , body,body,").json()
    assert a == b
    assert all(list(item) == ["id", "body"] for item in a["items"])


def test_null_fields_stay_when_named(world):
    items = world["client"].get(f"{world['messages']}?fields=edited_at,client_id").json()["items"]
    assert items[0] == {"edited_at": None, "client_id": None}


def test_fields_keep_pagination_working(world):
    client, url = world["client"], world["messages"]
    first = client.get(f"{url}?limit=4&fields=body").json()
    assert [item["body"] for item in first["items"]] == [f"hello {i}" for i in range(3, 7)]
    assert first["next_cursor"]
    second = client.get(f"{url}?limit=4&fields=body&cursor={first['next_cursor']}").json()
    assert [item["body"] for item in second["items"]] == [f"hello {i}" for i in range(3)]
    assert second["next_cursor"] is None
    forward = client.get(f"{url}?after=0&limit=3&fields=seq").json()
    assert forward["items"] == [{"seq": 1}, {"seq": 2}, {"seq": 3}] and forward["next_cursor"]


def test_selected_page_is_smaller(world):
    client, url = world["client"], world["messages"]
    assert len(client.get(f"{url}?fields=id").content) * 4 < len(client.get(url).content)


def test_fields_add_no_queries(world, django_assert_max_num_queries):
    client, url = world["client"], world["messages"]
    # Forward pages: the full one is not cached rendered either, so both take the same path.
    client.get(f"{url}?after=0")  # warm the caches both requests share
    with CaptureQueriesContext(connection) as full:
        client.get(f"{url}?after=0")
    with django_assert_max_num_queries(len(full.captured_queries)):
        client.get(f"{url}?after=0&fields=id,body")


@pytest.mark.parametrize(
    "fields,named",
    [
        ("id,nope", ["'nope'"]),
        ("bogus,id,zz", ["'bogus'", "'zz'"]),
        ("author.username", ["'author.username'"]),
        ("ID", ["'ID'"]),
    ],
)
def test_unknown_field_is_400_naming_it(world, fields, named):
    response = world["client"].get(f"{world['messages']}?fields={fields}")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail", "code"} and body["code"] == "invalid_fields"
    for name in named:
        assert name in body["detail"]
    assert "choose from: id, room, seq, author" in body["detail"]


@pytest.mark.parametrize("fields", ["", ",", " , "])
def test_empty_fields_is_400(world, fields):
    response = world["client"].get(f"{world['messages']}?fields={fields}")
    assert response.status_code == 400 and response.json()["code"] == "invalid_fields"


def test_overlong_fields_is_400(world):
    response = world["client"].get(f"{world['messages']}?fields={'id,' * 300}")
    assert response.status_code == 400 and response.json()["code"] == "invalid_fields"


def test_bad_fields_do_not_reveal_rooms(world, api_client):
    outsider = api_client(world["outsider"])
    assert outsider.get(f"{world['messages']}?fields=id").status_code == 404
    assert outsider.get(f"{world['messages']}?fields=nope").status_code == 400


def test_room_list_fields(world):
    client = world["client"]
    full = client.get(f"{API}/projects/world/rooms").json()["items"]
    assert list(full[0]) == ROOM_FIELDS
    items = client.get(f"{API}/projects/world/rooms?fields=id,unread").json()["items"]
    assert items == [{"id": r["id"], "unread": r["unread"]} for r in full]
    assert items[0]["unread"] == 3
    bad = client.get(f"{API}/projects/world/rooms?fields=id,members")
    assert bad.status_code == 400 and "'members'" in bad.json()["detail"]


def test_project_list_fields(world):
    client = world["client"]
    full = client.get(f"{API}/projects").json()["items"]
    assert list(full[0]) == PROJECT_FIELDS
    items = client.get(f"{API}/projects?fields=slug,role,created_at").json()["items"]
    assert items == [{"slug": "world", "role": "member", "created_at": full[0]["created_at"]}]
    bad = client.get(f"{API}/projects?fields=id")  # projects are named by slug
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_fields"


def test_member_list_fields(world):
    client = world["client"]
    full = client.get(f"{API}/projects/world/members").json()["items"]
    assert list(full[0]) == MEMBER_FIELDS
    items = client.get(f"{API}/projects/world/members?fields=username,role").json()["items"]
    assert items == [{"username": m["username"], "role": m["role"]} for m in full]
    assert {"username": "owner", "role": "owner"} in items
    bad = client.get(f"{API}/projects/world/members?fields=email")
    assert bad.status_code == 400 and "'email'" in bad.json()["detail"]


def test_openapi_documents_fields(world):
    schema = world["client"].get(f"{API}/openapi.json").json()
    for path in ("/api/v1/rooms/{room_id}/messages", "/api/v1/projects/{slug}/rooms", "/api/v1/projects",
                 "/api/v1/projects/{slug}/members"):
        params = {p["name"] for p in schema["paths"][path]["get"]["parameters"]}
        assert "fields" in params, path
    item = schema["components"]["schemas"]["MessageItem"]
    assert "required" not in item and set(item["properties"]) == set(MESSAGE_FIELDS)
    # Single objects are still complete.
    assert set(schema["components"]["schemas"]["MessageOut"]["required"]) == set(MESSAGE_FIELDS)


def test_message_list_output_holds_to_its_schema(world, chat_world):
    """The message list renders itself without ninja's output validation: hold it to the schema here."""
    client, url = world["client"], world["messages"]
    mine = chat_world["public"].messages.filter(author=chat_world["owner"]).order_by("id")
    message_services.message_edit(message=mine.first(), by=chat_world["owner"], body="edited")
    message_services.message_delete(message=mine.last(), by=chat_world["owner"])
    for query in ("", "?fields=id,author", "?after=0&limit=2"):
        response = client.get(url + query)
        assert response["Content-Type"] == client.get(f"{API}/projects").headers["Content-Type"]
        data = response.json()
        page = MessagePage.model_validate(data)
        assert page.model_dump(exclude_unset=True) == data
    full = client.get(url).json()["items"]
    for item in full:
        assert MessageOut.model_validate(item).model_dump() == item
    assert {item["deleted"] for item in full} == {True, False}
    assert any(item["edited_at"] for item in full)


def test_id_only_pages_touch_neither_cache_nor_message_rows(chat_world, api_client, make_message, django_assert_num_queries):
    from perf import cache as perf_cache

    room = chat_world["public"]
    for _ in range(3):
        make_message(room, chat_world["owner"])
    client = api_client(chat_world["member"])
    client.get(f"/api/v1/rooms/{room.id}/messages?fields=id")  # warm token/room/access
    perf_cache.cache_stats_reset()
    with django_assert_num_queries(1):  # the page's ids only
        response = client.get(f"/api/v1/rooms/{room.id}/messages?fields=id")
    assert [set(item) for item in response.json()["items"]] == [{"id"}] * 3
    assert "messages" not in perf_cache.cache_stats() and "profiles" not in perf_cache.cache_stats()


def test_pages_without_author_skip_the_profile_lookup(chat_world, api_client, make_message):
    from perf import cache as perf_cache

    room = chat_world["public"]
    make_message(room, chat_world["owner"], body="hello")
    client = api_client(chat_world["member"])
    perf_cache.cache_stats_reset()
    response = client.get(f"/api/v1/rooms/{room.id}/messages?fields=id,body")
    assert response.json()["items"] == [{"id": response.json()["items"][0]["id"], "body": "hello"}]
    assert "profiles" not in perf_cache.cache_stats()
