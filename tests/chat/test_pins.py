"""Pins and saved messages: services (who may, idempotency, races, the cap), selectors (query counts), the API and the events."""

from __future__ import annotations

import threading
from typing import Any, Callable

import orjson
import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from chat.models import Pin, Reaction, SavedMessage
from chat.selectors import history as history_selectors
from chat.selectors import pins as pin_selectors
from chat.services import messages as message_services
from chat.services import pins as pin_services
from chat.services import rooms as room_services
from chat.services import saved as saved_services
from chatsite.errors import Conflict, Forbidden, NotFound
from projects import services as project_services
from projects.models import Membership
from tests.chat.test_consumers import hello, recv, subscribe

API = "/api/v1"


def loaded(user: Any, message: Any) -> Any:
    """The message as the API hands it to the services: read through the access check, with ``room.my_role``."""
    return history_selectors.message_get_for_user(user=user, message_id=message.id)


def archive(project: Any) -> None:
    project.archived = True
    project.save(update_fields=["archived"])


# --- Pin: who may -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("pinner", ["member", "admin", "owner"])
def test_author_admin_and_owner_pin_and_unpin(chat_world, make_message, pinner):
    """The author (here a plain member) pins their own message; project admins and owners pin anyone's."""
    message = make_message(chat_world["public"], chat_world["member"])
    by = chat_world[pinner]
    pin, created = pin_services.pin_create(message=loaded(by, message), by=by)
    assert created and (pin.room_id, pin.message_id, pin.pinned_by_id) == (message.room_id, message.id, by.id)
    again, created = pin_services.pin_create(message=loaded(by, message), by=by)
    assert not created and again.id == pin.id
    assert Pin.objects.filter(message=message).count() == 1
    assert pin_services.pin_delete(message=loaded(by, message), by=by) is True
    assert pin_services.pin_delete(message=loaded(by, message), by=by) is False  # idempotent
    assert not Pin.objects.exists()


@pytest.mark.django_db
def test_a_plain_member_may_neither_pin_nor_unpin_someone_elses_message(chat_world, make_message):
    message = make_message(chat_world["public"], chat_world["owner"])
    member = chat_world["member"]
    with pytest.raises(Forbidden) as refused:
        pin_services.pin_create(message=loaded(member, message), by=member)
    assert refused.value.code == "forbidden"
    assert not Pin.objects.exists()
    pin_services.pin_create(message=loaded(chat_world["owner"], message), by=chat_world["owner"])
    with pytest.raises(Forbidden):
        pin_services.pin_delete(message=loaded(member, message), by=member)
    assert Pin.objects.filter(message=message).exists()


@pytest.mark.django_db
def test_a_non_reader_never_reaches_the_pin_services(chat_world, make_message):
    """message_get_for_user answers 404 before any service runs: the project admin outside a private room too."""
    message = make_message(chat_world["private"], chat_world["insider"])
    for user in (chat_world["outsider"], chat_world["admin"], chat_world["member"]):
        with pytest.raises(NotFound):
            loaded(user, message)


@pytest.mark.django_db
def test_a_deleted_message_cannot_be_pinned_but_its_pin_can_be_removed(chat_world, make_message):
    owner = chat_world["owner"]
    message = make_message(chat_world["public"], owner)
    pin_services.pin_create(message=loaded(owner, message), by=owner)
    other = make_message(chat_world["public"], owner)
    for target in (message, other):
        message_services.message_delete(message=loaded(owner, target), by=owner)
    with pytest.raises(Conflict) as refused:
        pin_services.pin_create(message=loaded(owner, other), by=owner)
    assert refused.value.code == "deleted"
    # The deleted message's pin is listed nowhere, and may still be removed.
    assert pin_selectors.room_pins(room=chat_world["public"]) == []
    assert pin_selectors.pinned_message_ids(message_ids=[message.id, other.id]) == set()
    assert pin_services.pin_delete(message=loaded(owner, message), by=owner) is True


@pytest.mark.django_db
def test_archived_project_is_read_only_for_pins(chat_world, make_message):
    owner = chat_world["owner"]
    message = make_message(chat_world["public"], owner)
    pinned = make_message(chat_world["public"], owner)
    pin_services.pin_create(message=loaded(owner, pinned), by=owner)
    archive(chat_world["project"])
    for write in (pin_services.pin_create, pin_services.pin_delete):
        for target in (message, pinned):
            with pytest.raises(Forbidden) as refused:
                write(message=loaded(owner, target), by=owner)
            assert refused.value.code == "archived"
    assert list(Pin.objects.values_list("message_id", flat=True)) == [pinned.id]


@pytest.mark.django_db
def test_the_pin_cap_refuses_one_more_and_counts_only_live_messages(chat_world, make_message, settings):
    settings.CHAT_PINS_MAX = 3
    owner = chat_world["owner"]
    messages = [make_message(chat_world["public"], owner) for _ in range(5)]
    for message in messages[:3]:
        pin_services.pin_create(message=loaded(owner, message), by=owner)
    with pytest.raises(Conflict) as refused:
        pin_services.pin_create(message=loaded(owner, messages[3]), by=owner)
    assert refused.value.code == "too_many_pins" and "3 pinned messages" in refused.value.message
    # Pinning one already pinned is still an answer, not a refusal.
    assert pin_services.pin_create(message=loaded(owner, messages[0]), by=owner)[1] is False
    # Another room has its own cap.
    elsewhere = make_message(chat_world["private"], chat_world["insider"])
    assert pin_services.pin_create(message=loaded(chat_world["insider"], elsewhere), by=chat_world["insider"])[1]
    # A deleted message's pin no longer counts.
    message_services.message_delete(message=loaded(owner, messages[0]), by=owner)
    assert pin_services.pin_create(message=loaded(owner, messages[3]), by=owner)[1] is True
    with pytest.raises(Conflict):
        pin_services.pin_create(message=loaded(owner, messages[4]), by=owner)


# --- Pin: races ---------------------------------------------------------------


def _in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once, each in its own thread and database connection: their results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test looks at what each got
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.django_db(transaction=True)
def test_two_admins_pinning_the_same_message_at_once_make_one_pin(chat_world, make_message):
    message = make_message(chat_world["public"], chat_world["member"])
    admins = [chat_world["admin"], chat_world["owner"]]
    for _ in range(5):
        results = _in_threads(*[lambda by=by: pin_services.pin_create(message=loaded(by, message), by=by) for by in admins])
        assert not [r for r in results if isinstance(r, Exception)], results
        assert sorted(created for _, created in results) == [False, True]
        assert len({pin.id for pin, _ in results}) == 1
        assert Pin.objects.filter(message=message).count() == 1
        Pin.objects.all().delete()


@pytest.mark.django_db(transaction=True)
def test_a_pin_that_loses_the_insert_to_an_uncommitted_one_returns_it(chat_world, make_message):
    """The unique constraint and the savepoint: an insert the room lock did not order (a row written
    without the service) makes the service wait, then answer with that pin instead of an error."""
    owner, admin = chat_world["owner"], chat_world["admin"]
    message = make_message(chat_world["public"], chat_world["member"])
    inserted, release = threading.Event(), threading.Event()

    def raw_pin() -> None:
        try:
            with transaction.atomic():
                Pin.objects.create(room_id=message.room_id, message_id=message.id, pinned_by=owner)
                inserted.set()
                release.wait(timeout=10)
        finally:
            connections.close_all()

    writer = threading.Thread(target=raw_pin)
    writer.start()
    assert inserted.wait(timeout=10)
    threading.Timer(0.3, release.set).start()  # commits while the service waits on the unique index
    pin, created = pin_services.pin_create(message=loaded(admin, message), by=admin)
    writer.join(timeout=10)
    assert created is False and pin.pinned_by_id == owner.id
    assert Pin.objects.filter(message=message).count() == 1


@pytest.mark.django_db(transaction=True)
def test_pins_at_once_never_pass_the_cap(chat_world, make_message, settings):
    settings.CHAT_PINS_MAX = 2
    owner = chat_world["owner"]
    first, *others = [make_message(chat_world["public"], owner) for _ in range(5)]
    pin_services.pin_create(message=loaded(owner, first), by=owner)
    results = _in_threads(*[lambda m=m: pin_services.pin_create(message=loaded(owner, m), by=owner) for m in others])
    assert sum(isinstance(r, tuple) and r[1] for r in results) == 1
    assert all(isinstance(r, Conflict) and r.code == "too_many_pins" for r in results if not isinstance(r, tuple))
    assert Pin.objects.count() == 2


# --- Saved: services ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("reader", ["member", "insider", "admin", "owner"])
def test_any_reader_saves_and_unsaves_idempotently(chat_world, make_message, reader):
    message = make_message(chat_world["public"], chat_world["owner"])
    user = chat_world[reader]
    saved, created = saved_services.message_save(message=loaded(user, message), user=user)
    assert created and (saved.user_id, saved.message_id) == (user.id, message.id)
    again, created = saved_services.message_save(message=loaded(user, message), user=user)
    assert not created and again.id == saved.id
    assert saved_services.message_unsave(message=loaded(user, message), user=user) is True
    assert saved_services.message_unsave(message=loaded(user, message), user=user) is False
    assert not SavedMessage.objects.exists()


@pytest.mark.django_db
def test_saves_are_per_user_in_archived_projects_too_but_not_of_deleted_messages(chat_world, make_message):
    owner, member, insider = chat_world["owner"], chat_world["member"], chat_world["insider"]
    message = make_message(chat_world["public"], owner)
    gone = make_message(chat_world["public"], owner)
    private = make_message(chat_world["private"], insider)
    saved_services.message_save(message=loaded(owner, message), user=owner)
    assert saved_services.message_save(message=loaded(member, message), user=member)[1] is True
    message_services.message_delete(message=loaded(owner, gone), by=owner)
    archive(chat_world["project"])
    assert saved_services.message_save(message=loaded(insider, private), user=insider)[1] is True
    with pytest.raises(Conflict) as refused:
        saved_services.message_save(message=loaded(member, gone), user=member)
    assert refused.value.code == "deleted"
    assert sorted(SavedMessage.objects.values_list("user__username", "message_id")) == sorted(
        [("owner", message.id), ("member", message.id), ("insider", private.id)]
    )


@pytest.mark.django_db(transaction=True)
def test_two_saves_at_once_make_one_row(chat_world, make_message):
    message = make_message(chat_world["public"], chat_world["owner"])
    member = chat_world["member"]
    results = _in_threads(*[lambda: saved_services.message_save(message=loaded(member, message), user=member)] * 4)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(created for _, created in results) == 1
    assert SavedMessage.objects.filter(user=member, message=message).count() == 1


# --- Events -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_write_that_rolls_back_publishes_nothing(chat_world, make_message, django_capture_on_commit_callbacks):
    owner = chat_world["owner"]
    message = make_message(chat_world["public"], owner)
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                pin_services.pin_create(message=loaded(owner, message), by=owner)
                saved_services.message_save(message=loaded(owner, message), user=owner)
                raise RuntimeError("rolled back")
    assert callbacks == [] and not Pin.objects.exists() and not SavedMessage.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        pin_services.pin_create(message=loaded(owner, message), by=owner)
        pin_services.pin_create(message=loaded(owner, message), by=owner)  # nothing new: nothing to say
    assert len(callbacks) == 3  # the pin's cache invalidation, the unread tail carried to its seq, its event


@pytest.mark.django_db(transaction=True)
async def test_room_sockets_hear_pins_and_unpins(world):
    room, author, admin = world["public"], world["member"], world["admin"]
    watcher = await hello(world["tokens"]["insider"])  # any reader of the room
    await subscribe(watcher, room.id)
    message, _ = await database_sync_to_async(message_services.message_create)(room=room, author=author, body="pin me")
    assert (await recv(watcher))["type"] == "message.new"

    pin, _ = await database_sync_to_async(lambda: pin_services.pin_create(message=loaded(admin, message), by=admin))()
    pinned = await recv(watcher)
    assert pinned["type"] == "message.pinned"
    assert pinned["room"] == room.id
    assert pinned["message"]["id"] == message.id and pinned["message"]["body"] == "pin me"
    assert pinned["message"]["author"]["username"] == author.username
    assert pinned["pinned_by"] == {"id": admin.id, "username": admin.username, "display_name": admin.username}
    assert pinned["pinned_at"] == pin.created_at.isoformat()
    assert pinned["seq"] == 2  # the pin takes the room's next seq, after the message's 1

    await database_sync_to_async(lambda: pin_services.pin_delete(message=loaded(author, message), by=author))()
    assert await recv(watcher) == {"type": "message.unpinned", "room": room.id, "id": message.id, "seq": 3}
    # Unpinning again changes nothing and says nothing.
    await database_sync_to_async(lambda: pin_services.pin_delete(message=loaded(author, message), by=author))()
    assert await watcher.receive_nothing(timeout=0.3)
    await watcher.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_saves_reach_every_socket_of_the_saver_and_nobody_else(world):
    room, member = world["public"], world["member"]
    tab, phone = await hello(world["tokens"]["member"]), await hello(world["tokens"]["member"])
    other = await hello(world["tokens"]["owner"])
    await subscribe(other, room.id)
    message, _ = await database_sync_to_async(message_services.message_create)(room=room, author=world["owner"], body="keep")
    assert (await recv(other))["type"] == "message.new"

    saved, _ = await database_sync_to_async(lambda: saved_services.message_save(message=loaded(member, message), user=member))()
    for socket in (tab, phone):
        event = await recv(socket)
        assert event["type"] == "message.saved"
        assert event["message"]["id"] == message.id and event["message"]["body"] == "keep"
        assert event["saved_at"] == saved.created_at.isoformat()
    await database_sync_to_async(lambda: saved_services.message_unsave(message=loaded(member, message), user=member))()
    for socket in (tab, phone):
        assert await recv(socket) == {"type": "message.unsaved", "id": message.id, "room": room.id}
    assert await other.receive_nothing(timeout=0.3)
    for socket in (tab, phone, other):
        await socket.disconnect()


# --- Selectors: query counts and what is listed -------------------------------


def _pin_many(world: dict[str, Any], make_message, make_user, count: int) -> list[Any]:
    """``count`` pinned messages in the public room, by as many authors, pinned by the owner and the admin in turn."""
    pinned = []
    for i in range(count):
        author = make_user()
        Membership.objects.create(project=world["project"], user=author)
        message = make_message(world["public"], author)
        by = (world["owner"], world["admin"])[i % 2]
        pin_services.pin_create(message=loaded(by, message), by=by)
        pinned.append(message)
    return pinned


def _queries(call: Callable[[], Any]) -> tuple[Any, int]:
    with CaptureQueriesContext(connection) as ctx:
        result = call()
    return result, len(ctx.captured_queries)


def _pin_list(room: Any) -> list[dict[str, Any]]:
    return pin_selectors.pin_dicts(pin_selectors.room_pins(room=room))


@pytest.mark.django_db
def test_room_pins_take_as_many_queries_for_one_pin_as_for_thirty(chat_world, make_message, make_user):
    room = chat_world["public"]
    first = _pin_many(chat_world, make_message, make_user, 1)
    Reaction.objects.create(message=first[0], user=chat_world["member"], emoji="\N{THUMBS UP SIGN}")
    cache.clear()  # every message, reaction and profile read from the database
    pins, one = _queries(lambda: _pin_list(room))
    assert [p["message"]["id"] for p in pins] == [first[0].id]
    assert pins[0]["message"]["reactions"][0]["user_ids"] == [chat_world["member"].id]  # as history shows it
    more = first + _pin_many(chat_world, make_message, make_user, 29)
    cache.clear()
    pins, thirty = _queries(lambda: _pin_list(room))
    assert one == thirty
    assert [p["message"]["id"] for p in pins] == [m.id for m in reversed(more)]  # newest pin first
    assert {p["pinned_by"]["username"] for p in pins} == {chat_world["owner"].username, chat_world["admin"].username}
    assert len({p["message"]["author"]["username"] for p in pins}) == 30
    _, warm = _queries(lambda: _pin_list(room))
    assert warm == 1  # the pins; the messages come from the cache


@pytest.mark.django_db
def test_pinned_message_ids_is_one_query(chat_world, make_message, make_user):
    pinned = _pin_many(chat_world, make_message, make_user, 3)
    unpinned = make_message(chat_world["public"], chat_world["owner"])
    owner = chat_world["owner"]
    message_services.message_delete(message=loaded(owner, pinned[2]), by=owner)
    ids, count = _queries(lambda: pin_selectors.pinned_message_ids(message_ids=[*(m.id for m in pinned), unpinned.id]))
    assert ids == {pinned[0].id, pinned[1].id} and count == 1
    assert _queries(lambda: pin_selectors.pinned_message_ids(message_ids=[])) == (set(), 0)


def _save_many(user: Any, rooms: list[Any], authors: list[Any], make_message, count: int) -> list[Any]:
    messages = []
    for i in range(count):
        message = make_message(rooms[i % len(rooms)], authors[i % len(authors)])
        saved_services.message_save(message=loaded(user, message), user=user)
        messages.append(message)
    return messages


def _saved_list(user: Any) -> list[dict[str, Any]]:
    return pin_selectors.saved_dicts(pin_selectors.saved_for_user(user=user, limit=50))


@pytest.mark.django_db
def test_saved_list_takes_as_many_queries_for_one_save_as_for_thirty(chat_world, make_message):
    insider = chat_world["insider"]
    rooms = [chat_world["public"], chat_world["private"]]
    authors = [chat_world["owner"], insider]
    first = _save_many(insider, rooms, authors, make_message, 1)
    cache.clear()
    items, one = _queries(lambda: _saved_list(insider))
    assert [i["message"]["id"] for i in items] == [first[0].id]
    saved = first + _save_many(insider, rooms, authors, make_message, 29)
    cache.clear()
    items, thirty = _queries(lambda: _saved_list(insider))
    assert one == thirty
    assert [i["message"]["id"] for i in items] == [m.id for m in reversed(saved)]
    _, warm = _queries(lambda: _saved_list(insider))
    assert warm == 1


@pytest.mark.django_db
def test_saved_list_leaves_out_deleted_messages_and_rooms_the_user_can_no_longer_read(chat_world, make_message):
    insider, owner = chat_world["insider"], chat_world["owner"]
    public = make_message(chat_world["public"], owner)
    private = make_message(chat_world["private"], insider)
    gone = make_message(chat_world["public"], owner)
    for message in (public, private, gone):
        saved_services.message_save(message=loaded(insider, message), user=insider)
    message_services.message_delete(message=loaded(owner, gone), by=owner)

    def listed() -> list[int]:
        return [s.message_id for s in pin_selectors.saved_for_user(user=insider, limit=50)]

    assert listed() == [private.id, public.id]
    room_services.room_member_add(room=chat_world["private"], username=owner.username, by=insider)  # not the last
    room_services.room_member_remove(room=chat_world["private"], user=insider, by=insider)
    assert listed() == [public.id]
    project_services.membership_remove(project=chat_world["project"], user=insider, by=insider)
    assert listed() == []
    assert SavedMessage.objects.filter(user=insider).count() == 3  # the rows stay, unseen


# --- API ----------------------------------------------------------------------


def _call(client: Any, method: str, path: str) -> Any:
    return getattr(client, method)(f"{API}{path}", content_type="application/json")


@pytest.mark.django_db
def test_pin_api(chat_world, make_message, api_client):
    owner, member = api_client(chat_world["owner"]), api_client(chat_world["member"])
    message = make_message(chat_world["public"], chat_world["insider"])
    created = _call(owner, "put", f"/messages/{message.id}/pin")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["message"]["id"] == message.id and body["pinned_by"]["username"] == "owner" and body["pinned_at"]
    assert _call(owner, "put", f"/messages/{message.id}/pin").json() == body
    assert _call(owner, "put", f"/messages/{message.id}/pin").status_code == 200

    listed = _call(member, "get", f"/rooms/{chat_world['public'].id}/pins")
    assert listed.status_code == 200 and listed.json() == {"items": [body]}

    refused = _call(member, "delete", f"/messages/{message.id}/pin")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    for _ in range(2):
        assert _call(owner, "delete", f"/messages/{message.id}/pin").status_code == 204
    assert _call(member, "get", f"/rooms/{chat_world['public'].id}/pins").json() == {"items": []}

    message_services.message_delete(message=loaded(chat_world["owner"], message), by=chat_world["owner"])
    deleted = _call(owner, "put", f"/messages/{message.id}/pin")
    assert deleted.status_code == 409 and deleted.json()["code"] == "deleted"


@pytest.mark.django_db
def test_pin_api_cap_and_archived_are_clear_errors(chat_world, make_message, api_client, settings):
    settings.CHAT_PINS_MAX = 1
    owner = api_client(chat_world["owner"])
    first, second = (make_message(chat_world["public"], chat_world["owner"]) for _ in range(2))
    assert _call(owner, "put", f"/messages/{first.id}/pin").status_code == 201
    full = _call(owner, "put", f"/messages/{second.id}/pin")
    assert full.status_code == 409 and full.json()["code"] == "too_many_pins"
    archive(chat_world["project"])
    for method in ("put", "delete"):
        refused = _call(owner, method, f"/messages/{first.id}/pin")
        assert refused.status_code == 403 and refused.json()["code"] == "archived"
    assert _call(owner, "get", f"/rooms/{chat_world['public'].id}/pins").status_code == 200


@pytest.mark.django_db
def test_saved_api_pages_newest_first(chat_world, make_message, api_client):
    member = api_client(chat_world["member"])
    messages = [make_message(chat_world["public"], chat_world["owner"]) for _ in range(5)]
    for message in messages:
        assert _call(member, "put", f"/messages/{message.id}/saved").status_code == 201
    again = _call(member, "put", f"/messages/{messages[0].id}/saved")
    assert again.status_code == 200 and again.json()["message"]["id"] == messages[0].id

    seen, cursor = [], None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = _call(member, "get", f"/me/saved{query}")
        assert page.status_code == 200, page.content
        body = page.json()
        assert len(body["items"]) <= 2
        seen += [item["message"]["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [m.id for m in reversed(messages)]

    trimmed = _call(member, "get", "/me/saved?fields=saved_at&limit=1").json()
    assert list(trimmed["items"][0]) == ["saved_at"]
    bad = _call(member, "get", "/me/saved?cursor=nope")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    unknown = _call(member, "get", "/me/saved?fields=nope")
    assert unknown.status_code == 400 and unknown.json()["code"] == "invalid_fields"

    for _ in range(2):
        assert _call(member, "delete", f"/messages/{messages[0].id}/saved").status_code == 204
    assert len(_call(member, "get", "/me/saved").json()["items"]) == 4
    # Someone else's list is their own.
    assert _call(api_client(chat_world["owner"]), "get", "/me/saved").json() == {"items": [], "next_cursor": None}


@pytest.mark.django_db
def test_pin_and_saved_endpoints_are_in_the_openapi_document(api_client, chat_world):
    schema = api_client(chat_world["member"]).get(f"{API}/openapi.json").json()
    paths = schema["paths"]
    assert set(paths[f"{API}/rooms/{{room_id}}/pins"]) == {"get"}
    assert set(paths[f"{API}/messages/{{message_id}}/pin"]) == {"put", "delete"}
    assert set(paths[f"{API}/messages/{{message_id}}/saved"]) == {"put", "delete"}
    assert set(paths[f"{API}/me/saved"]) == {"get"}
    assert paths[f"{API}/rooms/{{room_id}}/pins"]["get"]["tags"] == ["pins"]
    assert paths[f"{API}/me/saved"]["get"]["tags"] == ["saved"]
    assert orjson.dumps(schema)


@pytest.mark.django_db(transaction=True)
async def test_pins_and_saves_over_the_socket(world):
    from tests.chat.test_consumers import recv_until, send

    room, author = world["public"], world["member"]
    watcher = await hello(world["tokens"]["insider"])
    await subscribe(watcher, room.id)
    message, _ = await database_sync_to_async(message_services.message_create)(room=room, author=author, body="over the socket")
    assert (await recv(watcher))["type"] == "message.new"
    alice = await hello(world["tokens"]["member"])  # the author: she may pin

    await send(alice, {"type": "pin", "message": message.id, "ref": "p1"})
    ack, _ = await recv_until(alice, "pin.ack")
    assert ack == {"type": "pin.ack", "message": message.id, "changed": True, "ref": "p1"}
    pinned = await recv(watcher)
    assert pinned["type"] == "message.pinned" and pinned["message"]["id"] == message.id
    await send(alice, {"type": "pin", "message": message.id})
    assert (await recv_until(alice, "pin.ack"))[0]["changed"] is False  # already pinned: nothing to say
    # Someone who is neither its author nor an admin gets an error frame, and nothing changes.
    await send(watcher, {"type": "unpin", "message": message.id, "ref": "u1"})
    error, _ = await recv_until(watcher, "error")
    assert error["code"] == "forbidden" and error["ref"] == "u1"
    await send(alice, {"type": "unpin", "message": message.id})
    assert (await recv_until(alice, "unpin.ack"))[0]["changed"] is True
    assert (await recv(watcher))["type"] == "message.unpinned"

    # A save is the saver's own: their sockets hear of it.
    await send(watcher, {"type": "save", "message": message.id})
    assert (await recv_until(watcher, "save.ack"))[0]["changed"] is True
    saved, _ = await recv_until(watcher, "message.saved")
    assert saved["message"]["id"] == message.id
    await send(watcher, {"type": "unsave", "message": message.id})
    assert (await recv_until(watcher, "unsave.ack"))[0]["changed"] is True
    await send(watcher, {"type": "save", "message": 987654321})
    assert (await recv_until(watcher, "error"))[0]["code"] == "not_found"
    assert not await database_sync_to_async(SavedMessage.objects.exists)()
    await alice.disconnect()
    await watcher.disconnect()
