"""The room event log's one writer: a change of a room takes the room's next ``seq``.

Edits, deletes, pins, unpins (chat.services.messages, chat.services.pins)
and reaction summaries (chat.events, once per message per window) call
:func:`room_changes_log` in their own transaction, as its last statements:
the room's row stays locked from there to the commit, so changes and new
messages commit in ``seq`` order, and the room's senders wait on that lock
for two statements at most.
"""

from __future__ import annotations

from functools import partial

from django.db import connection, transaction

from chat import cache_keys
from chat.models import Room, RoomChange
from chatsite.errors import NotFound
from perf import cache as perf_cache


def room_changes_log(*, room_id: int, changes: list[tuple[str, int]], deleted: int = 0) -> list[int]:
    """Give each ``(kind, message id)`` of ``changes`` the room's next ``seq``, in order; those seqs.

    Must run inside the change's transaction. ``deleted`` is added to the
    room's ``messages_deleted`` in the same statement (message_delete). After
    commit the room's cached unread tail moves to the room's new unread state
    when no message was deleted (a change leaves the tail as it was).
    """
    if not changes:
        return []
    table = connection.ops.quote_name(Room._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_message_seq = last_message_seq + %s, messages_deleted = messages_deleted + %s "
            "WHERE id = %s RETURNING last_message_seq, messages_deleted",
            [len(changes), deleted, room_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFound("Room not found.")
    last, deleted_now = int(row[0]), int(row[1])
    first = last - len(changes) + 1
    RoomChange.objects.bulk_create(
        [RoomChange(room_id=room_id, seq=first + i, kind=kind, message_id=mid) for i, (kind, mid) in enumerate(changes)]
    )
    if not deleted:
        before = (first - 1, deleted_now)
        transaction.on_commit(partial(_unread_tail_moved, room_id, before, (last, deleted_now)), robust=True)
    return list(range(first, last + 1))


def _unread_tail_moved(room_id: int, before: cache_keys.UnreadState, after: cache_keys.UnreadState) -> None:
    """Carry the room's cached unread tail to its new state, as a new message's writer does.

    Without it the next room list would read the tail from the database, and
    the next message's writer would find no tail to extend.
    """
    old = cache_keys.unread_tail_key(room_id, before)
    tail = perf_cache.get_many_counted({old: "unread"}).get(old)
    if isinstance(tail, list):
        perf_cache.store_many({cache_keys.unread_tail_key(room_id, after): tail}, family="messages")
        perf_cache.invalidate(old)
