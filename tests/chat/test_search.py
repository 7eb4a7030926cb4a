"""Message search over the API: what is found, filters, snippets, paging and its query count (real PostgreSQL)."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings

from chat.models import Message
from chat.search_index import INDEX_NAME, search_index_ensure
from chat.selectors import search as search_selectors
from chat.selectors.history import message_dicts
from chat.services import dms as dm_services
from chat.services import messages as message_services

API = "/api/v1"
MARKUP = re.compile(r"</?([a-zA-Z]+)")


def search(client: Any, project: Any, q: str, **params: Any) -> Any:
    return client.get(f"{API}/projects/{project.slug}/search", {"q": q, **params})


def found_ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["message"]["id"] for item in response.json()["items"]]


def test_finds_messages_with_a_highlighted_snippet_and_the_history_shape(chat_world, api_client, make_message):
    public, project = chat_world["public"], chat_world["project"]
    hit = make_message(public, chat_world["owner"], "The deploy to staging went fine")
    make_message(public, chat_world["owner"], "nothing to see here")
    response = search(api_client(chat_world["member"]), project, "deploy")
    (item,) = response.json()["items"]
    assert item["message"] == message_dicts(ids=[hit.id])[hit.id]
    assert item["room"] == {"id": public.id, "slug": "general", "name": public.name, "kind": "room"}
    assert "<mark>deploy</mark>" in item["snippet"]
    assert response.json()["next_cursor"] is None


def test_words_are_matched_whole_case_insensitively_and_with_web_search_syntax(chat_world, api_client, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    both = make_message(public, owner, "Release NOTES for friday").id
    notes = make_message(public, owner, "notes only").id
    release = make_message(public, owner, "release only").id
    client = api_client(chat_world["member"])
    assert set(found_ids(search(client, project, "release notes"))) == {both}
    assert set(found_ids(search(client, project, "release or notes"))) == {both, notes, release}
    assert set(found_ids(search(client, project, "release -notes"))) == {release}
    assert set(found_ids(search(client, project, '"notes for friday"'))) == {both}
    assert found_ids(search(client, project, "releas")) == []  # "simple": whole words, no stemming


def test_thread_replies_are_found_and_deleted_messages_never(chat_world, api_client, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    root = make_message(public, owner, "which database?")
    reply, _ = message_services.message_create(room=public, author=owner, body="postgres of course", thread_root=root.id)
    gone = make_message(public, owner, "postgres was a mistake")
    message_services.message_delete(message=gone, by=owner)
    response = search(api_client(chat_world["member"]), project, "postgres")
    (item,) = response.json()["items"]
    assert item["message"]["id"] == reply.id and item["message"]["thread_root"] == root.id


def test_the_snippet_is_safe_html(chat_world, api_client, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    body = 'x <script>alert("xss")</script> <img src=x onerror=alert(1)> a&b \x02fake\x03 payload'
    make_message(public, owner, body)
    (item,) = search(api_client(chat_world["member"]), project, "payload").json()["items"]
    snippet = item["snippet"]
    assert {tag.lower() for tag in MARKUP.findall(snippet)} == {"mark"}
    assert "&lt;/script&gt;" in snippet and "&lt;img" in snippet and "a&amp;b" in snippet
    assert "\x02" not in snippet and "\x03" not in snippet
    assert snippet.count("<mark>") == 1 and "<mark>payload</mark>" in snippet
    assert item["message"]["body"] == body  # the message itself is text, as history sends it


def test_from_in_before_and_after_filters(chat_world, api_client, make_message):
    public, private, project = chat_world["public"], chat_world["private"], chat_world["project"]
    owner, insider = chat_world["owner"], chat_world["insider"]
    old = make_message(public, owner, "budget draft")
    Message.objects.filter(pk=old.pk).update(created_at=datetime(2024, 3, 9, 23, 59, tzinfo=timezone.utc))
    newer = make_message(public, owner, "budget final")
    Message.objects.filter(pk=newer.pk).update(created_at=datetime(2024, 3, 11, 0, 0, tzinfo=timezone.utc))
    by_insider = make_message(public, insider, "budget questions")
    in_private = make_message(private, insider, "budget secret")
    client = api_client(insider)
    assert set(found_ids(search(client, project, "budget"))) == {old.id, newer.id, by_insider.id, in_private.id}
    assert set(found_ids(search(client, project, "budget from:owner"))) == {old.id, newer.id}
    assert set(found_ids(search(client, project, "from:@insider budget"))) == {by_insider.id, in_private.id}
    assert set(found_ids(search(client, project, "budget in:secret"))) == {in_private.id}
    assert set(found_ids(search(client, project, "budget in:#general from:owner"))) == {old.id, newer.id}
    # before: and after: exclude the day named (Slack's meaning), in UTC.
    assert set(found_ids(search(client, project, "budget before:2024-03-10"))) == {old.id}
    assert set(found_ids(search(client, project, "budget after:2024-03-09 before:2024-03-12"))) == {newer.id}
    assert found_ids(search(client, project, "budget after:2024-03-10 before:2024-03-11")) == []


def test_a_dm_is_searched_with_its_slug_and_named_by_its_people(chat_world, api_client):
    project, member, owner = chat_world["project"], chat_world["member"], chat_world["owner"]
    dm, _ = dm_services.dm_get_or_create(project=project, by=member, users=[owner.username])
    note, _ = message_services.message_create(room=dm, author=owner, body="the invoice is attached")
    response = search(api_client(member), project, f"invoice in:{dm.slug}")
    (item,) = response.json()["items"]
    assert item["message"]["id"] == note.id
    assert item["room"]["kind"] == "dm" and item["room"]["slug"] == dm.slug
    assert item["room"]["name"] == "owner"


@pytest.mark.parametrize(
    ("q", "code"),
    [
        ("report has:link", "unsupported_filter"),
        ("report has:video", "unsupported_filter"),
        ("report before:2024-13-01", "invalid_date"),
        ("report after:yesterday", "invalid_date"),
        ("report before:2024-1-5", "invalid_date"),
        ("report from:nobody-at-all", "unknown_user"),
        ("report from:outsider", "unknown_user"),  # exists, but not in the project: answered alike
        ("report in:no-such-room", "unknown_room"),
        ("report in:secret", "unknown_room"),  # exists, but the member cannot read it: answered alike
        ("report from:owner from:member", "duplicate_filter"),
        ("from:owner", "empty_query"),
        ("   ", "empty_query"),
        ("?! …", "empty_query"),
        ("report " + "x" * 500, "query_too_long"),
    ],
)
def test_bad_queries_are_clear_400s(chat_world, api_client, q, code):
    response = search(api_client(chat_world["member"]), chat_world["project"], q)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code and response.json()["detail"]


def test_hidden_and_missing_rooms_and_users_answer_alike(chat_world, api_client):
    client, project = api_client(chat_world["member"]), chat_world["project"]
    hidden, missing = search(client, project, "x in:secret"), search(client, project, "x in:nope")
    assert hidden.json()["code"] == missing.json()["code"] == "unknown_room"
    outsider, nobody = search(client, project, "x from:outsider"), search(client, project, "x from:nope")
    assert outsider.json()["code"] == nobody.json()["code"] == "unknown_user"


def test_missing_q_and_bad_limits_are_validation_errors(chat_world, api_client):
    client, project = api_client(chat_world["member"]), chat_world["project"]
    assert client.get(f"{API}/projects/{project.slug}/search").status_code == 422
    assert search(client, project, "x", limit=0).status_code == 422


@pytest.mark.parametrize("cursor", ["nope", "eyJ4IjoxfQ", "eyJzIjoxLjV9", "eyJ0IjotMX0"])
def test_cursors_we_did_not_issue_are_refused(chat_world, api_client, cursor):
    response = search(api_client(chat_world["member"]), chat_world["project"], "x", cursor=cursor)
    assert response.status_code == 400 and response.json()["code"] == "invalid_cursor"


def _all_pages(client: Any, project: Any, q: str, *, limit: int) -> tuple[list[int], list[int]]:
    """Every hit's id in order, following next_cursor; and each page's size."""
    ids, sizes, cursor = [], [], None
    for _ in range(100):  # bounded: a paging bug must fail, not hang
        params = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        page = search(client, project, q, **params).json()
        ids += [item["message"]["id"] for item in page["items"]]
        sizes.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, sizes
    raise AssertionError("paging did not end")


def test_cursor_paging_is_stable_under_ties(chat_world, api_client, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    made = [make_message(public, owner, "standup notes").id for _ in range(7)]
    # Equal bodies at the same instant score exactly alike: the id decides, newest first.
    Message.objects.filter(pk__in=made).update(created_at=datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc))
    client = api_client(chat_world["member"])
    ids, sizes = _all_pages(client, project, "standup", limit=3)
    assert ids == sorted(made, reverse=True) and sizes == [3, 3, 1]


def test_relevance_and_recency_both_count(chat_world, api_client, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    at = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
    once = make_message(public, owner, "outage: the database was slow, we looked into many things today")
    often = make_message(public, owner, "outage outage outage")
    stale = make_message(public, owner, "outage outage outage")
    Message.objects.filter(pk__in=[once.pk, often.pk]).update(created_at=at)
    Message.objects.filter(pk=stale.pk).update(created_at=datetime(2024, 1, 6, 9, 0, tzinfo=timezone.utc))
    ids = found_ids(search(api_client(chat_world["member"]), project, "outage"))
    # The denser match first; the same words a year older (52 half-lives) last, though it is the newest id.
    assert ids == [often.id, once.id, stale.id]


@override_settings(CHAT_SEARCH_RANK_WINDOW=4)
def test_windows_page_through_every_match_once_newest_window_first(chat_world, api_client, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    made = [make_message(public, owner, f"retro item {'retro ' * (i % 3)}").id for i in range(10)]
    client = api_client(chat_world["member"])
    ids, sizes = _all_pages(client, project, "retro", limit=3)
    assert sorted(ids) == sorted(made) and len(ids) == len(set(ids))
    # Windows of 4 matches, newest first; a page ends where its window does.
    assert [set(ids[0:4]), set(ids[4:8]), set(ids[8:])] == [set(made[6:]), set(made[2:6]), set(made[:2])]
    assert sizes == [3, 1, 3, 1, 2]


def test_new_messages_do_not_shift_the_pages(chat_world, api_client, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    made = [make_message(public, owner, "incident report").id for _ in range(4)]
    client = api_client(chat_world["member"])
    first = search(client, project, "incident", limit=2).json()
    make_message(public, owner, "incident report")  # arrives between two pages
    rest = search(client, project, "incident", limit=2, cursor=first["next_cursor"]).json()
    seen = [item["message"]["id"] for item in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(made) and rest["next_cursor"] is None


def test_the_query_count_does_not_grow_with_the_results(chat_world, api_client, make_message, django_assert_num_queries):
    public, private, project = chat_world["public"], chat_world["private"], chat_world["project"]
    insider, owner = chat_world["insider"], chat_world["owner"]
    client = api_client(insider)
    dm, _ = dm_services.dm_get_or_create(project=project, by=insider, users=[owner.username])
    made = 0
    for total in (3, 30):
        for i in range(made, total):
            room = (public, private, dm)[i % 3]
            make_message(room, insider if room is private else owner, f"quarterly plan {i}")
        made = total
        cache.clear()
        # token, user, project and role, readable rooms, the search, then the page's messages
        # (rows, reactions, threads), profiles and rooms: cold, the same for 3 hits as for 30
        with django_assert_num_queries(10) as captured:
            items = search(client, project, "quarterly", limit=50).json()["items"]
        assert len(items) == total, captured


def test_a_project_you_are_not_in_is_404_and_anonymous_is_401(chat_world, api_client):
    project = chat_world["project"]
    outsider = api_client(chat_world["outsider"])
    hidden = search(outsider, project, "x")
    missing = outsider.get(f"{API}/projects/no-such-project/search", {"q": "x"})
    assert hidden.status_code == 404 and (hidden.status_code, hidden.content) == (missing.status_code, missing.content)
    assert search(api_client(None), project, "x").status_code == 401


# --- The embedded default's matching (the same selector code path, run here on PostgreSQL) ----------


def test_contains_matching_needs_every_word_and_escapes_its_snippet(chat_world, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    both = make_message(public, owner, "<b>Deploy</b> the NEW build & go").id
    make_message(public, owner, "deploy only")
    make_message(public, owner, "unrelated")
    terms = search_selectors.search_parse(q="deploy build")
    scope = search_selectors.search_scope(user=chat_world["member"], project=project, terms=terms)
    page = search_selectors._search_contains(scope=scope, position=search_selectors.SearchPosition(), limit=10)
    (hit,) = page.hits
    assert hit.id == both and page.next_position is None
    assert hit.snippet == "&lt;b&gt;<mark>Deploy</mark>&lt;/b&gt; the NEW <mark>build</mark> &amp; go"


def test_contains_matching_pages_newest_first(chat_world, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    made = [make_message(public, owner, f"lunch {i}").id for i in range(5)]
    scope = search_selectors.search_scope(
        user=chat_world["member"], project=project, terms=search_selectors.search_parse(q="LUNCH")
    )
    position, ids = search_selectors.SearchPosition(), []
    for _ in range(10):
        page = search_selectors._search_contains(scope=scope, position=position, limit=2)
        ids += [hit.id for hit in page.hits]
        if page.next_position is None:
            break
        position = page.next_position
    assert ids == sorted(made, reverse=True)


def test_contains_matching_excludes_minus_words_and_ignores_or(chat_world, make_message):
    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    kept = make_message(public, owner, "deploy to production").id
    make_message(public, owner, "deploy to staging")
    scope = search_selectors.search_scope(
        user=chat_world["member"], project=project, terms=search_selectors.search_parse(q='"deploy" or -staging')
    )
    page = search_selectors._search_contains(scope=scope, position=search_selectors.SearchPosition(), limit=10)
    assert [hit.id for hit in page.hits] == [kept]


def _index_definition() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX_NAME])
        return cursor.fetchone()[0]


def test_the_index_follows_the_configured_language(chat_world, api_client, make_message):
    from django.core.management import call_command
    from django.db import connection

    public, project, owner = chat_world["public"], chat_world["project"], chat_world["owner"]
    stemmed = make_message(public, owner, "We deployed the fixes").id
    client = api_client(chat_world["member"])
    assert "to_tsvector('simple'::regconfig, body)" in _index_definition()
    assert found_ids(search(client, project, "deploys fix")) == []  # simple: words as typed
    with connection.cursor() as cursor:
        # The test's own transaction holds deferred foreign-key checks; an index cannot be built under them.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with override_settings(CHAT_SEARCH_CONFIG="english"):
        out = io.StringIO()
        call_command("search_index", stdout=out)
        assert "built" in out.getvalue() and "'english'" in out.getvalue()
        assert "to_tsvector('english'::regconfig, body)" in _index_definition()
        assert search_index_ensure(connection=connection) is False  # already right: nothing to do
        assert found_ids(search(client, project, "deploys fix")) == [stemmed]
    assert search_index_ensure(connection=connection) is True
    assert "to_tsvector('simple'::regconfig, body)" in _index_definition()


@override_settings(CHAT_SEARCH_CONFIG="simple'); DROP TABLE chat_message; --")
def test_a_configuration_name_is_never_sql():
    with pytest.raises(ValueError):
        search_index_ensure(connection=None)


def test_searches_are_rate_limited_per_user(chat_world, api_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "search": "2/60"}
    client, project = api_client(chat_world["member"]), chat_world["project"]
    assert [search(client, project, "x").status_code for _ in range(2)] == [200, 200]
    refused = search(client, project, "x")
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited" and refused["Retry-After"]
    assert search(api_client(chat_world["insider"]), project, "x").status_code == 200  # another user's own budget


def test_has_file_and_has_image_find_messages_that_share_them(chat_world, api_client, make_message, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from chat.models import Upload

    settings.MEDIA_ROOT = tmp_path
    project, room, member = chat_world["project"], chat_world["public"], chat_world["member"]
    plain = make_message(room, member, "the report draft")
    with_pdf = make_message(room, member, "the report as pdf")
    with_image = make_message(room, member, "the report chart")
    for message, name, kind in ((with_pdf, "r.pdf", "application/pdf"), (with_image, "c.png", "image/png")):
        upload = Upload(room=room, uploader=member, message=message, name=name, content_type=kind, size=3)
        upload.file.save(name, SimpleUploadedFile(name, b"abc"), save=True)
    client = api_client(member)
    assert set(found_ids(search(client, project, "report"))) == {plain.id, with_pdf.id, with_image.id}
    assert set(found_ids(search(client, project, "report has:file"))) == {with_pdf.id, with_image.id}
    assert found_ids(search(client, project, "report has:image")) == [with_image.id]
    from chat.selectors import search as search_selectors

    scope = search_selectors.SearchScope(text="report", room_ids=[room.id], has="file")
    page = search_selectors._search_contains(scope=scope, position=search_selectors.SearchPosition(), limit=10)
    assert {hit.id for hit in page.hits} == {with_pdf.id, with_image.id}  # the embedded default's matching too

