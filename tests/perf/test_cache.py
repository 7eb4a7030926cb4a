"""Cache-aside on the real Redis: fresh reads after every write path, stampede
protection, counters, Redis down, caching off, sessions surviving a Redis restart."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time

import orjson
import pytest
from django.core.cache import cache
from django.contrib.auth.models import update_last_login
from django.test import Client, override_settings

from chat import cache_keys
from chat.models import Room
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.selectors import tokens as token_selectors
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from perf import cache as perf_cache
from projects import selectors as project_selectors
from projects import services as project_services

API = "/api/v1"
DEAD_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": 0.2,
            "SOCKET_TIMEOUT": 0.2,
        },
    }
}


def get(client, path):
    response = client.get(API + path)
    assert response.status_code == 200, response.content
    return response.json()


def send(client, method, path, body):
    return getattr(client, method)(API + path, data=orjson.dumps(body), content_type="application/json")


@pytest.mark.django_db(transaction=True)
def test_every_write_path_is_seen_by_the_next_read(chat_world, api_client, make_user):
    room = chat_world["public"]
    member = api_client(chat_world["member"])
    owner = api_client(chat_world["owner"])

    # message create / edit / delete, through the history API (message cache)
    created = send(member, "post", f"/rooms/{room.id}/messages", {"body": "v1"}).json()
    assert [m["body"] for m in get(owner, f"/rooms/{room.id}/messages")["items"]] == ["v1"]
    send(member, "patch", f"/messages/{created['id']}", {"body": "v2"})
    assert get(owner, f"/rooms/{room.id}/messages")["items"][0]["body"] == "v2"
    send(member, "delete", f"/messages/{created['id']}", {})
    item = get(owner, f"/rooms/{room.id}/messages")["items"][0]
    assert item["deleted"] is True and item["body"] == ""

    # unread counts: a new message and a read marker each change the count
    rooms = {r["id"]: r for r in get(owner, "/projects/world/rooms")["items"]}
    assert rooms[room.id]["unread"] == 0
    second = send(member, "post", f"/rooms/{room.id}/messages", {"body": "count me"}).json()
    rooms = {r["id"]: r for r in get(owner, "/projects/world/rooms")["items"]}
    assert rooms[room.id]["unread"] == 1
    send(owner, "post", f"/rooms/{room.id}/read", {"last_id": second["id"]})
    rooms = {r["id"]: r for r in get(owner, "/projects/world/rooms")["items"]}
    assert rooms[room.id]["unread"] == 0
    third = send(member, "post", f"/rooms/{room.id}/messages", {"body": "then gone"}).json()
    assert {r["id"]: r for r in get(owner, "/projects/world/rooms")["items"]}[room.id]["unread"] == 1
    send(member, "delete", f"/messages/{third['id']}", {})
    assert {r["id"]: r for r in get(owner, "/projects/world/rooms")["items"]}[room.id]["unread"] == 0

    # join a private room: the room list and access change at once
    private = chat_world["private"]
    assert private.id not in {r["id"] for r in get(member, "/projects/world/rooms")["items"]}
    assert member.get(f"{API}/rooms/{private.id}/messages").status_code == 404
    room_services.room_member_add(room=private, username="member", by=chat_world["insider"])
    assert private.id in {r["id"] for r in get(member, "/projects/world/rooms")["items"]}
    assert member.get(f"{API}/rooms/{private.id}/messages").status_code == 200

    # join and leave a project
    newcomer = make_user("newcomer")
    newcomer_client = api_client(newcomer)
    assert newcomer_client.get(f"{API}/projects/world").status_code == 404
    assert newcomer_client.get(f"{API}/rooms/{room.id}/messages").status_code == 404
    project_services.invitation_create(project=chat_world["project"], username="newcomer", by=chat_world["owner"])
    invitation = chat_world["project"].invitations.get(user=newcomer)
    project_services.invitation_accept(invitation=invitation, user=newcomer)
    assert newcomer_client.get(f"{API}/projects/world").status_code == 200
    assert newcomer_client.get(f"{API}/rooms/{room.id}/messages").status_code == 200
    project_services.membership_remove(project=chat_world["project"], user=newcomer, by=chat_world["owner"])
    assert newcomer_client.get(f"{API}/projects/world").status_code == 404
    assert newcomer_client.get(f"{API}/rooms/{room.id}/messages").status_code == 404
    assert get(newcomer_client, "/projects")["items"] == []

    # rename a project
    assert get(member, "/projects/world")["name"] == "World"
    project_services.project_update(project=chat_world["project"], by=chat_world["owner"], name="World 2")
    assert get(member, "/projects/world")["name"] == "World 2"

    # change a profile: names in cached messages follow
    send(member, "post", f"/rooms/{room.id}/messages", {"body": "who am i"})
    assert get(owner, f"/rooms/{room.id}/messages")["items"][-1]["author"]["display_name"] == "member"
    account_services.user_update_profile(user=chat_world["member"], first_name="Mem", last_name="Ber")
    assert get(owner, f"/rooms/{room.id}/messages")["items"][-1]["author"]["display_name"] == "Mem Ber"
    assert get(member, "/me")["display_name"] == "Mem Ber"


@pytest.mark.django_db(transaction=True)
def test_admin_style_writes_are_invalidated_too(chat_world, api_client):
    """Writes that bypass the services (the admin saving a model) still invalidate."""
    member = api_client(chat_world["member"])
    room = chat_world["public"]
    assert send(member, "post", f"/rooms/{room.id}/messages", {"body": "before"}).status_code == 201
    project = chat_world["project"]
    project.archived = True
    project.save()
    response = send(member, "post", f"/rooms/{room.id}/messages", {"body": "after"})
    assert response.status_code == 403 and response.json()["code"] == "archived"
    room_obj = Room.objects.get(pk=room.pk)
    room_obj.is_private = True
    room_obj.save()
    assert member.get(f"{API}/rooms/{room.id}/messages").status_code == 404


def test_a_stamped_entry_lives_while_its_stamps_do(db):
    cache.clear()
    calls = []

    def fill():
        calls.append(1)
        return f"value {len(calls)}"

    read = lambda: perf_cache.cached_stamped("pages", "t:page", ["t:stamp:a", "t:stamp:b"], fill)  # noqa: E731
    assert read() == "value 1"
    first_stamp = cache.get("t:stamp:a")
    assert first_stamp is not None  # a missing stamp is created by the reader
    assert read() == "value 1" and len(calls) == 1
    perf_cache.invalidate("t:stamp:b")  # what a writer does
    assert read() == "value 2"
    assert read() == "value 2" and len(calls) == 2
    perf_cache.invalidate("t:stamp:a")
    assert read() == "value 3"
    assert cache.get("t:stamp:a") != first_stamp  # a stamp never comes back to an old value
    cache.set("t:stamp:a", first_stamp)  # even if it did, the entry holds the newer one
    assert read() == "value 4"


def test_a_stamped_entry_is_computed_but_not_stored_when_redis_is_down(db):
    with override_settings(CACHES=DEAD_REDIS):
        assert perf_cache.cached_stamped("pages", "t:page", ["t:stamp"], lambda: "fresh") == "fresh"
    assert cache.get("t:page") is None


@pytest.mark.django_db(transaction=True)
def test_a_new_message_renders_only_the_newest_page_again_an_edit_every_page(
    chat_world, api_client, django_assert_num_queries
):
    room, member = chat_world["public"], chat_world["member"]
    owner = api_client(chat_world["owner"])
    first = [message_services.message_create(room=room, author=member, body=f"m{i}")[0] for i in range(4)]
    path = f"/rooms/{room.id}/messages?limit=2"
    older = f"{path}&cursor={get(owner, path)['next_cursor']}"
    assert [m["body"] for m in get(owner, older)["items"]] == ["m0", "m1"]

    message_services.message_create(room=room, author=member, body="m4")
    with django_assert_num_queries(0):  # still the rendered page: nothing older changed
        assert [m["body"] for m in get(owner, older)["items"]] == ["m0", "m1"]
    assert [m["body"] for m in get(owner, path)["items"]] == ["m3", "m4"]

    message_services.message_edit(message=history_selectors.message_get_for_user(user=member, message_id=first[0].id), by=member, body="m0!")
    assert [m["body"] for m in get(owner, older)["items"]] == ["m0!", "m1"]


@pytest.mark.django_db(transaction=True)
def test_rendered_pages_follow_profile_changes_and_user_deletion_but_not_logins(chat_world, api_client, make_user):
    room = chat_world["public"]
    owner = api_client(chat_world["owner"])
    author = make_user("leaving")
    project_services.invitation_create(project=chat_world["project"], username="leaving", by=chat_world["owner"])
    project_services.invitation_accept(invitation=chat_world["project"].invitations.get(user=author), user=author)
    message_services.message_create(room=room, author=author, body="mine")
    message_services.message_create(room=room, author=chat_world["member"], body="theirs")
    path = f"/rooms/{room.id}/messages"
    assert [m["body"] for m in get(owner, path)["items"]] == ["mine", "theirs"]

    stamp = cache.get(cache_keys.profiles_stamp_key())
    update_last_login(None, author)  # what every login runs (user_logged_in)
    assert cache.get(cache_keys.profiles_stamp_key()) == stamp

    author.first_name = "Renamed"
    author.save()
    assert get(owner, path)["items"][0]["author"]["display_name"] == "Renamed"

    author.delete()  # their messages go with them
    assert [m["body"] for m in get(owner, path)["items"]] == ["theirs"]


def test_a_cold_key_under_100_concurrent_readers_is_computed_once(db):
    calls = []
    lock = threading.Lock()
    start = threading.Barrier(100)

    def fill():
        with lock:
            calls.append(1)
        time.sleep(0.3)
        return {"answer": 42}

    results = []

    def read():
        start.wait()
        results.append(perf_cache.cached("stats", perf_cache.cache_key("stampede", "k"), fill, lock=True))

    threads = [threading.Thread(target=read) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [{"answer": 42}] * 100


def test_hit_and_miss_counters_per_family(chat_world, api_client, make_message):
    for _ in range(3):
        make_message(chat_world["public"], chat_world["owner"])
    cache.clear()
    perf_cache.cache_stats_reset()
    client = api_client(chat_world["member"])
    get(client, f"/rooms/{chat_world['public'].id}/messages")
    get(client, f"/rooms/{chat_world['public'].id}/messages")
    stats = perf_cache.cache_stats()
    # The first read renders the page from the message cache; the second is the rendered page.
    assert stats["pages"] == {"hits": 1, "misses": 1, "ratio": 0.5}
    assert stats["messages"] == {"hits": 0, "misses": 3, "ratio": 0.0}
    assert stats["rooms"] == {"hits": 1, "misses": 1, "ratio": 0.5}
    assert stats["access"] == {"hits": 1, "misses": 1, "ratio": 0.5}
    # A page with field selection is not the shared rendered page: the message cache serves it.
    get(client, f"/rooms/{chat_world['public'].id}/messages?fields=id,body")
    assert perf_cache.cache_stats()["messages"]["hits"] == 3


def test_redis_down_degrades_to_the_database(chat_world, api_client, make_message):
    make_message(chat_world["public"], chat_world["owner"], body="still here")
    client = api_client(chat_world["member"])
    errors_before = perf_cache.CACHE_ERRORS._value.get()
    with override_settings(CACHES=DEAD_REDIS):
        from django.core.cache import caches

        caches._settings = None  # re-read CACHES
        try:
            caches.close_all()
            items = get(client, f"/rooms/{chat_world['public'].id}/messages")["items"]
            assert [m["body"] for m in items] == ["still here"]
            assert get(client, "/projects/world/rooms")["items"]
            assert client.get("/p/world/").status_code in (200, 302)
        finally:
            caches.close_all()
    assert perf_cache.CACHE_ERRORS._value.get() > errors_before


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}})
def test_everything_works_with_caching_off(chat_world, api_client):
    client = api_client(chat_world["member"])
    room = chat_world["public"]
    created = send(client, "post", f"/rooms/{room.id}/messages", {"body": "uncached"}).json()
    send(client, "patch", f"/messages/{created['id']}", {"body": "edited"})
    assert get(client, f"/rooms/{room.id}/messages")["items"][0]["body"] == "edited"
    assert get(client, "/projects/world/rooms")["items"]


def test_enable_caching_false_selects_the_dummy_cache():
    code = "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings.test", "ENABLE_CACHING": "false"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "django.core.cache.backends.dummy.DummyCache"


@pytest.mark.django_db(transaction=True)
def test_sessions_survive_a_redis_flush(make_user):
    from tests.conftest import PASSWORD

    make_user("sessionuser")
    client = Client()
    assert client.login(username="sessionuser", password=PASSWORD)
    assert client.get(f"{API}/me").status_code == 200
    import redis

    from chatsite import env

    redis.Redis.from_url(env.REDIS_URL).flushdb()  # as if Redis restarted empty
    response = client.get(f"{API}/me")
    assert response.status_code == 200 and response.json()["username"] == "sessionuser"


def test_request_memo_computes_permissions_once_per_request(chat_world, rf):
    from django.contrib.auth.models import AnonymousUser  # noqa: F401

    room = chat_world["public"]
    cache.clear()
    token = perf_cache._request_memo.set({})
    try:
        first = room_selectors.room_get_for_user(user=chat_world["member"], room_id=room.id)
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            second = room_selectors.room_get_for_user(user=chat_world["member"], room_id=room.id)
        assert len(ctx.captured_queries) == 0 and second is first
    finally:
        perf_cache._request_memo.reset(token)


def test_cache_keys_carry_the_database_name() -> None:
    """Two databases sharing one Redis database (a second deployment, a benchmark) never share entries."""
    import dj_database_url

    from chatsite import env

    name = dj_database_url.parse(env.DATABASE_URL)["NAME"]
    assert cache.make_key("room:1").startswith(f"chat:{name}:")


def test_exactly_invalidated_families_keep_entries_longer_than_the_others(chat_world) -> None:
    """Messages, profiles, rooms, access and room lists are invalidated exactly; their TTL only bounds memory."""
    from chatsite import env

    cache.clear()
    perf_cache.cached_many("messages", {1: "ttl-test:message"}, lambda ids: {i: {"id": i} for i in ids})
    perf_cache.cached_many("profiles", {1: "ttl-test:profile"}, lambda ids: {i: {"id": i} for i in ids})
    perf_cache.store_many({"ttl-test:ahead": {"id": 2}}, family="messages")
    user, room, project = chat_world["member"], chat_world["public"], chat_world["project"]
    room_selectors.rooms_for_user(user=user, project=project)
    access = cache_keys.room_access_key(user.id, room.id)
    assert env.CACHE_TTL < cache.ttl(access) <= env.CACHE_TTL_ENTRIES  # filled by the room list
    cache.delete(access)
    room_selectors.room_get_for_user(user=user, room_id=room.id)
    project_selectors.project_get_for_user(user=user, slug=project.slug)
    long_lived = [
        "ttl-test:message",
        "ttl-test:profile",
        "ttl-test:ahead",
        cache_keys.room_cache_key(room.id),
        access,  # filled by room_get_for_user
        cache_keys.room_list_key(project.id, user.id),
        project_selectors.membership_cache_key(project.id, user.id),
    ]
    for key in long_lived:
        assert env.CACHE_TTL < cache.ttl(key) <= env.CACHE_TTL_ENTRIES, key
    # Large rendered pages, per-reader unread counts (a new key per message)
    # and miss markers keep CACHE_TTL.
    perf_cache.cached_stamped("pages", "ttl-test:page", [], lambda: b"{}")
    perf_cache.cached("unread", "ttl-test:unread", lambda: 3)
    assert token_selectors.user_for_token(raw_key="no-such-token") is None
    unknown_token = cache_keys.token_cache_key(hashlib.sha256(b"no-such-token").hexdigest())
    for key in ("ttl-test:page", "ttl-test:unread", unknown_token):
        assert 0 < cache.ttl(key) <= env.CACHE_TTL, key


def test_one_cache_backend_serves_every_thread_and_sync_to_async_call(db) -> None:
    """Django's caches[...] builds a backend per context; perf.cache keeps one for the process."""
    import asyncio
    import contextvars

    from asgiref.sync import sync_to_async
    from django.core.cache import caches

    def both() -> tuple[object, object]:
        return perf_cache.backend(), caches["default"]

    async def many() -> list[tuple[object, object]]:
        return await asyncio.gather(*(sync_to_async(both, thread_sensitive=False)() for _ in range(20)))

    # A fresh context, as a server's connection task or request starts with.
    seen = contextvars.Context().run(asyncio.run, many())
    in_thread: list[object] = []
    worker = threading.Thread(target=lambda: in_thread.append(perf_cache.backend()))
    worker.start()
    worker.join()

    ours = {id(pair[0]) for pair in seen} | {id(in_thread[0]), id(perf_cache.backend())}
    djangos = {id(pair[1]) for pair in seen}
    assert len(ours) == 1
    # What this saves: Django's own handler made a backend in (nearly) every call's context.
    assert len(djangos) > 1
    perf_cache.store("shared:probe", 7)
    assert cache.get("shared:probe") == 7


def test_the_process_backend_follows_a_change_of_caches(db) -> None:
    before = perf_cache.backend()
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}):
        assert not perf_cache.caching_enabled()
        assert perf_cache.backend() is not before
    assert perf_cache.caching_enabled()
