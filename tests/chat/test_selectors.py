"""chat.selectors beyond what the API and page tests cover."""

from __future__ import annotations

from django.core.cache import cache

from chat import selectors
from perf.cache import cache_stats, cache_stats_reset


def test_scrolling_back_fills_the_next_older_pages_on_a_miss(chat_world, make_message, django_assert_num_queries):
    room, member = chat_world["public"], chat_world["member"]
    created = [make_message(room, member, f"m{i}").id for i in range(140)]
    cache.clear()
    newest = selectors.room_history_dicts(room=room, limit=20)
    assert [m["id"] for m in newest] == created[-20:]
    cursor = newest[0]["id"]
    # A cold older page: the id query, then one fill that also loads the next two pages.
    with django_assert_num_queries(2):
        page = selectors.room_history_dicts(room=room, before=cursor, limit=20)
    assert [m["id"] for m in page] == created[-40:-20]
    cache_stats_reset()
    for expected in (created[-60:-40], created[-80:-60]):
        with django_assert_num_queries(1):  # the id query only: every message is cached
            page = selectors.room_history_dicts(room=room, before=page[0]["id"], limit=20)
        assert [m["id"] for m in page] == expected
        assert page[0]["author"]["username"] == member.username and page[0]["body"]
    assert cache_stats()["messages"]["misses"] == 0 and cache_stats()["messages"]["hits"] == 40
    with django_assert_num_queries(2):  # past the read-ahead: a miss again
        page = selectors.room_history_dicts(room=room, before=page[0]["id"], limit=20)
    assert [m["id"] for m in page] == created[-100:-80]


def test_read_ahead_entries_are_not_stale_after_an_edit(chat_world, make_message):
    from chat import services

    room, member = chat_world["public"], chat_world["member"]
    created = [make_message(room, member, f"m{i}") for i in range(30)]
    cache.clear()
    selectors.room_history_dicts(room=room, before=created[-10].id, limit=10)  # fills 10 + 10 ahead
    target = selectors.message_get_for_user(user=member, message_id=created[2].id)
    services.message_edit(message=target, by=member, body="edited")
    page = selectors.room_history_dicts(room=room, before=created[10].id, limit=10)
    assert [m["body"] for m in page if m["id"] == created[2].id] == ["edited"]
