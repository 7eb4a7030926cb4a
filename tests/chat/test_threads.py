"""Threads: replies through the one writer, the main timeline without them, summaries, follows and
thread unread state, over the API and the WebSocket."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache

from chat.models import Message, ThreadFollow
from chat.selectors import rooms as room_selectors
from chat.services import messages as message_services
from tests.chat.test_consumers import hello, recv, recv_until, send, subscribe

API = "/api/v1"

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, room_id: int, body: str, **extra):
    return client.post(f"{API}/rooms/{room_id}/messages", {"body": body, **extra}, content_type="application/json")


def test_replies_take_the_room_seq_and_stay_out_of_the_main_timeline(chat_world, api_client):
    public = chat_world["public"]
    member, owner = api_client(chat_world["member"]), api_client(chat_world["owner"])
    root = post(member, public.id, "where do we deploy?").json()
    first = post(owner, public.id, "staging first", thread_root=root["id"])
    assert first.status_code == 201 and first.json()["thread_root"] == root["id"]
    # A reply to a reply joins the same thread.
    second = post(member, public.id, "agreed", thread_root=first.json()["id"]).json()
    assert second["thread_root"] == root["id"]
    after = post(member, public.id, "next topic").json()
    assert [root["seq"], first.json()["seq"], second["seq"], after["seq"]] == [1, 2, 3, 4]

    items = member.get(f"{API}/rooms/{public.id}/messages").json()["items"]
    assert [m["body"] for m in items] == ["where do we deploy?", "next topic"]
    thread = items[0]["thread"]
    assert thread["reply_count"] == 2 and thread["last_reply_id"] == second["id"]
    assert thread["participant_ids"] == [chat_world["owner"].id, chat_world["member"].id]
    assert [u["username"] for u in thread["participants"]] == ["owner", "member"]
    assert items[1]["thread"] is None and items[1]["thread_root"] is None


def test_thread_view_pages_replies_and_reports_follow_state(chat_world, api_client):
    public = chat_world["public"]
    member, owner = api_client(chat_world["member"]), api_client(chat_world["owner"])
    root = post(owner, public.id, "release notes").json()
    replies = [post(member, public.id, f"reply {i}", thread_root=root["id"]).json()["id"] for i in range(5)]
    page = member.get(f"{API}/messages/{root['id']}/thread?limit=3").json()
    assert page["root"]["id"] == root["id"] and page["root"]["thread"]["reply_count"] == 5
    assert [m["id"] for m in page["items"]] == replies[2:]
    # The replier follows, read up to their own reply.
    assert page["following"] is True and page["last_read_id"] == replies[-1]
    older = member.get(f"{API}/messages/{root['id']}/thread?limit=3&cursor={page['next_cursor']}").json()
    assert [m["id"] for m in older["items"]] == replies[:2] and older["next_cursor"] is None
    # Asking for a reply's thread gives the same thread.
    assert member.get(f"{API}/messages/{replies[0]}/thread").json()["root"]["id"] == root["id"]


def test_bad_replies_are_clear_errors(chat_world, api_client, make_message):
    public, private = chat_world["public"], chat_world["private"]
    member = api_client(chat_world["member"])
    elsewhere = make_message(private, chat_world["insider"], "in another room")
    assert post(member, public.id, "x", thread_root=elsewhere.id).json()["code"] == "not_found"
    assert post(member, public.id, "x", thread_root=987654321).status_code == 404
    assert post(member, public.id, "x", thread_root="one").status_code == 422
    assert post(member, public.id, "x", thread_root=0).status_code == 422
    root = post(member, public.id, "soon gone").json()
    member.delete(f"{API}/messages/{root['id']}")
    refused = post(member, public.id, "too late", thread_root=root["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "deleted"
    assert not Message.objects.filter(body__in=["x", "too late"]).exists()
    # Someone who cannot read the room cannot see its threads.
    outsider = api_client(chat_world["outsider"])
    assert outsider.get(f"{API}/messages/{root['id']}/thread").status_code == 404
    assert outsider.put(f"{API}/messages/{root['id']}/thread/follow").status_code == 404


def test_replies_are_not_room_unread_but_thread_unread(chat_world, api_client):
    public, project = chat_world["public"], chat_world["project"]
    owner, member = api_client(chat_world["owner"]), api_client(chat_world["member"])
    root = post(member, public.id, "lunch?").json()
    member.post(f"{API}/rooms/{public.id}/read", {"last_id": root["id"]}, content_type="application/json")
    for i in range(3):
        post(owner, public.id, f"yes {i}", thread_root=root["id"])
    cache.clear()  # also from the database, not only through the writer's cached tail
    for _ in range(2):
        rooms = {r.id: r for r in room_selectors.rooms_for_user(user=chat_world["member"], project=project)}
        assert rooms[public.id].unread == 0
        cache.clear()
    threads = member.get(f"{API}/projects/{project.slug}/threads").json()["items"]
    assert [(t["root"]["id"], t["unread"]) for t in threads] == [(root["id"], 3)]
    newest = Message.objects.filter(thread_root_id=root["id"]).order_by("-id").first().id
    read = member.post(f"{API}/messages/{root['id']}/thread/read", {"last_id": newest + 100}, content_type="application/json")
    assert read.json() == {"last_id": newest}
    assert member.get(f"{API}/projects/{project.slug}/threads").json()["items"][0]["unread"] == 0
    # Unfollowing takes it off the list; replying follows again.
    assert member.delete(f"{API}/messages/{root['id']}/thread/follow").json() == {"following": False}
    assert member.get(f"{API}/projects/{project.slug}/threads").json()["items"] == []
    post(member, public.id, "on second thought", thread_root=root["id"])
    assert ThreadFollow.objects.get(user=chat_world["member"], root_id=root["id"]).following


def test_followed_threads_list_has_a_constant_query_count(chat_world, api_client, make_message, django_assert_num_queries):
    public, project, member = chat_world["public"], chat_world["project"], chat_world["member"]
    client = api_client(member)
    counts = []
    for total in (1, 20):
        for _ in range(total - len(counts)):
            root = make_message(public, chat_world["owner"], "topic")
            message_services.message_create(room=public, author=member, body="reply", thread_root=root.id)
        counts.append(total)
        cache.clear()
        # token, user, project and role, the follows with their counts (the rooms' access a subquery),
        # the roots (messages, reactions, threads), their profiles: the same for 1 and 20
        with django_assert_num_queries(8) as captured:
            items = client.get(f"{API}/projects/{project.slug}/threads").json()["items"]
        assert len(items) == total, captured


def test_a_thread_stops_showing_when_access_ends(chat_world, api_client, make_message):
    from chat.services import rooms as room_services

    private, insider = chat_world["private"], chat_world["insider"]
    root = make_message(private, chat_world["owner"], "secret plan")
    message_services.message_create(room=private, author=insider, body="count me in", thread_root=root.id)
    client = api_client(insider)
    assert len(client.get(f"{API}/projects/{private.project.slug}/threads").json()["items"]) == 1
    # The insider leaves the private room (someone else stays in it), but not the project.
    room_services.room_member_add(room=private, username="member", by=insider)
    room_services.room_member_remove(room=private, user=insider, by=insider)
    cache.clear()
    assert client.get(f"{API}/projects/{private.project.slug}/threads").json()["items"] == []
    assert client.get(f"{API}/messages/{root.id}/thread").status_code == 404


async def test_replies_over_the_websocket_and_the_thread_event(world):
    room = world["public"]
    root, _ = await database_sync_to_async(message_services.message_create)(room=room, author=world["owner"], body="poll")
    watcher = await hello(world["tokens"]["owner"])
    await subscribe(watcher, room.id)
    replier = await hello(world["tokens"]["member"])
    await subscribe(replier, room.id)
    await send(replier, {"type": "message.send", "room": room.id, "body": "option b", "client_id": "t1", "thread_root": root.id})
    ack, _ = await recv_until(replier, "message.ack")
    assert ack["thread_root"] == root.id
    new, _ = await recv_until(watcher, "message.new")
    assert new["message"]["thread_root"] == root.id and new["message"]["body"] == "option b"
    updated, _ = await recv_until(watcher, "thread.updated")
    assert updated["root"] == root.id and updated["thread"]["reply_count"] == 1
    assert updated["thread"]["participant_ids"] == [world["member"].id]
    await send(replier, {"type": "message.send", "room": room.id, "body": "x", "client_id": "t2", "thread_root": "nope"})
    error, _ = await recv_until(replier, "error")
    assert error["code"] == "invalid_thread_root" and error["ref"] == "t2"
    for communicator in (watcher, replier):
        await communicator.disconnect()


def test_deleting_a_reply_updates_its_root(chat_world, api_client):
    public = chat_world["public"]
    member = api_client(chat_world["member"])
    root = post(member, public.id, "question").json()
    reply = post(member, public.id, "answer", thread_root=root["id"]).json()
    assert member.get(f"{API}/rooms/{public.id}/messages").json()["items"][-1]["thread"]["reply_count"] == 1
    member.delete(f"{API}/messages/{reply['id']}")
    assert member.get(f"{API}/rooms/{public.id}/messages").json()["items"][-1]["thread"] is None


def test_history_with_reactions_and_threads_keeps_its_query_count(
    make_user, make_project, make_message, api_client, django_assert_num_queries
):
    """The room page and the API's history, cold, cost the same for 1 message as for 100 that all have
    reactions and threads (page size 100 for the API; the page shows its 50)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat.models import Reaction, Room
    from tests.chat.test_pages import client_for, room_url

    def room_with(count: int, tag: str):
        viewer, other = make_user(f"viewer{tag}"), make_user(f"other{tag}")
        project = make_project(viewer, name=f"Threads {tag}", members=(other,))
        room = Room.objects.select_related("project").get(project=project, slug="general")
        roots = [make_message(room, other, f"root {i}") for i in range(count)]
        for root in roots:
            for author in (viewer, other):
                message_services.message_create(room=room, author=author, body="re", thread_root=root.id)
        Reaction.objects.bulk_create([Reaction(message=m, user=u, emoji="👍") for m in roots for u in (viewer, other)])
        return room, viewer

    small, small_viewer = room_with(1, "s")
    big, big_viewer = room_with(100, "b")
    cache.clear()
    with CaptureQueriesContext(connection) as page_queries:
        assert client_for(small_viewer).get(room_url(small)).status_code == 200
    cache.clear()
    with django_assert_num_queries(len(page_queries.captured_queries)):
        body = client_for(big_viewer).get(room_url(big)).content.decode()
    assert body.count('class="reaction"') == 50

    cache.clear()
    with CaptureQueriesContext(connection) as api_queries:
        items = api_client(small_viewer).get(f"{API}/rooms/{small.id}/messages?limit=100").json()["items"]
    assert len(items) == 1
    cache.clear()
    with django_assert_num_queries(len(api_queries.captured_queries)):
        items = api_client(big_viewer).get(f"{API}/rooms/{big.id}/messages?limit=100").json()["items"]
    assert len(items) == 100 and all(m["thread"]["reply_count"] == 2 and m["reactions"][0]["count"] == 2 for m in items)


def test_people_mentioned_in_a_reply_follow_the_thread(chat_world, make_message):
    """The worker's job for a reply that names people: they follow its thread, even after unfollowing."""
    from chat.background import BackgroundConsumer
    from chat.services import threads as thread_services

    public, member, insider = chat_world["public"], chat_world["member"], chat_world["insider"]
    root = make_message(public, chat_world["owner"], "design review")
    thread_services.thread_follow(root=root, user=insider, following=False)
    reply, _ = message_services.message_create(
        room=public, author=chat_world["owner"], body="@member and @insider, thoughts?", thread_root=root.id
    )
    BackgroundConsumer().message_created({"type": "message.created", "message_id": reply.id, "room_id": public.id})
    follows = dict(ThreadFollow.objects.filter(root=root).values_list("user__username", "following"))
    assert follows == {"owner": True, "member": True, "insider": True}
    # Nobody outside the room's readers follows anything.
    assert not ThreadFollow.objects.filter(user=chat_world["outsider"]).exists()


def test_threads_of_rooms_left_never_crowd_out_the_readable_ones(chat_world, api_client, make_message):
    """The cap applies to threads the user can read: a hundred in a room they left hide none."""
    from chat.selectors.threads import FOLLOWED_THREADS_MAX
    from chat.services import rooms as room_services

    public, private, insider, owner = chat_world["public"], chat_world["private"], chat_world["insider"], chat_world["owner"]
    readable = make_message(public, owner, "still readable")
    message_services.message_create(room=public, author=owner, body="an older reply", thread_root=readable.id)
    for i in range(FOLLOWED_THREADS_MAX + 1):
        root = make_message(private, owner, f"private topic {i}")
        message_services.message_create(room=private, author=owner, body="newer reply", thread_root=root.id)
    roots = Message.objects.filter(room=private, thread_root__isnull=True).values_list("id", flat=True)
    ThreadFollow.objects.bulk_create([ThreadFollow(user=insider, root_id=r) for r in [readable.id, *roots]])
    room_services.room_member_add(room=private, username="member", by=insider)  # someone stays in the room
    room_services.room_member_remove(room=private, user=insider, by=insider)
    items = api_client(insider).get(f"{API}/projects/{public.project.slug}/threads").json()["items"]
    assert [item["root"]["id"] for item in items] == [readable.id]

