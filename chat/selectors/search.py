"""Message search: the messages of a project a user may read that match a query, with highlighted snippets.

What can be found is what the user may read, decided by the rooms' one access
rule (chat.selectors.rooms.readable_room_ids): public rooms of the project,
private rooms and DMs they belong to. Thread replies are found like any
message; deleted messages never are.

On PostgreSQL the words are a ``websearch_to_tsquery`` (quoted phrases, ``or``,
``-word``) over the GIN index of chat.search_index. Results come in windows
of the ``CHAT_SEARCH_RANK_WINDOW`` newest matches; within a window they are
ordered by

    score = ln(ts_rank_cd(body, query, 1) + 1e-6) + epoch(created_at) * ln 2 / half-life

which orders exactly as ``ts_rank_cd × 2^(-age / half-life)`` (relevance
halving every ``CHAT_SEARCH_HALF_LIFE_DAYS``) but does not depend on the
current time, so a cursor stays valid while the clock moves. The next window
holds the next older matches. Only a window's rows are ranked: a word found in
half the messages costs a window's worth of work, not half the table.

Elsewhere (the embedded SQLite default) every word must occur in the body
and no ``-word`` may (case-insensitive for ASCII, as LIKE is), newest first,
and the snippet is cut around the first word found.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Exists, OuterRef
from django.utils import timezone

from chat.models import Message, Room, Upload
from chat.search_index import body_vector_sql, search_config
from chat.selectors.dms import dm_person_ids, dm_title
from chat.selectors.history import message_dicts, user_profiles
from chat.selectors.rooms import readable_room_ids, room_get_by_slug_for_user, rooms_cached
from chatsite.errors import InvalidInput, NotFound
from projects.models import Membership, Project

User = get_user_model()

QUERY_MAX_LENGTH = 500
FILTERS = ("from", "in", "before", "after", "has")
_TOKEN = re.compile(r'"[^"]*"?|\S+')
_FILTER = re.compile(r"^(?P<key>[A-Za-z]+):(?P<value>\S+)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WORD = re.compile(r"\w+")

# ts_headline marks matches with these control characters, removed from the
# body first; the snippet is HTML-escaped and only then are they made <mark>.
_START, _STOP = "\x02", "\x03"
# ts_headline's parser drops anything that looks like an HTML tag: "<" goes in
# as a look-alike and comes back as itself, so the snippet shows what was typed.
_LT = "\ufe64"
_HEADLINE_OPTIONS = f'StartSel={_START}, StopSel={_STOP}, MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "'
SNIPPET_CHARS = 200


@dataclass(frozen=True)
class SearchTerms:
    """A parsed query: the words to match and the filters, as typed."""

    text: str
    filters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchScope:
    """A parsed query resolved for one user and project: who, where and when."""

    text: str
    room_ids: list[int]
    author_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    # has:file or has:image: messages that share files (of that kind).
    has: str | None = None


# What ``has:`` may ask for: any shared file, or an image.
HAS_VALUES = {"file": "file", "files": "file", "attachment": "file", "image": "image", "images": "image"}


@dataclass(frozen=True)
class SearchPosition:
    """Where a page starts: the window's newest id (None: the newest match), and the last (score, id) shown in it."""

    top: int | None = None
    score: float | None = None
    last_id: int | None = None


@dataclass
class SearchHit:
    id: int
    room_id: int
    score: float
    snippet: str


@dataclass
class SearchPage:
    hits: list[SearchHit]
    next_position: SearchPosition | None


def search_parse(*, q: str) -> SearchTerms:
    """Split ``q`` into words and ``key:value`` filters (from, in, before, after, has).

    A quoted phrase is always words. Raises InvalidInput for a query that is
    too long, a filter given twice, or no words at all.
    """
    q = q.strip()
    if len(q) > QUERY_MAX_LENGTH:
        raise InvalidInput(f"The query is longer than {QUERY_MAX_LENGTH} characters.", code="query_too_long")
    words: list[str] = []
    filters: dict[str, str] = {}
    for token in _TOKEN.findall(q):
        match = _FILTER.match(token)
        key = match["key"].lower() if match else ""
        if key not in FILTERS:
            words.append(token)
            continue
        if key in filters:
            raise InvalidInput(f"Use '{key}:' once per query.", code="duplicate_filter")
        filters[key] = match["value"]
    text = " ".join(words).strip()
    if not _WORD.search(text):
        raise InvalidInput("Give at least one word to search for.", code="empty_query")
    return SearchTerms(text=text, filters=filters)


def search_scope(*, user: Any, project: Project, terms: SearchTerms) -> SearchScope:
    """Resolve the filters of ``terms`` for ``user`` in ``project``; raises InvalidInput naming the bad one.

    ``from:`` names a project member (unknown users and non-members alike are
    ``unknown_user``), ``in:`` a room or DM of the project the user can read
    (missing and hidden alike are ``unknown_room``), ``before:``/``after:`` a
    day (``YYYY-MM-DD``, UTC), both exclusive as in Slack, ``has:file`` (or
    ``has:image``) messages that share files (images). One query for the
    readable rooms, one more per ``from:`` or ``in:``.
    """
    filters = terms.filters
    has = None
    if "has" in filters:
        has = HAS_VALUES.get(filters["has"].lower())
        if has is None:
            raise InvalidInput(
                f"'has:{filters['has']}' is not a filter: use has:file or has:image.", code="unsupported_filter"
            )
    author_id = None
    if "from" in filters:
        username = filters["from"].removeprefix("@")
        member = Membership.objects.filter(project=project, user__username=username).values_list("user_id", flat=True)
        author_id = member.first()
        if author_id is None:
            raise InvalidInput(f"No member of this project is called '{username}'.", code="unknown_user")
    if "in" in filters:
        slug = filters["in"].removeprefix("#")
        try:
            room_ids = [room_get_by_slug_for_user(user=user, project=project, slug=slug).id]
        except NotFound:
            raise InvalidInput(f"No room '{slug}' you can read in this project.", code="unknown_room") from None
    else:
        room_ids = list(readable_room_ids(user).filter(project=project).values_list("id", flat=True))
    since = _day_bound(filters, "after", days=1)
    until = _day_bound(filters, "before", days=0)
    return SearchScope(text=terms.text, room_ids=room_ids, author_id=author_id, since=since, until=until, has=has)


def _day_bound(filters: dict[str, str], key: str, *, days: int) -> datetime | None:
    """The start of the day named by ``key:`` plus ``days``, in UTC; None without the filter."""
    raw = filters.get(key)
    if raw is None:
        return None
    try:
        if not _DATE.match(raw):
            raise ValueError
        day = date.fromisoformat(raw) + timedelta(days=days)
    except (ValueError, OverflowError):
        raise InvalidInput(f"'{key}:{raw}' is not a date: write {key}:YYYY-MM-DD.", code="invalid_date") from None
    return datetime.combine(day, time.min, tzinfo=timezone.get_fixed_timezone(0))


def messages_search(*, scope: SearchScope, position: SearchPosition, limit: int) -> SearchPage:
    """A page of at most ``limit`` matches from ``position``, and where the next page starts (None at the end).

    One query on PostgreSQL (the window, its ranking and the page's
    snippets), one on other databases. A page ends where its window ends,
    so it may hold fewer than ``limit`` hits while ``next_position`` is set.
    """
    if not scope.room_ids:
        return SearchPage(hits=[], next_position=None)
    if connection.vendor == "postgresql":
        return _search_postgresql(scope=scope, position=position, limit=limit)
    return _search_contains(scope=scope, position=position, limit=limit)


def _scope_sql(scope: SearchScope, params: dict[str, Any]) -> str:
    """The WHERE conditions of ``scope`` besides the words (deleted messages never match)."""
    conditions = ["m.deleted_at IS NULL", "m.room_id = ANY(%(rooms)s)"]
    params["rooms"] = scope.room_ids
    if scope.author_id is not None:
        conditions.append("m.author_id = %(author)s")
        params["author"] = scope.author_id
    if scope.since is not None:
        conditions.append("m.created_at >= %(since)s")
        params["since"] = scope.since
    if scope.until is not None:
        conditions.append("m.created_at < %(until)s")
        params["until"] = scope.until
    if scope.has is not None:
        # The uploads a message's commit claimed (chat.services.uploads), on their message index.
        image = " AND u.content_type LIKE 'image/%%'" if scope.has == "image" else ""
        conditions.append(f"EXISTS (SELECT 1 FROM chat_upload u WHERE u.message_id = m.id{image})")
    return " AND ".join(conditions)


def _search_postgresql(*, scope: SearchScope, position: SearchPosition, limit: int) -> SearchPage:
    config = search_config()
    query = f"websearch_to_tsquery('{config}'::regconfig, %(q)s)"
    params: dict[str, Any] = {
        "q": scope.text,
        "window": settings.CHAT_SEARCH_RANK_WINDOW,
        "per_second": math.log(2) / (settings.CHAT_SEARCH_HALF_LIFE_DAYS * 86400),
        "options": _HEADLINE_OPTIONS,
        "limit": limit + 1,
        "strip_from": "<" + _START + _STOP,
        "strip_to": _LT,
    }
    where = _scope_sql(scope, params)
    if position.top is not None:
        where += " AND m.id <= %(top)s"
        params["top"] = position.top
    after = ""
    if position.last_id is not None:
        after = "WHERE (score, id) < (%(score)s, %(last_id)s)"
        params["score"], params["last_id"] = position.score, position.last_id
    # The window is materialized so the ranking below reads only its rows;
    # its newest-first LIMIT lets PostgreSQL stop early for common words (the
    # primary key backwards) or take the few rows the index names for rare ones.
    sql = f"""
        WITH win AS MATERIALIZED (
            SELECT m.id, m.room_id, m.body, m.created_at FROM chat_message m
            WHERE {body_vector_sql("m.body")} @@ {query} AND {where}
            ORDER BY m.id DESC LIMIT %(window)s
        ), ranked AS (
            SELECT id, room_id, body,
                   ln(ts_rank_cd({body_vector_sql()}, {query}, 1) + 1e-6)
                   + extract(epoch FROM created_at)::float8 * %(per_second)s AS score,
                   max(id) OVER () AS win_top, min(id) OVER () AS win_bottom, count(*) OVER () AS win_size
            FROM win
        )
        SELECT id, room_id, score, win_top, win_bottom, win_size,
               ts_headline('{config}'::regconfig, translate(body, %(strip_from)s, %(strip_to)s), {query}, %(options)s)
        FROM ranked {after}
        ORDER BY score DESC, id DESC LIMIT %(limit)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    hits = [SearchHit(id=r[0], room_id=r[1], score=r[2], snippet=_marked_html(r[6])) for r in rows[:limit]]
    if not rows:
        return SearchPage(hits=[], next_position=None)
    _, _, _, win_top, win_bottom, win_size, _ = rows[0]
    if len(rows) > limit:
        last = hits[-1]
        return SearchPage(hits=hits, next_position=SearchPosition(top=win_top, score=last.score, last_id=last.id))
    if win_size >= settings.CHAT_SEARCH_RANK_WINDOW and win_bottom > 1:
        # This window is shown; older matches may follow in the next one.
        return SearchPage(hits=hits, next_position=SearchPosition(top=win_bottom - 1))
    return SearchPage(hits=hits, next_position=None)


def _marked_html(headline: str) -> str:
    """ts_headline's text as safe HTML: everything escaped, then the match markers made <mark> elements."""
    escaped = html.escape(headline.replace(_LT, "<"))
    return escaped.replace(_START, "<mark>").replace(_STOP, "</mark>")


def _search_contains(*, scope: SearchScope, position: SearchPosition, limit: int) -> SearchPage:
    """The embedded default's search: every word in the body and no ``-word``, newest first; one window, score 0.

    ``or`` is not understood here: it is dropped, and the other words are all required.
    """
    words, excluded = [], []
    for token in scope.text.replace('"', " ").split():
        (excluded if token.startswith("-") else words).extend(w for w in _WORD.findall(token) if w.lower() != "or")
    found = Message.objects.filter(deleted_at__isnull=True, room_id__in=scope.room_ids)
    for word in words:
        found = found.filter(body__icontains=word)
    for word in excluded:
        found = found.exclude(body__icontains=word)
    if scope.author_id is not None:
        found = found.filter(author_id=scope.author_id)
    if scope.since is not None:
        found = found.filter(created_at__gte=scope.since)
    if scope.until is not None:
        found = found.filter(created_at__lt=scope.until)
    if scope.has is not None:
        shared = Upload.objects.filter(message=OuterRef("pk"))
        if scope.has == "image":
            shared = shared.filter(content_type__startswith="image/")
        found = found.filter(Exists(shared))
    if position.last_id is not None:
        found = found.filter(id__lt=position.last_id)
    rows = list(found.order_by("-id").values_list("id", "room_id", "body")[: limit + 1])
    hits = [
        SearchHit(id=i, room_id=room_id, score=0.0, snippet=_contains_snippet(body, words or excluded))
        for i, room_id, body in rows[:limit]
    ]
    more = len(rows) > limit
    return SearchPage(hits=hits, next_position=SearchPosition(score=0.0, last_id=hits[-1].id) if more else None)


def _contains_snippet(body: str, words: list[str]) -> str:
    """About SNIPPET_CHARS of ``body`` around the first word found, escaped, with each word in <mark>."""
    pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)
    first = pattern.search(body)
    start = max(0, (first.start() if first else 0) - SNIPPET_CHARS // 3)
    excerpt = body[start : start + SNIPPET_CHARS]
    parts, at = [], 0
    for match in pattern.finditer(excerpt):
        parts.append(html.escape(excerpt[at : match.start()]))
        parts.append(f"<mark>{html.escape(match.group())}</mark>")
        at = match.end()
    parts.append(html.escape(excerpt[at:]))
    prefix = "… " if start else ""
    suffix = " …" if start + SNIPPET_CHARS < len(body) else ""
    return prefix + "".join(parts) + suffix


def search_hit_dicts(*, user: Any, hits: list[SearchHit]) -> list[dict[str, Any]]:
    """Hits on the wire: ``{"message", "room": {"id", "slug", "name", "kind"}, "snippet"}``.

    Messages as history shows them (message_dicts: the message cache), rooms
    from the ``rooms`` cache family; a DM is named as this user sees it.
    """
    messages = message_dicts(ids=[hit.id for hit in hits])
    rooms = rooms_cached(room_ids=list({hit.room_id for hit in hits}))
    dms = [room for room in rooms.values() if room.kind == Room.Kind.DM]
    people = sorted({i for room in dms for i in dm_person_ids(room) if i != user.pk})
    profiles = user_profiles(ids=people) if people else {}
    titles = {
        room.id: dm_title(user=user, people=[profiles[i] for i in dm_person_ids(room) if i != user.pk and i in profiles])
        for room in dms
    }
    return [
        {
            "message": messages[hit.id],
            "room": {
                "id": hit.room_id,
                "slug": rooms[hit.room_id].slug,
                "name": titles.get(hit.room_id, rooms[hit.room_id].name),
                "kind": rooms[hit.room_id].kind,
            },
            "snippet": hit.snippet,
        }
        for hit in hits
        if hit.id in messages and hit.room_id in rooms
    ]
