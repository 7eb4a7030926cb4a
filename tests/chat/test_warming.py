"""Cache warming (chat.warming) on the real PostgreSQL and Redis: it fills what a room's
first reader would, with the same values, only what is missing, outside the counters,
and the writers' invalidation still covers what it filled."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from prometheus_client import REGISTRY

from chat import cache_keys
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.selectors import unread as unread_selectors
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from chat.warming import MAX_PAUSE, CacheWarmer, cache_warm, cache_warm_if_due, warm_marker_key, warm_message_count
from perf import cache as perf_cache
from tests.perf.test_cache import DEAD_REDIS
from tests.waiting import wait_until

API = "/api/v1"
PAGES = 3  # warmed pages per room in these tests


@pytest.fixture
def history(chat_world, seed_messages):
    """The public room with more messages than the warmed span, by two authors; the cache emptied."""
    room = chat_world["public"]
    messages = seed_messages(room, [chat_world["owner"], chat_world["member"]], warm_message_count(PAGES) + 60)
    cache.clear()
    return room, messages


def family_misses(family: str) -> int:
    return int(perf_cache.cache_stats().get(family, {}).get("misses", 0))


def message_entries(ids: list[int]) -> dict[str, object]:
    return cache.get_many([cache_keys.message_cache_key(i) for i in ids])


def test_a_warmed_room_opens_and_scrolls_back_its_warmed_pages_without_a_miss(history, chat_world, api_client):
    room, messages = history
    client = api_client(chat_world["insider"])
    cold = client.get(f"{API}/rooms/{room.id}/messages").content  # a reader fills the cache itself
    cache.clear()

    report = cache_warm(rooms=10, pages=PAGES)
    span = warm_message_count(PAGES)
    assert report.rooms == 2  # the public and the private room
    assert report.filled("messages") == span and report.filled("profiles") == 2
    assert set(message_entries([m.id for m in messages])) == {cache_keys.message_cache_key(m.id) for m in messages[-span:]}

    perf_cache.cache_stats_reset()
    newest = client.get(f"{API}/rooms/{room.id}/messages")
    assert newest.status_code == 200 and newest.content == cold
    cursor = orjson.loads(newest.content)["next_cursor"]
    for _ in range(PAGES - 1):
        older = orjson.loads(client.get(f"{API}/rooms/{room.id}/messages", {"cursor": cursor}).content)
        assert len(older["items"]) == 50
        cursor = older["next_cursor"]
    assert family_misses("messages") == family_misses("profiles") == family_misses("rooms") == 0
    assert perf_cache.cache_stats()["messages"]["hits"] == 51 * PAGES  # each page reads one row more
    beyond = client.get(f"{API}/rooms/{room.id}/messages", {"cursor": cursor})
    assert beyond.status_code == 200 and family_misses("messages") == 50  # the next page: only its newest row was warmed


def test_warmed_entries_are_the_ones_a_reader_stores(history, chat_world, api_client):
    room, messages = history
    client = api_client(chat_world["member"])
    client.get(f"{API}/rooms/{room.id}/messages")  # messages, profiles, room
    client.get(f"{API}/projects/{room.project.slug}/rooms")  # the unread tails
    room_row = type(room).objects.get(pk=room.pk)
    keys = [
        *(cache_keys.message_cache_key(m.id) for m in messages[-warm_message_count(PAGES) :]),
        *(cache_keys.profile_key(u.id) for u in (chat_world["owner"], chat_world["member"])),
        cache_keys.unread_tail_key(room.id, (room_row.last_message_seq, room_row.messages_deleted)),
    ]
    by_reader = cache.get_many(keys)
    reader_room = cache.get(cache_keys.room_cache_key(room.id))
    assert set(by_reader) == set(keys)
    cache.clear()

    cache_warm(rooms=10, pages=PAGES)
    assert cache.get_many(keys) == by_reader
    warmed_room = cache.get(cache_keys.room_cache_key(room.id))
    assert (warmed_room.pk, warmed_room.name, warmed_room.project.name) == (reader_room.pk, reader_room.name, reader_room.project.name)
    assert warmed_room.get_deferred_fields() == reader_room.get_deferred_fields() == {"last_message_seq", "last_message_at", "messages_deleted"}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_warming_counts_apart_from_readers_and_fills_only_what_is_missing(history):
    room, messages = history
    runs, filled = _sample("chat_cache_warm_runs_total"), _sample("chat_cache_warm_filled_total", family="messages")
    kept = cache_keys.message_cache_key(messages[-1].id)
    newer = {**history_selectors.message_cache_entry(messages[-1]), "body": "written after warming read the row"}
    cache.set(kept, newer)
    perf_cache.cache_stats_reset()

    report = cache_warm(rooms=10, pages=PAGES)
    assert perf_cache.cache_stats() == {}
    assert cache.get(kept) == newer
    span = warm_message_count(PAGES)
    assert report.families["messages"] == [1, span - 1]
    assert _sample("chat_cache_warm_runs_total") == runs + 1
    assert _sample("chat_cache_warm_filled_total", family="messages") == filled + span - 1
    again = cache_warm(rooms=10, pages=PAGES)
    assert again.families["messages"] == [span, 0] and again.filled("profiles") == 0


def test_writes_after_warming_are_read_fresh(history, chat_world, api_client):
    room, messages = history
    cache_warm(rooms=10, pages=PAGES)
    message_services.message_edit(message=messages[-1], by=messages[-1].author, body="edited after warming")
    message_services.message_delete(message=messages[-2], by=messages[-2].author)
    account_services.user_update_profile(user=chat_world["member"], first_name="Renamed", last_name="")
    items = orjson.loads(api_client(chat_world["member"]).get(f"{API}/rooms/{room.id}/messages").content)["items"]
    assert items[-1]["body"] == "edited after warming"
    assert items[-2]["deleted"] is True
    assert {i["author"]["display_name"] for i in items if i["author"]["id"] == chat_world["member"].id} == {"Renamed"}


def test_the_most_recently_active_rooms_go_first(chat_world, make_room, make_message):
    quiet, busy = chat_world["public"], make_room(chat_world["project"], name="busy")
    old = make_message(quiet, chat_world["owner"])
    new = make_message(busy, chat_world["owner"])
    cache.clear()

    report = cache_warm(rooms=1, pages=PAGES)
    assert report.rooms == 1
    assert set(message_entries([old.id, new.id])) == {cache_keys.message_cache_key(new.id)}
    assert cache.get(cache_keys.room_cache_key(busy.id)) is not None
    assert cache.get(cache_keys.room_cache_key(quiet.id)) is None


def test_warming_is_due_once_per_period_and_again_after_the_cache_is_emptied(history):
    assert cache_warm_if_due(rooms=10, pages=PAGES, every=600) is not None
    assert cache.ttl(warm_marker_key()) > 590
    assert cache_warm_if_due(rooms=10, pages=PAGES, every=600) is None
    cache.clear()
    report = cache_warm_if_due(rooms=10, pages=PAGES, every=600)
    assert report is not None and report.filled("messages") == warm_message_count(PAGES)
    assert cache_warm_if_due(rooms=0, pages=PAGES, every=600) is None


def test_nothing_is_warmed_with_caching_off_or_redis_down(history):
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}):
        assert cache_warm(rooms=10, pages=PAGES).rooms == 0
        assert cache_warm_if_due(rooms=10, pages=PAGES, every=600) is None
        assert CacheWarmer.from_settings() is None
    with override_settings(CACHES=DEAD_REDIS):
        assert cache_warm_if_due(rooms=10, pages=PAGES, every=600) is None


@pytest.mark.django_db(transaction=True)
def test_the_warmer_thread_warms_and_stops(history, settings):
    settings.CHAT_CACHE_WARM_ROOMS, settings.CHAT_CACHE_WARM_PAGES = 10, PAGES
    settings.CHAT_CACHE_WARM_EVERY, settings.CHAT_CACHE_WARM_CHECK = 600, 0.05
    warmer = CacheWarmer.from_settings()
    assert warmer is not None
    warmer.start()
    try:
        wait_until(lambda: warmer.runs >= 1, timeout=20, message="the warmer never warmed")
        assert warmer.runs == 1
        cache.clear()  # emptied: warmed again at a later check
        wait_until(lambda: warmer.runs >= 2, timeout=20, message="the warmer did not warm the emptied cache")
        assert warmer.runs == 2
    finally:
        warmer.stop()
        warmer.join(timeout=10)
    assert not warmer.is_alive()
    settings.CHAT_CACHE_WARM_ROOMS = 0
    assert CacheWarmer.from_settings() is None


def test_cache_warm_command_reports_what_it_filled(history, capsys):
    call_command("cache_warm", "--rooms", "5", "--pages", str(PAGES), "--json")
    report = orjson.loads(capsys.readouterr().out)
    assert report["rooms"] == 2
    assert report["families"]["messages"] == [0, warm_message_count(PAGES)]
    call_command("cache_warm", "--pages", "1")
    assert "cache warmed: 2 rooms" in capsys.readouterr().out
    assert cache_warm(rooms=10, pages=0).rooms == 0


def test_a_worker_starting_on_a_warm_cache_says_it_skipped(history, caplog):
    assert cache_warm_if_due(rooms=10, pages=PAGES, every=600) is not None
    warmer = CacheWarmer(rooms=10, pages=PAGES, every=600, check=30)
    with caplog.at_level("INFO", logger="chat.warming"):
        assert warmer.check_once() is None
        assert warmer.check_once() is None
    assert [r.getMessage() for r in caplog.records] == ["cache warming skipped: it ran less than 600 s ago against this cache"]


def record_rounds_and_sleeps(monkeypatch) -> list:
    """Patch chat.warming so each round's start logs "round" and each of its sleeps logs the seconds, without sleeping."""
    log: list = []
    real_rooms_cached = room_selectors.rooms_cached

    def rooms_cached(**kwargs):
        log.append("round")
        return real_rooms_cached(**kwargs)

    # A stand-in for the module's time: the clock is real, only sleeping is recorded.
    clock = SimpleNamespace(perf_counter=time.perf_counter, time=time.time, sleep=log.append)
    monkeypatch.setattr(room_selectors, "rooms_cached", rooms_cached)
    monkeypatch.setattr("chat.warming.time", clock)
    return log


def test_the_pause_leaves_time_between_rounds(history, monkeypatch):
    monkeypatch.setattr("chat.warming.ROOMS_PER_ROUND", 1)
    monkeypatch.setattr("chat.warming.MAX_PAUSE", 600.0)  # each sleep as long as its round, however slow the machine
    log = record_rounds_and_sleeps(monkeypatch)
    report = cache_warm(rooms=10, pages=PAGES, pause=1.0)
    assert report.rooms == 2 and report.filled("messages") == warm_message_count(PAGES)
    # Two rounds, each followed by a sleep as long as the round took: together, the working time.
    assert [entry if entry == "round" else "sleep" for entry in log] == ["round", "sleep", "round", "sleep"]
    sleeps = [entry for entry in log if entry != "round"]
    assert all(seconds > 0 for seconds in sleeps)
    assert sum(sleeps) == pytest.approx(report.busy)


def test_a_pause_is_capped_and_no_pause_never_sleeps(history, monkeypatch):
    monkeypatch.setattr("chat.warming.ROOMS_PER_ROUND", 1)
    log = record_rounds_and_sleeps(monkeypatch)
    cache_warm(rooms=10, pages=PAGES, pause=1e9)
    assert log == ["round", MAX_PAUSE, "round", MAX_PAUSE]
    log.clear()
    cache_warm(rooms=10, pages=PAGES)
    assert log == ["round", "round"]


@pytest.mark.django_db(transaction=True)
def test_an_edit_that_commits_while_a_round_reads_is_not_left_stale(history, chat_world, api_client, monkeypatch):
    room, messages = history
    target = messages[-1]
    real_entry = history_selectors.message_cache_entry
    edited = []

    def entry_then_edit(message, **kwargs):
        # The round has read its rows; the edit commits (and invalidates) before the round writes.
        if not edited:
            edited.append(message_services.message_edit(message=target, by=target.author, body="edited mid-round"))
        return real_entry(message, **kwargs)

    monkeypatch.setattr(history_selectors, "message_cache_entry", entry_then_edit)
    cache_warm(rooms=10, pages=PAGES)
    monkeypatch.undo()
    assert edited
    assert cache.get(cache_keys.message_cache_key(target.id)) is None  # dropped after the round wrote it
    items = orjson.loads(api_client(chat_world["member"]).get(f"{API}/rooms/{room.id}/messages").content)["items"]
    assert items[-1]["body"] == "edited mid-round"


def test_a_failed_warming_is_tried_again_at_the_next_check(history, monkeypatch, caplog):
    def fail(**kwargs):
        raise RuntimeError("database went away")

    warmer = CacheWarmer(rooms=10, pages=PAGES, every=600, check=30)
    monkeypatch.setattr(history_selectors, "rooms_newest_message_ids", fail)
    with caplog.at_level("ERROR", logger="chat.warming"):
        assert warmer.check_once() is None
    assert "cache warming failed" in caplog.text
    assert cache.get(warm_marker_key()) is None  # due again
    monkeypatch.undo()
    report = warmer.check_once()
    assert report is not None and report.filled("messages") == warm_message_count(PAGES)


def test_a_worker_that_cannot_reach_the_cache_says_so(history, caplog):
    warmer = CacheWarmer(rooms=10, pages=PAGES, every=600, check=30)
    with override_settings(CACHES=DEAD_REDIS), caplog.at_level("INFO", logger="chat.warming"):
        assert warmer.check_once() is None
    assert "cache warming skipped: the cache did not answer" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_delete_that_commits_while_a_round_reads_leaves_no_stale_unread_count(history, chat_world, api_client, make_message, monkeypatch):
    room, messages = history
    target, reader = messages[-1], chat_world["insider"]
    room_services.room_mark_read(room=room, user=reader, last_read_message_id=messages[-6].id)  # 5 unread, all by others
    real_tails, real_entry = unread_selectors._room_tails, history_selectors.message_cache_entry
    done = []

    def tails_then_delete(room_ids):
        tails = real_tails(room_ids)  # read with the target live; stored after the delete has dropped the room's tails
        if not done:
            done.append(message_services.message_delete(message=target, by=target.author))
        return tails

    def entry_then_post(message, **kwargs):
        if len(done) == 1:  # the next message's writer carries the stale tail on to the next seq
            done.append("posting")  # its own write-through comes back here
            done[-1] = make_message(room, chat_world["owner"])
        return real_entry(message, **kwargs)

    monkeypatch.setattr(unread_selectors, "_room_tails", tails_then_delete)
    monkeypatch.setattr(history_selectors, "message_cache_entry", entry_then_post)
    cache_warm(rooms=10, pages=PAGES)
    monkeypatch.undo()
    assert len(done) == 2
    listed = orjson.loads(api_client(reader).get(f"{API}/projects/{room.project.slug}/rooms").content)["items"]
    assert {r["id"]: r["unread"] for r in listed}[room.id] == 5  # 4 left of the 5, and the new one
