"""Unread counts from each room's tail: its newest messages, shared by all its readers.

Apart from the room list (chat.selectors.rooms) because message writers
call back into it: a new message moves its room's cached tail forward
(chat.services.messages).
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from chat.cache_keys import UnreadState, unread_tail_key
from chat.models import Message
from chatsite import env
from perf import cache as perf_cache

# Unread counts stop here; clients show "99+".
UNREAD_CAP = 100

# Newest messages per room kept for unread counts (rooms_for_user). Longer
# than the cap, so a reader who wrote a few of the room's last messages (or
# saw a few deleted) still reaches the cap inside the tail: with a tail of
# exactly UNREAD_CAP, each of them needed a count of their own, read again
# after every new message of the room (docs/PERFORMANCE.md).
UNREAD_TAIL = UNREAD_CAP + UNREAD_CAP // 4
# A tail under a given state is right for good (an edit changes no count), and
# the writer of the next message replaces it (chat.services.messages.
# _messages_created): only the current tail of each room stays, so it may live
# as long as the other exact entries.
UNREAD_TAIL_TTL = env.CACHE_TTL_ENTRIES


def room_unread_tails(*, states: dict[int, UnreadState]) -> dict[int, list[tuple[int, int, bool]]]:
    """Each room's current unread tail (see _room_tails), by room id; ``states``: each room's unread state.

    Family ``unread``, one entry per room under its state, shared by all
    its readers: a new message or a delete moves the room to a new key.
    """
    return perf_cache.cached_many(
        "unread", {rid: unread_tail_key(rid, state) for rid, state in states.items()}, _room_tails, ttl=UNREAD_TAIL_TTL
    )


def _room_tails(room_ids: list[int]) -> dict[int, list[tuple[int, int, bool]]]:
    """The newest UNREAD_TAIL messages of each room's main timeline, newest first, as (id, author id, deleted).

    Shared by every reader of the room, so one cache entry per room and
    message (the key embeds the room's last seq) serves all its members'
    unread counts. Thread replies are not counted (threads have their own
    unread state). One statement, index-only on message_room_main_idx.
    """
    rows = _per_room(
        room_ids,
        [0] * len(room_ids),
        "SELECT id, author_id, deleted_at IS NOT NULL FROM {table} WHERE room_id = {room} AND thread_root_id IS NULL "
        "ORDER BY id DESC LIMIT %s",
        [UNREAD_TAIL],
    )
    tails: dict[int, list[tuple[int, int, bool]]] = {rid: [] for rid in room_ids}
    for rid, mid, author, deleted in rows:
        tails[int(rid)].append((int(mid), int(author), bool(deleted)))
    for tail in tails.values():
        tail.sort(reverse=True)
    return tails


def unread_tail_with(tail: list[tuple[int, int, bool]], *, message_id: int, author_id: int) -> list[tuple[int, int, bool]]:
    """``tail`` with one more live message, newest first and at most UNREAD_TAIL long.

    How a writer moves a room's cached tail to its new seq (write-through):
    the tail under seq ``n - 1`` holds every message up to it (a reader may
    have seen later ones too), so with message ``n`` it is the tail under ``n``.
    """
    merged = {entry[0]: entry for entry in tail}
    merged.setdefault(message_id, (message_id, author_id, False))
    return sorted(merged.values(), reverse=True)[:UNREAD_TAIL]


def _per_room(room_ids: list[int], args: list[int], sql: str, params: list[Any]) -> list[tuple]:
    """One statement: the subquery ``sql`` once per room, each row prefixed with its room id.

    ``sql`` names the messages table ``{table}``, the room ``{room}`` and the
    room's own integer argument ``{arg}`` (``args[i]`` for ``room_ids[i]``);
    ``params`` fill its ``%s`` placeholders, the same for every room.

    On PostgreSQL the rooms arrive as two arrays and the subquery runs in a
    LATERAL join: one small plan, whatever the number of rooms. A UNION ALL
    of one branch per room (what other databases get) costs PostgreSQL more
    to plan than to run: 3.8 ms against 0.6 ms for 25 rooms of capped
    counts, measured on the 1,000,000-message data set (docs/PERFORMANCE.md).
    """
    if not room_ids:
        return []
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT t.room_id, x.* FROM unnest(%s::bigint[], %s::bigint[]) AS t(room_id, arg) "
                f"CROSS JOIN LATERAL ({sql.format(table=table, room='t.room_id', arg='t.arg')}) x",
                [list(room_ids), list(args), *params],
            )
        else:
            branches = [
                f"SELECT {int(rid)}, x.* FROM ({sql.format(table=table, room=int(rid), arg=int(arg))}) x"
                for rid, arg in zip(room_ids, args)
            ]
            cursor.execute(" UNION ALL ".join(branches), list(params) * len(branches))
        return cursor.fetchall()


def _unread_from_tail(tail: list[tuple[int, int, bool]], *, last_read: int, user_id: int) -> int | None:
    """Live messages by others newer than ``last_read``, capped at UNREAD_CAP; None when the tail cannot tell.

    It cannot tell when the marker is older than the whole tail, the tail is
    full (older messages exist) and fewer than the cap counted in it.
    """
    counted = 0
    for message_id, author_id, deleted in tail:
        if message_id <= last_read:
            return counted
        if not deleted and author_id != user_id:
            counted += 1
            if counted >= UNREAD_CAP:
                return UNREAD_CAP
    return counted if len(tail) < UNREAD_TAIL else None
