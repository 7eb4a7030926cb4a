"""Message search uses its GIN index on a sizable set, and never reads chat_message sequentially.

The data set of tests/perf/test_indexes.py (about 200,000 messages, analyzed):
every body is ``message <n>``, so "message" is in every row and each number in
exactly one. The real selector runs; the statement it sent is explained as sent.
"""

from __future__ import annotations

from typing import Any

import pytest

from chat.models import Message
from chat.search_index import INDEX_NAME
from chat.selectors import search as search_selectors
from tests.perf.test_indexes import captured, data, hot_room, member_of, plan_nodes  # noqa: F401 - data is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def _search(q: str) -> tuple[list[Any], list[dict[str, Any]]]:
    room = hot_room()
    user = member_of(room)
    scope = search_selectors.search_scope(user=user, project=room.project, terms=search_selectors.search_parse(q=q))
    with captured() as statements:
        page = search_selectors.messages_search(scope=scope, position=search_selectors.SearchPosition(), limit=20)
    (sql, params) = [s for s in statements if "ts_headline" in s[0]][0]
    return page.hits, plan_nodes(sql, params)


def _summary(nodes: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]


def test_a_rare_word_is_found_through_the_gin_index(data: None) -> None:
    room = hot_room()
    target = Message.objects.filter(room=room, deleted_at__isnull=True).order_by("id")[1000]
    word = target.body.split()[-1]  # its number: in this message alone
    hits, nodes = _search(word)
    assert [hit.id for hit in hits] == [target.id]
    used = {n.get("Index Name") for n in nodes if n["Node Type"] == "Bitmap Index Scan"}
    assert INDEX_NAME in used, _summary(nodes)
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "chat_message"], _summary(nodes)


def test_a_word_in_every_message_reads_only_a_window_of_them(data: None) -> None:
    hits, nodes = _search("message")
    assert len(hits) == 20
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "chat_message"], _summary(nodes)
    # The window is the newest matches: an index walked in id order, stopped by the LIMIT, rather than
    # a bitmap of every matching row (all 200,000 of them).
    scans = [n for n in nodes if n.get("Relation Name") == "chat_message"]
    assert scans and all(n["Node Type"] in {"Index Scan", "Index Only Scan"} for n in scans), _summary(nodes)
