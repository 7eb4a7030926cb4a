"""chat.selectors beyond what the API and page tests cover."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from chat import cache_keys
from chat.models import Message, ReadMarker, Room
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.selectors import unread as unread_selectors
from chatsite import env
from perf.cache import cache_key, cache_stats, cache_stats_reset


def test_opening_a_room_and_scrolling_back_fill_the_next_older_pages_on_a_miss(
    chat_world, make_message, django_assert_num_queries
):
    room, member = chat_world["public"], chat_world["member"]
    created = [make_message(room, member, f"m{i}").id for i in range(140)]
    cache.clear()

    def scroll(before: int, expected: list[int], queries: int) -> list[dict]:
        with django_assert_num_queries(queries):
            page = history_selectors.room_history_dicts(room=room, before=before, limit=20)
        assert [m["id"] for m in page] == expected
        assert page[0]["author"]["username"] == member.username and page[0]["body"]
        return page

    # A cold newest page: the id query, one fill that also loads the next two
    # pages (their messages, reactions and threads), and the authors' profiles.
    with django_assert_num_queries(5):
        page = history_selectors.room_history_dicts(room=room, limit=20)
    assert [m["id"] for m in page] == created[-20:]
    cache_stats_reset()
    for expected in (created[-40:-20], created[-60:-40]):
        page = scroll(page[0]["id"], expected, 1)  # the id query only: every message is cached
    assert cache_stats()["messages"]["misses"] == 0 and cache_stats()["messages"]["hits"] == 40
    # Past the read-ahead: a miss again, which fills the next two older pages in turn.
    page = scroll(page[0]["id"], created[-80:-60], 4)
    for expected in (created[-100:-80], created[-120:-100]):
        page = scroll(page[0]["id"], expected, 1)
    page = scroll(page[0]["id"], created[-140:-120], 4)


def test_read_ahead_entries_are_not_stale_after_an_edit(chat_world, make_message):
    from chat.services import messages as message_services

    room, member = chat_world["public"], chat_world["member"]
    created = [make_message(room, member, f"m{i}") for i in range(30)]
    cache.clear()
    history_selectors.room_history_dicts(room=room, before=created[-10].id, limit=10)  # fills 10 + 10 ahead
    target = history_selectors.message_get_for_user(user=member, message_id=created[2].id)
    message_services.message_edit(message=target, by=member, body="edited")
    page = history_selectors.room_history_dicts(room=room, before=created[10].id, limit=10)
    assert [m["body"] for m in page if m["id"] == created[2].id] == ["edited"]


# --- unread counts from shared room tails ----------------------------------------------

CAP = unread_selectors.UNREAD_CAP
TAIL = unread_selectors.UNREAD_TAIL


@pytest.mark.parametrize(
    "tail,last_read,expected",
    [
        ([], 0, 0),  # an empty room
        ([(5, 2, False), (4, 2, False), (3, 1, False)], 3, 2),  # stops at the marker
        ([(5, 1, False), (4, 2, True), (3, 2, False)], 0, 1),  # own and deleted messages do not count
        ([(i, 2, False) for i in range(CAP + 50, 50, -1)], 0, CAP),  # the cap is reached inside the tail
        ([(i, 1, False) for i in range(TAIL, 0, -1)], 0, None),  # full tail of own messages: older ones may count
        ([(i, 2, False) for i in range(TAIL - 1, 0, -1)], 0, CAP),  # not full: the whole room, capped
        ([(i, 2, False) for i in range(CAP - 1, 0, -1)], 0, CAP - 1),  # not full: the whole room
        # A full tail with a few of the reader's own and deleted messages still reaches the cap.
        ([(i, 1 if i % 10 == 0 else 2, i % 15 == 0) for i in range(TAIL, 0, -1)], 0, CAP),
    ],
)
def test_unread_from_a_tail(tail, last_read, expected):
    assert unread_selectors._unread_from_tail(tail, last_read=last_read, user_id=1) == expected


def test_a_tail_takes_a_new_message_once_and_keeps_its_length():
    tail = [(5, 2, False), (4, 1, True)]
    assert unread_selectors.unread_tail_with(tail, message_id=6, author_id=3) == [(6, 3, False), *tail]
    # A reader may already have seen the message: it is not counted twice.
    assert unread_selectors.unread_tail_with([(6, 3, False), *tail], message_id=6, author_id=3) == [(6, 3, False), *tail]
    full = [(i, 2, False) for i in range(TAIL + 10, 10, -1)]
    assert unread_selectors.unread_tail_with(full, message_id=TAIL + 11, author_id=2) == [(TAIL + 11, 2, False), *full[:-1]]


@pytest.mark.django_db(transaction=True)
def test_a_new_message_moves_the_cached_tail_so_the_next_room_list_reads_no_tail(
    chat_world, make_message, django_assert_num_queries
):
    from chat.services import messages as message_services

    room, owner, member, project = chat_world["public"], chat_world["owner"], chat_world["member"], chat_world["project"]
    for i in range(3):
        make_message(room, owner, f"t{i}")
    cache.clear()
    room_selectors.rooms_for_user(user=member, project=project)  # fills the tails and the list
    message_services.message_create(room=room, author=owner, body="new")
    gone, _ = message_services.message_create(room=room, author=owner, body="soon gone")
    cache_stats_reset()
    with django_assert_num_queries(1):  # the live counters and markers only
        rooms = {r.id: r.unread for r in room_selectors.rooms_for_user(user=member, project=project)}
    assert rooms[room.id] == _exact_unread(room, member) == 5
    assert cache_stats()["unread"]["misses"] == 0
    # Only the current tail is kept, for as long as the other exact entries.
    room_row = Room.objects.get(pk=room.id)
    assert len(cache.keys(cache_key("unread", room.id, "*"))) == 1
    assert cache.ttl(cache_keys.unread_tail_key(room.id, (room_row.last_message_seq, 0))) > env.CACHE_TTL
    # A delete gives the room a new unread state (no key is searched for or dropped): the count follows it.
    with django_assert_num_queries(5):  # savepoint, the message, the room's seq and delete count, the change, release
        message_services.message_delete(message=gone, by=owner)
    assert Room.objects.get(pk=room.id).messages_deleted == 1
    message_services.message_create(room=room, author=member, body="mine")  # nothing cached to move: no tail written
    rooms = {r.id: r.unread for r in room_selectors.rooms_for_user(user=member, project=project)}
    assert rooms[room.id] == _exact_unread(room, member) == 4


def _exact_unread(room, user) -> int:
    marker = ReadMarker.objects.filter(room=room, user=user).values_list("last_read_message_id", flat=True).first() or 0
    live = Message.objects.filter(room=room, id__gt=marker, deleted_at__isnull=True).exclude(author=user)
    return min(live.count(), CAP)


def test_unread_counts_match_the_database_in_every_case(chat_world, make_room, make_message):
    """Small and large rooms, markers inside and far behind the tail, own and deleted messages."""
    from chat.services import messages as message_services

    member, owner, project = chat_world["member"], chat_world["owner"], chat_world["project"]
    busy = make_room(project, creator=owner, name="busy")
    mine = make_room(project, creator=owner, name="mostly-mine")
    for i in range(CAP + 30):
        make_message(busy, owner if i % 3 else member, f"b{i}")
    for i in range(CAP + 10):
        make_message(mine, member if i >= 20 else owner, f"m{i}")  # the newest CAP are the reader's own
    small = chat_world["public"]
    first = make_message(small, owner, "s1")
    make_message(small, owner, "s2")
    gone = make_message(small, owner, "s3")
    message_services.message_delete(message=history_selectors.message_get_for_user(user=owner, message_id=gone.id), by=owner)
    markers = {busy: 0, mine: 0, small: first.id}
    for room, marker in markers.items():
        ReadMarker.objects.update_or_create(room=room, user=member, defaults={"last_read_message_id": marker})
    for attempt in range(2):  # cold, then from the cache
        rooms = {r.id: r.unread for r in room_selectors.rooms_for_user(user=member, project=project)}
        for room in markers:
            assert rooms[room.id] == _exact_unread(room, member), (attempt, room.name)
    assert rooms[mine.id] == 20 - 0 and rooms[small.id] == 1


def test_readers_of_a_room_share_its_tail(chat_world, make_message, django_assert_num_queries):
    room, owner = chat_world["public"], chat_world["owner"]
    for i in range(5):
        make_message(room, owner, f"x{i}")
    readers = [chat_world["member"], chat_world["admin"]]
    cache.clear()
    room_selectors.rooms_for_user(user=readers[0], project=chat_world["project"])  # fills the tails
    cache_stats_reset()
    room_selectors.rooms_for_user(user=readers[1], project=chat_world["project"])
    stats = cache_stats()["unread"]
    assert stats["misses"] == 0 and stats["hits"] >= 1


def test_without_a_cache_unread_counts_come_straight_from_the_database(chat_world, make_message, settings):
    room, owner, member = chat_world["public"], chat_world["owner"], chat_world["member"]
    for i in range(3):
        make_message(room, owner, f"u{i}")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    from perf.cache import caching_enabled

    assert not caching_enabled()
    rooms = {r.id: r.unread for r in room_selectors.rooms_for_user(user=member, project=chat_world["project"])}
    assert rooms[room.id] == _exact_unread(room, member) == 3


@pytest.mark.django_db(transaction=True)
def test_the_room_list_fills_access_to_its_rooms_and_loses_it_with_them(chat_world, django_assert_num_queries):
    from chatsite.errors import NotFound
    from projects import services as project_services

    project, insider, member = chat_world["project"], chat_world["insider"], chat_world["member"]
    public, private = chat_world["public"], chat_world["private"]
    cache.clear()
    listed = {r.id for r in room_selectors.rooms_for_user(user=insider, project=project)}
    assert listed == {public.id, private.id}
    cache_stats_reset()
    with django_assert_num_queries(2):  # the rooms themselves, not the user's access to them
        roles = {rid: room_selectors.room_get_for_user(user=insider, room_id=rid).my_role for rid in listed}
    assert roles == {public.id: "member", private.id: "member"}
    assert cache_stats()["access"] == {"hits": 2, "misses": 0, "ratio": 1.0}
    assert cache_stats()["rooms"]["misses"] == 2

    # A room the user may not read is not listed, so no access entry says otherwise.
    assert private.id not in {r.id for r in room_selectors.rooms_for_user(user=member, project=project)}
    with pytest.raises(NotFound):
        room_selectors.room_get_for_user(user=member, room_id=private.id)

    # The writes that change access drop what the list filled.
    public.is_private = True
    public.save()
    with pytest.raises(NotFound):
        room_selectors.room_get_for_user(user=insider, room_id=public.id)
    room_selectors.rooms_for_user(user=insider, project=project)
    project_services.membership_remove(project=project, user=insider, by=chat_world["owner"])
    with pytest.raises(NotFound):
        room_selectors.room_get_for_user(user=insider, room_id=private.id)
    assert room_selectors.rooms_for_user(user=insider, project=project) == []


def test_a_cached_room_carries_its_kind_so_reading_it_asks_the_database_nothing(chat_world, django_assert_num_queries):
    """Rooms are cached with every field a request reads (the DM check included): a warm lookup is query-free."""
    from chat.cache_keys import room_cache_key
    from chat.selectors import rooms as room_selectors
    from perf.cache import backend

    room, member = chat_world["public"], chat_world["member"]
    cache.clear()
    room_selectors.room_get_for_user(user=member, room_id=room.id)
    cached = backend().get(room_cache_key(room.id))
    assert "kind" in cached.__dict__
    with django_assert_num_queries(0):
        found = room_selectors.room_get_for_user(user=member, room_id=room.id)
        assert room_selectors.rooms_dm_ids(rooms=[found]) == set()
