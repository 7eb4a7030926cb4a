"""Writes of messages: post, edit, delete. ``message_create`` is the one message writer.

Real-time events are published with ``transaction.on_commit`` only: a write
that rolls back never reaches a socket.

Caches: message writes update or invalidate the message caches here, after
commit (keys from chat.cache_keys).
"""

from __future__ import annotations

import unicodedata
from contextlib import nullcontext
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from chat import cache_keys, events, metrics
from chat.models import Message, Room
from chat.selectors import history as history_selectors
from chat.selectors import unread as unread_selectors
from chat.serialization import message_dict
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from perf import cache as perf_cache
from perf.cache import invalidate_on_commit
from projects.models import Membership

CLIENT_ID_MAX = 64


# Characters that draw nothing: format controls (zero-width spaces and joiners,
# the BOM, bidi controls), separators, marks with no base, and the Hangul and
# braille fillers that look like letters to a "not blank" check.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
_INVISIBLE_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _draws_nothing(char: str) -> bool:
    return char.isspace() or char in _INVISIBLE_FILLERS or unicodedata.category(char) in _INVISIBLE_CATEGORIES


def _clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise InvalidInput("Message body must be a string.", code="invalid_body")
    if all(_draws_nothing(char) for char in body):
        raise InvalidInput("Message body must not be empty.", code="empty_body")
    if "\x00" in body:
        raise InvalidInput("Message body must not contain NUL characters.", code="invalid_body")
    limit = settings.CHAT_MESSAGE_MAX_LENGTH
    if len(body) > limit:
        raise InvalidInput(f"Message body is longer than {limit} characters.", code="body_too_long")
    return body


def _clean_client_id(client_id: Any) -> str | None:
    if client_id is None or client_id == "":
        return None
    if not isinstance(client_id, str) or len(client_id) > CLIENT_ID_MAX or "\x00" in client_id:
        raise InvalidInput(f"client_id must be a string of at most {CLIENT_ID_MAX} characters.", code="invalid_client_id")
    return client_id


def message_create(*, room: Room, author: Any, body: str, client_id: str | None = None) -> tuple[Message, bool]:
    """Persist a message; after commit, publish ``message.new`` and update the caches (:func:`_message_created`).

    The one message writer: the API, the WebSocket (through chat.asyncdb.db_async),
    the pages and the seeders call it. The caller has checked that ``author``
    may read ``room``. Returns ``(message, created)``. With a ``client_id``
    already used by this author nothing is written and the original message
    comes back with ``created=False`` (idempotent retries); reusing it for
    another room is a Conflict.

    Ordering: the room's row lock is taken (its counter bumped) before the
    message's id is drawn and held until commit, so within a room ids commit
    in increasing order and ``seq`` is contiguous; a failed insert uses up
    no ``seq``.
    """
    body = _clean_body(body)
    client_id = _clean_client_id(client_id)
    if room.project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")
    now = timezone.now()
    try:
        row = _insert_message(room_id=room.id, author_id=author.id, body=body, client_id=client_id, now=now)
    except IntegrityError:
        if client_id is None:
            raise
        original = _original_for_retry(author=author, client_id=client_id, room_id=room.id)
        if original is None:
            raise
        return original, False
    if row is None:
        raise NotFound("Room not found.")
    message_id, seq, deleted = row
    message = Message(id=message_id, room=room, author=author, body=body, client_id=client_id, seq=seq, created_at=now)
    message._state.adding, message._state.db = False, connection.alias  # a stored row, as if loaded
    transaction.on_commit(partial(_message_created, message=message, deleted=deleted), robust=True)
    return message, True


def _insert_message(*, room_id: int, author_id: int, body: str, client_id: str | None, now: Any) -> tuple[int, int, int] | None:
    """Bump the room's counter and insert the message: (id, seq, the room's delete count), or None without the room.

    On PostgreSQL one statement, which outside a caller's transaction is its
    own (one round trip); elsewhere (the embedded SQLite) the same two steps
    in a transaction. The delete count comes with the seq, read under the
    same lock: together they name the room's unread state.
    """
    if connection.vendor == "postgresql":
        # A savepoint only inside a caller's transaction, so a duplicate client_id leaves it usable.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(
                    INSERT_MESSAGE_SQL,
                    {"now": now, "room": room_id, "author": author_id, "body": body, "client_id": client_id},
                )
                row = cursor.fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else None
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Room._meta.db_table} SET last_message_seq = last_message_seq + 1, last_message_at = %s "
                "WHERE id = %s RETURNING last_message_seq, messages_deleted",
                [now, room_id],
            )
            counter = cursor.fetchone()
        if counter is None:
            return None
        seq, deleted = int(counter[0]), int(counter[1])
        message = Message.objects.create(
            room_id=room_id, author_id=author_id, body=body, client_id=client_id, seq=seq, created_at=now
        )
    return message.id, seq, deleted


def _insert_message_sql() -> str:
    room, message = Room._meta, Message._meta
    column = message.get_field
    return (
        f"WITH r AS (UPDATE {room.db_table} SET last_message_seq = last_message_seq + 1, last_message_at = %(now)s "
        f"WHERE id = %(room)s RETURNING id, last_message_seq, messages_deleted), "
        f"m AS (INSERT INTO {message.db_table} ({column('room').column}, {column('author').column}, {column('seq').column}, "
        f"{column('body').column}, {column('created_at').column}, {column('client_id').column}) "
        f"SELECT r.id, %(author)s, r.last_message_seq, %(body)s, %(now)s, %(client_id)s FROM r "
        f"RETURNING id, {column('seq').column} AS seq) "
        f"SELECT m.id, m.seq, r.messages_deleted FROM m, r"
    )


INSERT_MESSAGE_SQL = _insert_message_sql()


def _message_created(*, message: Message, deleted: int) -> None:
    """Everything a new message sets off, after its commit, in this order: the event, the caches, the count, mentions.

    Caches, in three round trips: the message's entry is written through
    (history readers ask for it next), the room's tail stamp is dropped (the
    newest history page shows it), and the room's unread tail moves from
    ``seq - 1`` to ``seq`` when it was cached (chat.selectors.unread): without
    that the first room list after every message would read the tail from the
    database.
    """
    room_id, seq = message.room_id, message.seq
    events.publish_room_event(room_id=room_id, kind="message.new", payload={"message": message_dict(message)}, seq=seq)
    previous = cache_keys.unread_tail_key(room_id, (seq - 1, deleted))
    entries = {cache_keys.message_cache_key(message.id): history_selectors.message_cache_entry(message)}
    tail = perf_cache.get_many_counted({previous: "unread"}).get(previous)
    if isinstance(tail, list):
        # Same lifetime as the message entry (CACHE_TTL_ENTRIES): one write for both.
        entries[cache_keys.unread_tail_key(room_id, (seq, deleted))] = unread_selectors.unread_tail_with(
            tail, message_id=message.id, author_id=message.author_id
        )
    perf_cache.store_many(entries, family="messages")
    # The older tail is never asked for again.
    perf_cache.invalidate(cache_keys.room_tail_stamp_key(room_id), *([previous] if isinstance(tail, list) else []))
    metrics.MESSAGES_CREATED.inc()
    if "@" in message.body:
        events.enqueue_background({"type": "message.created", "message_id": message.id, "room_id": room_id})


def _original_for_retry(*, author: Any, client_id: str, room_id: int) -> Message | None:
    """The message ``author`` already sent with ``client_id`` (an idempotent retry), or None.

    Reusing a client_id in another room is a Conflict.
    """
    original = Message.objects.select_related("author").filter(author=author, client_id=client_id).first()
    if original is not None and original.room_id != room_id:
        raise Conflict("client_id was already used for a message in another room.", code="client_id_reused")
    return original


def _require_moderator_or_author(*, message: Message, user: Any) -> None:
    """Authors may change their messages; project admins and owners may change any."""
    role = getattr(message.room, "my_role", None)
    if message.author_id == user.id:
        return
    if role in (Membership.Role.OWNER, Membership.Role.ADMIN):
        return
    raise Forbidden("Only the author or a project admin can change this message.")


@transaction.atomic
def message_edit(*, message: Message, by: Any, body: str) -> Message:
    """Replace the body, set ``edited_at``; publish ``message.edited`` after commit.

    ``message.room`` must carry ``my_role`` (chat.selectors.history.message_get_for_user).
    """
    _require_moderator_or_author(message=message, user=by)
    body = _clean_body(body)
    if message.deleted_at is not None:
        raise Conflict("A deleted message cannot be edited.", code="deleted")
    if message.room.project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")
    message.body = body
    message.edited_at = timezone.now()
    message.save(update_fields=["body", "edited_at"])
    invalidate_on_commit(cache_keys.message_cache_key(message.id), cache_keys.room_stamp_key(message.room_id))
    payload = {"message": message_dict(message)}
    transaction.on_commit(
        partial(events.publish_room_event, room_id=message.room_id, kind="message.edited", payload=payload),
        robust=True,
    )
    return message


@transaction.atomic
def message_delete(*, message: Message, by: Any) -> Message:
    """Soft-delete (``deleted_at``); publish ``message.deleted`` after commit. Idempotent.

    Also counts the delete on the room (``messages_deleted``, part of its
    unread state): unread counts are then read under new cache keys.
    """
    _require_moderator_or_author(message=message, user=by)
    if message.deleted_at is not None:
        return message
    message.deleted_at = timezone.now()
    message.save(update_fields=["deleted_at"])
    # A new unread state for the room: every cached unread entry of it (the
    # shared tails, readers' counts) is named by the old one and is not read again.
    Room.objects.filter(pk=message.room_id).update(messages_deleted=F("messages_deleted") + 1)
    invalidate_on_commit(
        cache_keys.message_cache_key(message.id),
        cache_keys.room_stamp_key(message.room_id),
    )
    payload = {"id": message.id, "room": message.room_id, "seq": message.seq}
    transaction.on_commit(
        partial(events.publish_room_event, room_id=message.room_id, kind="message.deleted", payload=payload),
        robust=True,
    )
    return message
