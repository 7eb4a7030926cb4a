"""Reactions: the service, the API, history summaries, and the coalesced `reaction` event on real sockets."""

from __future__ import annotations

import urllib.parse

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache

from chat.models import Reaction
from chat.services import messages as message_services
from chat.services import reactions as reaction_services
from chatsite.errors import Conflict, Forbidden, InvalidInput
from tests.chat.test_consumers import hello, recv, send, subscribe

API = "/api/v1"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("emoji", ["👍", "❤️", "❤", "👨‍👩‍👧", "🇫🇷", "1️⃣", "👍🏽"])
def test_one_unicode_emoji_is_accepted(emoji):
    assert reaction_services.clean_emoji(emoji) == emoji


@pytest.mark.parametrize("value", ["", "a", ":+1:", "👍👍", "👍 ", "<b>", None, 5, "👍" * 40])
def test_anything_else_is_invalid_emoji(value):
    with pytest.raises(InvalidInput) as caught:
        reaction_services.clean_emoji(value)
    assert caught.value.code == "invalid_emoji"


def test_add_and_remove_are_idempotent_over_the_api(chat_world, api_client, make_message):
    message = make_message(chat_world["public"], chat_world["owner"], "ship it")
    member = api_client(chat_world["member"])
    url = f"{API}/messages/{message.id}/reactions"
    first = member.post(url, {"emoji": "👍"}, content_type="application/json")
    assert first.status_code == 201, first.content
    again = member.post(url, {"emoji": "👍"}, content_type="application/json")
    assert again.status_code == 200 and again.json()["changed"] is False
    summary = again.json()["reactions"]
    assert summary == [
        {
            "emoji": "👍",
            "count": 1,
            "user_ids": [chat_world["member"].id],
            "users": [{"id": chat_world["member"].id, "username": "member", "display_name": "member"}],
        }
    ]
    gone = member.delete(f"{url}/{urllib.parse.quote('👍')}")
    assert gone.status_code == 200 and gone.json() == {"message": message.id, "emoji": "👍", "changed": True, "reactions": []}
    assert member.delete(f"{url}/{urllib.parse.quote('👍')}").json()["changed"] is False
    assert not Reaction.objects.exists()


def test_bad_input_and_access_are_clear_errors(chat_world, api_client, make_message):
    public = make_message(chat_world["public"], chat_world["owner"], "hello")
    secret = make_message(chat_world["private"], chat_world["insider"], "hush")
    member, outsider = api_client(chat_world["member"]), api_client(chat_world["outsider"])
    bad = member.post(f"{API}/messages/{public.id}/reactions", {"emoji": "nope"}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_emoji"
    missing = member.post(f"{API}/messages/{public.id}/reactions", {}, content_type="application/json")
    assert missing.status_code in (400, 422) and "code" in missing.json()
    # A message the user may not read is the same 404 as one that does not exist.
    for client, message_id in ((member, secret.id), (outsider, public.id), (member, 987654321)):
        response = client.post(f"{API}/messages/{message_id}/reactions", {"emoji": "👍"}, content_type="application/json")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert client.delete(f"{API}/messages/{message_id}/reactions/%F0%9F%91%8D").status_code == 404
    assert not Reaction.objects.exists()


def test_deleted_messages_and_archived_projects_refuse_new_reactions(chat_world, make_message):
    from chat.selectors import history as history_selectors

    owner = chat_world["owner"]
    message = make_message(chat_world["public"], owner, "going away")
    message_services.message_delete(message=history_selectors.message_get_for_user(user=owner, message_id=message.id), by=owner)
    with pytest.raises(Conflict):
        reaction_services.reaction_add(
            message=history_selectors.message_get_for_user(user=owner, message_id=message.id), user=owner, emoji="👍"
        )
    other = make_message(chat_world["public"], owner, "still here")
    chat_world["project"].archived = True
    chat_world["project"].save()
    cache.clear()
    with pytest.raises(Forbidden):
        reaction_services.reaction_add(
            message=history_selectors.message_get_for_user(user=owner, message_id=other.id), user=owner, emoji="👍"
        )


def test_distinct_emoji_per_message_are_bounded(chat_world, make_message, monkeypatch):
    from chat.selectors import history as history_selectors

    monkeypatch.setattr(reaction_services, "REACTION_KINDS_MAX", 2)
    member = chat_world["member"]
    message = history_selectors.message_get_for_user(user=member, message_id=make_message(chat_world["public"], member).id)
    assert reaction_services.reaction_add(message=message, user=member, emoji="👍")
    assert reaction_services.reaction_add(message=message, user=member, emoji="🎉")
    with pytest.raises(Conflict) as caught:
        reaction_services.reaction_add(message=message, user=member, emoji="🚀")
    assert caught.value.code == "too_many_reactions"
    # An emoji already there can still be added by someone else.
    assert reaction_services.reaction_add(message=message, user=chat_world["owner"], emoji="🎉")


def test_history_carries_summaries_in_a_constant_number_of_queries(
    chat_world, api_client, seed_messages, make_user, django_assert_num_queries
):
    public = chat_world["public"]
    messages = seed_messages(public, [chat_world["owner"], chat_world["member"]], 100)
    people = [chat_world["owner"], chat_world["member"], chat_world["admin"], chat_world["insider"]]
    Reaction.objects.bulk_create(
        [Reaction(message=m, user=u, emoji=e) for m in messages for u in people for e in ("👍", "🎉")]
    )
    client = api_client(chat_world["member"])
    # Cold cache: token, room, role, the page's ids, the messages, their reactions, their threads, the profiles.
    for limit in (1, 100):
        cache.clear()
        with django_assert_num_queries(8):
            items = client.get(f"{API}/rooms/{public.id}/messages?limit={limit}").json()["items"]
        assert len(items) == limit
    newest = items[-1]["reactions"]
    assert [(r["emoji"], r["count"]) for r in newest] == [("👍", 4), ("🎉", 4)]
    assert newest[0]["user_ids"] == [u.id for u in people]
    assert [u["username"] for u in newest[0]["users"]] == ["owner", "member", "admin1"]


def test_a_reaction_refreshes_the_cached_history_and_page(chat_world, api_client, make_message, client):
    public, member = chat_world["public"], chat_world["member"]
    message = make_message(public, chat_world["owner"], "cache me")
    reader = api_client(member)
    assert reader.get(f"{API}/rooms/{public.id}/messages").json()["items"][-1]["reactions"] == []
    client.force_login(member)
    page_url = f"/p/{public.project.slug}/r/{public.slug}/"
    first_page = client.get(page_url)
    reader.post(f"{API}/messages/{message.id}/reactions", {"emoji": "🎉"}, content_type="application/json")
    assert reader.get(f"{API}/rooms/{public.id}/messages").json()["items"][-1]["reactions"][0]["emoji"] == "🎉"
    # The page's ETag follows the reactions: the browser does not keep the old page.
    again = client.get(page_url, HTTP_IF_NONE_MATCH=first_page["ETag"])
    assert again.status_code == 200 and "🎉" in again.content.decode()


async def test_sockets_get_one_coalesced_reaction_event_for_a_storm(world, make_user, settings):
    """Forty reactions in one window reach a socket as one event per window, with the final count."""
    settings.CHAT_REACTION_WINDOW = 0.3
    room = world["public"]
    message, _ = await database_sync_to_async(message_services.message_create)(room=room, author=world["owner"], body="vote")
    watcher = await hello(world["tokens"]["member"])
    await subscribe(watcher, room.id)
    reactor = await hello(world["tokens"]["owner"])
    await subscribe(reactor, room.id)
    voters = await database_sync_to_async(lambda: [make_user(f"voter{i}") for i in range(39)])()

    def storm():
        from chat.selectors import history as history_selectors
        from projects.models import Membership

        Membership.objects.bulk_create([Membership(project=room.project, user=u) for u in voters])
        for voter in voters:
            loaded = history_selectors.message_get_for_user(user=voter, message_id=message.id)
            reaction_services.reaction_add(message=loaded, user=voter, emoji="👍")

    await send(reactor, {"type": "reaction.add", "message": message.id, "emoji": "👍", "ref": "r1"})
    ack = await recv(reactor)
    assert ack == {"type": "reaction.ack", "message": message.id, "emoji": "👍", "changed": True, "ref": "r1"}
    await database_sync_to_async(storm)()
    seen = []
    while not seen or seen[-1]["reactions"][0]["count"] < 40:
        event = await recv(watcher, timeout=5)
        assert event["type"] == "reaction", event
        seen.append(event)
    assert seen[-1]["message"] == message.id and seen[-1]["room"] == room.id
    assert seen[-1]["reactions"][0]["user_ids"][0] == world["owner"].id
    # 40 reactions over about a second: a few windows' worth of events, not 40.
    assert len(seen) < 10, len(seen)
    assert [e["version"] for e in seen] == sorted(e["version"] for e in seen)
    for communicator in (watcher, reactor):
        await communicator.disconnect()


async def test_websocket_reaction_errors_are_error_frames(world, make_message):
    message = await database_sync_to_async(make_message)(world["private"], world["insider"], "hidden")
    socket = await hello(world["tokens"]["member"])
    await send(socket, {"type": "reaction.add", "message": message.id, "emoji": "👍", "ref": "x"})
    assert (await recv(socket))["code"] == "not_found"
    await send(socket, {"type": "reaction.add", "message": message.id, "emoji": "thumbs", "ref": "y"})
    assert (await recv(socket))["code"] == "invalid_emoji"
    await send(socket, {"type": "reaction.remove", "message": "one", "emoji": "👍"})
    assert (await recv(socket))["code"] == "invalid_field"
    await socket.disconnect()
