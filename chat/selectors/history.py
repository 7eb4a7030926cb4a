"""Reads of messages: history pages, single messages, authors' display data, mentions.

A message in a room the user may not read is NotFound, as a missing one.
Message bodies and authors' display data are cached apart (families
``messages`` and ``profiles``), so a renamed user never shows stale in
cached messages.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Max, Min, Q, QuerySet

from chat.cache_keys import (
    history_page_key,
    message_cache_key,
    profile_key,
    profiles_stamp_key,
    room_stamp_key,
    room_tail_stamp_key,
)
from chat.models import Message, Room
from chat.selectors import reactions as reaction_selectors
from chat.selectors.rooms import room_get_for_user, room_members
from chat.selectors.unread import _per_room
from chat.serialization import message_dict
from chatsite.errors import NotFound
from chatsite.users import USER_DISPLAY_FIELDS, user_dict
from perf import cache as perf_cache
from perf.replica import may_lag

User = get_user_model()


# Columns a message needs on the wire; history queries load nothing else.
MESSAGE_FIELDS = (
    "id",
    "room_id",
    "seq",
    "body",
    "created_at",
    "edited_at",
    "deleted_at",
    "client_id",
    "thread_root_id",
    "author__id",
    "author__username",
    "author__first_name",
    "author__last_name",
)


def _messages() -> QuerySet[Message]:
    return Message.objects.select_related("author").only(*MESSAGE_FIELDS)


@may_lag
def room_history(*, room: Room, before: int | None = None, after: int | None = None, limit: int) -> list[Message]:
    """A page of a room's messages in increasing id order.

    With ``after``: the ``limit`` oldest messages newer than ``after`` (catch-up).
    Otherwise the ``limit`` newest messages older than ``before`` (or the newest).
    Deleted messages are included as tombstones so cursors never skip.

    The page's ids are chosen first, in a subquery that can only be answered
    from ``message_room_id_idx``: written as one ORDER BY id … LIMIT over the
    joined rows, PostgreSQL may walk the primary key backwards instead, which
    is fast for a busy room and very slow for one that went quiet long ago.
    """
    ids = _main_timeline(room.id)
    if after is not None:
        ids = ids.filter(id__gt=after).order_by("id")
    else:
        if before is not None:
            ids = ids.filter(id__lt=before)
        ids = ids.order_by("-id")
    return list(_messages().filter(id__in=ids.values("id")[:limit]).order_by("id"))


def _main_timeline(room_id: int) -> QuerySet[Message]:
    """A room's messages without thread replies (message_room_main_idx, whatever the number of replies)."""
    return Message.objects.filter(room_id=room_id, thread_root__isnull=True)


def rooms_newest_message_ids(*, room_ids: list[int], count: int) -> list[int]:
    """The ids of the ``count`` newest messages (tombstones included) of each room, in one statement.

    Index-only on message_room_id_idx, one LATERAL branch per room (_per_room).
    """
    rows = _per_room(
        room_ids,
        [0] * len(room_ids),
        "SELECT id FROM {table} WHERE room_id = {room} AND thread_root_id IS NULL ORDER BY id DESC LIMIT %s",
        [count],
    )
    return [int(mid) for _, mid in rows]


def messages_changed_since(*, room_ids: list[int], from_id: int, since: Any) -> list[tuple[int, int]]:
    """(id, room id) of the messages of ``room_ids`` from id ``from_id`` on, edited or deleted at ``since`` or later.

    A range of message_room_id_idx per room: a few ms for thousands of
    messages, where a list of their ids costs PostgreSQL twice that.
    """
    changed = Message.objects.filter(room_id__in=room_ids, id__gte=from_id)
    return list(changed.filter(Q(edited_at__gte=since) | Q(deleted_at__gte=since)).values_list("id", "room_id"))


# Older history pages a cache miss fills beyond the page asked for (room_history_dicts),
# for the newest page as for an older one.
HISTORY_READ_AHEAD_PAGES = 2


def message_dicts(*, ids: list[int], with_authors: bool = True, read_ahead: list[int] = ()) -> dict[int, dict[str, Any]]:
    """Serialized messages by id: two cache round trips, the database only for misses.

    Message bodies (family ``messages``) are cached without the author's
    display data, which comes from the profiles cache (family ``profiles``),
    so a profile change never leaves stale names in cached messages.
    message_create writes the new message's entry after commit;
    message_edit and message_delete drop it after commit.

    ``read_ahead``: ids likely asked for next (the older pages of a scroll).
    When ``ids`` miss, the same query loads these too and caches them, so a
    reader scrolling back pays one larger query per few pages instead of one
    per page. They are not counted as lookups and not returned.
    """

    def fill(missing: list[int]) -> dict[int, dict[str, Any]]:
        wanted = set(missing)
        filled, extra = {}, {}
        loaded = list(_messages().filter(id__in=[*missing, *read_ahead]))
        summaries = reaction_selectors.reaction_summaries(message_ids=[m.id for m in loaded])
        threads = _thread_counts(root_ids=[m.id for m in loaded if m.thread_root_id is None])
        for m in loaded:
            entry = message_cache_entry(m, reactions=summaries.get(m.id, []), thread=threads.get(m.id))
            (filled if m.id in wanted else extra)[m.id] = entry
        if extra:
            perf_cache.store_many({message_cache_key(i): e for i, e in extra.items()}, family="messages")
        return filled

    entries = perf_cache.cached_many("messages", {i: message_cache_key(i) for i in ids}, fill)
    if not with_authors:
        return entries
    reactions = [e.get("reactions", ()) for e in entries.values()]
    named = {e["author"]["id"] for e in entries.values()} | reaction_selectors.named_user_ids(reactions)
    named |= {uid for e in entries.values() if e.get("thread") for uid in e["thread"]["participant_ids"]}
    profiles = user_profiles(ids=list(named))
    return {
        i: {
            **e,
            "author": profiles.get(e["author"]["id"], e["author"]),
            "reactions": reaction_selectors.with_names(e.get("reactions", []), profiles=profiles),
            "thread": _thread_with_names(e.get("thread"), profiles),
        }
        for i, e in entries.items()
    }


def message_cache_entry(
    message: Message,
    *,
    reactions: list[dict[str, Any]] = (),
    thread: dict[str, Any] | None = None,
    wire: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the message cache stores: the wire dict with the author reduced to its id, the reaction
    summary and the thread summary by user ids.

    A new message has neither; a reaction drops its message's entry, a reply its root's. ``wire``:
    the message's wire dict when the caller made it already (its body is rendered once).
    """
    entry = dict(wire) if wire is not None else message_dict(message, reactions=reactions, thread=thread)
    entry["author"] = {"id": message.author_id}
    return entry


# People a thread summary names ("alice, bob and 3 more replied").
THREAD_PARTICIPANTS = 5


def _thread_counts(*, root_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each root's live replies: ``{reply_count, last_reply_at, last_reply_id, participant_ids}``; roots
    without replies are left out. One grouped query on message_thread_id_idx (index-only)."""
    if not root_ids:
        return {}
    rows = (
        Message.objects.filter(thread_root_id__in=root_ids, deleted_at__isnull=True)
        .values("thread_root_id", "author_id")
        .annotate(n=Count("id"), last_at=Max("created_at"), last_id=Max("id"), first_id=Min("id"))
        .order_by("thread_root_id", "first_id")
    )
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        thread = found.setdefault(
            row["thread_root_id"], {"reply_count": 0, "last_reply_at": None, "last_reply_id": 0, "participant_ids": []}
        )
        thread["reply_count"] += row["n"]
        if thread["last_reply_id"] < row["last_id"]:
            thread["last_reply_id"], thread["last_reply_at"] = row["last_id"], row["last_at"].isoformat()
        if len(thread["participant_ids"]) < THREAD_PARTICIPANTS:
            thread["participant_ids"].append(row["author_id"])
    return found


def _thread_with_names(thread: dict[str, Any] | None, profiles: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    if thread is None:
        return None
    return {**thread, "participants": [profiles[uid] for uid in thread["participant_ids"] if uid in profiles]}


def thread_summaries(*, root_ids: list[int]) -> dict[int, dict[str, Any] | None]:
    """The wire summary of each root's thread (None for a root with no live replies), read now."""
    counts = _thread_counts(root_ids=root_ids)
    profiles = user_profiles(ids=list({uid for t in counts.values() for uid in t["participant_ids"]}))
    return {root: _thread_with_names(counts.get(root), profiles) for root in root_ids}


def messages_reactions(*, message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each message's reaction summary with the first names, read now (messages without reactions left out)."""
    summaries = reaction_selectors.reaction_summaries(message_ids=message_ids)
    profiles = user_profiles(ids=list(reaction_selectors.named_user_ids(list(summaries.values()))))
    return {mid: reaction_selectors.with_names(summary, profiles=profiles) for mid, summary in summaries.items()}


def message_reactions(*, message_id: int) -> list[dict[str, Any]]:
    """One message's reaction summary with the first names (chat.selectors.reactions.with_names), read now."""
    return messages_reactions(message_ids=[message_id]).get(message_id, [])


def user_profiles(*, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Display data of several users at once (family ``profiles``)."""

    def fill(missing: list[int]) -> dict[int, dict[str, Any]]:
        return {u.id: user_dict(u) for u in User.objects.filter(pk__in=missing).only("id", *USER_DISPLAY_FIELDS)}

    return perf_cache.cached_many("profiles", {i: profile_key(i) for i in ids}, fill)


@may_lag
def room_history_dicts(
    *,
    room: Room,
    before: int | None = None,
    after: int | None = None,
    limit: int,
    fields: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """room_history as serialized dicts: an index-only id query plus the message cache.

    ``fields`` (API field selection) narrows the work: ids alone need no
    cache at all, and without ``author`` the profiles are not looked up.
    Cache misses still store whole entries, so the cache stays complete.
    """
    ids = _main_timeline(room.id)
    ahead: list[int] = []
    if after is not None:
        page = list(ids.filter(id__gt=after).order_by("id").values_list("id", flat=True)[:limit])
    else:
        if before is not None:
            ids = ids.filter(id__lt=before)
        # Opening a room and scrolling back: the ids of the next older pages come
        # with this page's (the same index range, a little longer), so a cache
        # miss can fill them too. A reader who opens a room often scrolls back.
        span = limit * (1 + HISTORY_READ_AHEAD_PAGES)
        newest_first = list(ids.order_by("-id").values_list("id", flat=True)[:span])
        page, ahead = newest_first[:limit], newest_first[limit:]
        page.reverse()
    if fields is not None and set(fields) <= {"id"}:
        return [{"id": i} for i in page]
    found = message_dicts(ids=page, with_authors=fields is None or "author" in fields, read_ahead=ahead)
    return [found[i] for i in page if i in found]


@may_lag
def room_history_page(*, room: Room, before: int | None, limit: int, render: Any) -> Any:
    """A rendered page of history (``render()``'s result, encoded), cached while what it shows is unchanged.

    The newest page and the older pages (``before``) of a room, family
    ``pages``: one cache round trip on a hit, instead of the id query and
    the message and profile lookups. An edit or a delete in the room drops
    the room's stamp, a new message its tail stamp (which only the newest
    page carries), a display-data change the profiles stamp
    (perf.cache.cached_stamped), so a stored page is never served stale.
    """
    stamps = history_page_stamps(room.id, before)
    return perf_cache.cached_stamped("pages", history_page_key(room.id, before, limit), stamps, render)


def history_page_stamps(room_id: int, before: int | None) -> list[str]:
    """The stamps a cached history page is valid under (see room_history_page)."""
    stamps = [room_stamp_key(room_id), profiles_stamp_key()]
    if before is None:
        stamps.append(room_tail_stamp_key(room_id))
    return stamps


@may_lag
def thread_reply_ids(*, root_id: int, before: int | None = None, after: int | None = None, limit: int) -> list[int]:
    """A page of a thread's reply ids in increasing order, as room_history_dicts pages (index-only on
    message_thread_id_idx): with ``after`` the oldest newer ones, else the newest older than ``before``."""
    ids = Message.objects.filter(thread_root_id=root_id)
    if after is not None:
        return list(ids.filter(id__gt=after).order_by("id").values_list("id", flat=True)[:limit])
    if before is not None:
        ids = ids.filter(id__lt=before)
    page = list(ids.order_by("-id").values_list("id", flat=True)[:limit])
    page.reverse()
    return page


def messages_after(*, room_id: int, after_id: int, limit: int) -> list[Message]:
    """Messages of a room with id > ``after_id``, oldest first (resume). Ids first, as in room_history."""
    return messages_after_many(after=[(room_id, after_id)], limit=limit)[(room_id, after_id)]


def messages_by_id(*, ids: list[int]) -> dict[int, Message]:
    """Messages by id with their authors, as history loads them (one query, none for no ids)."""
    return {m.id: m for m in _messages().filter(id__in=ids)} if ids else {}


def room_last_seq(*, room_id: int) -> int:
    return rooms_last_seqs(room_ids=[room_id]).get(room_id, 0)


def rooms_last_seqs(*, room_ids: list[int]) -> dict[int, int]:
    """Each room's message counter, read now (one query); rooms that do not exist are left out."""
    return dict(Room.objects.filter(pk__in=set(room_ids)).values_list("id", "last_message_seq"))


def messages_after_many(*, after: list[tuple[int, int]], limit: int) -> dict[tuple[int, int], list[Message]]:
    """:func:`messages_after` for many (room id, after id) pairs in two queries: the ids per pair, then the rows."""
    pairs = list(dict.fromkeys(after))
    if not pairs:
        return {}
    rows = _per_room(
        [room for room, _ in pairs],
        [after_id for _, after_id in pairs],
        "SELECT id, {arg} AS after_id FROM {table} WHERE room_id = {room} AND id > {arg} ORDER BY id LIMIT %s",
        [limit],
    )
    messages = {m.id: m for m in _messages().filter(id__in={message_id for _, message_id, _ in rows})}
    found: dict[tuple[int, int], list[Message]] = {pair: [] for pair in pairs}
    for room_id, message_id, after_id in sorted(rows, key=lambda row: row[1]):
        if message_id in messages:
            found[(room_id, after_id)].append(messages[message_id])
    return found


def message_get_for_user(*, user: Any, message_id: int) -> Message:
    """A message in a room the user may read; NotFound otherwise. Carries ``room`` with ``my_role``."""
    message = _messages().filter(pk=message_id).first()
    if message is None:
        raise NotFound("Message not found.")
    try:
        message.room = room_get_for_user(user=user, room_id=message.room_id)
    except NotFound:
        raise NotFound("Message not found.") from None
    return message


def message_with_room(*, message_id: int) -> Message | None:
    return _messages().select_related("room").filter(pk=message_id).first()


MENTION_RE = re.compile(r"(?<![\w@])@([\w.@+-]{1,150})")


def mentioned_readers(*, room: Room, body: str) -> list[Any]:
    """Users named as ``@username`` in ``body`` who can read ``room`` (at most 50)."""
    names = {m.rstrip(".") for m in MENTION_RE.findall(body)}
    if not names:
        return []
    return list(room_members(room=room).filter(username__in=list(names)[:50]))
