"""Writes of messages: post, edit, delete. ``messages_create`` is the one message writer.

Real-time events are published with ``transaction.on_commit`` only: a write
that rolls back never reaches a socket.

Caches: message writes update or invalidate the message caches here, after
commit (keys from chat.cache_keys).
"""

from __future__ import annotations

import dataclasses
import unicodedata
from contextlib import nullcontext
from functools import partial
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from chat import cache_keys, events, metrics
from chat.models import Message, Room, RoomChange
from chat.selectors import history as history_selectors
from chat.services import threads as thread_services
from chat.services import uploads as upload_services
from chat.services.room_changes import room_changes_log
from chat.selectors import rooms as room_selectors
from chat.selectors import unread as unread_selectors
from chat.serialization import message_dict
from chatsite.errors import ChatError, Conflict, Forbidden, InvalidInput, NotFound
from perf import cache as perf_cache
from perf.cache import invalidate_on_commit
from projects.models import Membership, Project

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


@dataclass(frozen=True)
class Draft:
    """One message to write: ``author`` has been checked to read ``room`` (see :func:`messages_create`).

    ``room`` needs only its id: ``Room(id=..)`` will do.
    """

    room: Room
    author: Any
    body: Any
    client_id: Any = None
    # A reply: the id of a message of the same room (a reply's root is taken).
    thread_root: Any = None


# What messages_create returns per draft: the message and whether it is new, or why it was refused.
Outcome = Union[tuple[Message, bool], ChatError]


def message_create(
    *, room: Room, author: Any, body: str, client_id: str | None = None, thread_root: int | None = None
) -> tuple[Message, bool]:
    """Persist one message: :func:`messages_create` with one draft. Raises what it refuses with."""
    outcome = messages_create([Draft(room=room, author=author, body=body, client_id=client_id, thread_root=thread_root)])[0]
    if isinstance(outcome, ChatError):
        raise outcome
    return outcome


def messages_create(drafts: Sequence[Draft]) -> list[Outcome]:
    """Persist messages; after commit, publish each ``message.new`` and update the caches (:func:`_messages_created`).

    The one message writer: the API, the pages and the seeders call it through
    :func:`message_create`, the WebSocket with every send that arrived
    together (chat.sending: one statement and one commit for the group). The
    caller has checked that each author may read the room. Returns one
    outcome per draft, in order: ``(message, created)``, or the ChatError
    that refused it (the others are written all the same). With a
    ``client_id`` already used by its author nothing is written and the
    original message comes back with ``created=False`` (idempotent retries);
    reusing it for another room is a Conflict.

    Ordering: each room's row lock is taken (its counter bumped) before the
    messages' ids are drawn and held until commit, so within a room ids commit
    in increasing order and ``seq`` is contiguous; a failed insert uses up
    no ``seq``. Drafts of one room get their ``seq`` in the order given.
    """
    outcomes: list[Outcome | None] = [None] * len(drafts)
    valid: list[tuple[int, Draft]] = []
    for i, draft in enumerate(drafts):
        try:
            valid.append((i, _clean_draft(draft)))
        except ChatError as exc:
            outcomes[i] = exc
    valid = _with_thread_roots(valid, outcomes)
    now = timezone.now()
    created: list[tuple[Message, int]] = []
    for i, outcome in zip([i for i, _ in valid], _insert_messages([d for _, d in valid], now=now)):
        outcomes[i] = outcome
        if isinstance(outcome, tuple) and outcome[1] is not None:
            created.append(outcome)
    if created:
        transaction.on_commit(partial(_messages_created, created=created), robust=True)
    return [o if isinstance(o, ChatError) else (o[0], o[1] is not None) for o in outcomes]  # type: ignore[misc]


def _clean_draft(draft: Draft) -> Draft:
    # Whether the project is archived is read under the room's lock, by the statement itself.
    thread_root = draft.thread_root
    if thread_root is not None and (not isinstance(thread_root, int) or isinstance(thread_root, bool) or thread_root <= 0):
        raise InvalidInput("thread_root must be the id of a message.", code="invalid_thread_root")
    return Draft(
        room=draft.room, author=draft.author, body=_clean_body(draft.body),
        client_id=_clean_client_id(draft.client_id), thread_root=thread_root,
    )  # fmt: skip


def _with_thread_roots(valid: list[tuple[int, Draft]], outcomes: list[Any]) -> list[tuple[int, Draft]]:
    """Replies point at their thread's root (a reply to a reply joins its thread); one query for all.

    A parent in another room (or none) is NotFound, as a message the author
    may not read; a deleted root takes no new replies (Conflict ``deleted``).
    """
    parents = {d.thread_root for _, d in valid if d.thread_root is not None}
    if not parents:
        return valid
    rows = {
        row[0]: row
        for row in Message.objects.filter(id__in=parents).values_list("id", "room_id", "thread_root_id", "deleted_at")
    }
    roots = {row[2] for row in rows.values() if row[2] is not None} - set(rows)
    if roots:
        rows.update(
            {row[0]: row for row in Message.objects.filter(id__in=roots).values_list("id", "room_id", "thread_root_id", "deleted_at")}
        )
    kept = []
    for i, draft in valid:
        if draft.thread_root is None:
            kept.append((i, draft))
            continue
        parent = rows.get(draft.thread_root)
        root = parent if parent is None or parent[2] is None else rows.get(parent[2])
        if root is None or root[1] != draft.room.id:
            outcomes[i] = NotFound("Message not found.")
        elif root[3] is not None:
            outcomes[i] = Conflict("A deleted message takes no new replies.", code="deleted")
        else:
            kept.append((i, dataclasses.replace(draft, thread_root=root[0])))
    return kept


def _insert_messages(drafts: list[Draft], *, now: Any) -> list[Any]:
    """Write ``drafts``: per draft ``(message, room's delete count)`` when written, ``(original, None)`` for a
    retried client_id, or a ChatError.

    On PostgreSQL one statement for all (:data:`INSERT_MESSAGES_SQL`), which
    outside a caller's transaction is its own. A duplicate client_id fails the
    whole statement, using up nothing; then each draft is written on its own
    (the same statement), so only the retry is answered with its original.
    Elsewhere (the embedded SQLite) the same steps one draft at a time.
    """
    if not drafts:
        return []
    if connection.vendor != "postgresql":
        return [_insert_one_sqlite(draft, now=now) for draft in drafts]
    try:
        rows = _insert_rows(drafts, now=now)
    except IntegrityError:
        if len(drafts) == 1:
            return [_retried(drafts[0])]
    else:
        return _match_rows(drafts, rows, now=now)
    outcomes = []
    for draft in drafts:
        try:
            outcomes.extend(_match_rows([draft], _insert_rows([draft], now=now), now=now))
        except IntegrityError:
            outcomes.append(_retried(draft))
    return outcomes


def _insert_rows(drafts: list[Draft], *, now: Any) -> list[tuple[int, int, int, int]]:
    # A savepoint only inside a caller's transaction, so a duplicate client_id leaves it usable.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(
                INSERT_MESSAGES_SQL,
                {
                    "now": now,
                    "rooms": [d.room.id for d in drafts],
                    "authors": [d.author.id for d in drafts],
                    "bodies": [d.body for d in drafts],
                    "client_ids": [d.client_id for d in drafts],
                    "thread_roots": [d.thread_root for d in drafts],
                },
            )
            return cursor.fetchall()


def _retried(draft: Draft) -> Any:
    """The outcome of a draft whose insert broke the (author, client_id) constraint."""
    if draft.client_id is None:
        raise IntegrityError("message insert failed without a client_id")
    try:
        original = _original_for_retry(author=draft.author, client_id=draft.client_id, room_id=draft.room.id)
    except ChatError as exc:
        return exc
    if original is None:
        raise IntegrityError("message insert failed, and no message holds its client_id")
    return (original, None)


def _match_rows(drafts: list[Draft], rows: list[tuple[int, int, int, int]], *, now: Any) -> list[Any]:
    """Give each draft its row: a room's drafts took its next seqs in the order given. Rooms without rows
    were missing or archived under the lock."""
    by_room: dict[int, list[tuple[int, int, int]]] = {}
    for message_id, room_id, seq, deleted in sorted(rows, key=lambda row: (row[1], row[2])):
        by_room.setdefault(room_id, []).append((message_id, seq, deleted))
    outcomes: list[Any] = []
    for draft in drafts:
        written = by_room.get(draft.room.id)
        if not written:
            outcomes.append(_refusal(draft.room.id))
            continue
        message_id, seq, deleted = written.pop(0)
        message = Message(
            id=message_id, room=draft.room, author=draft.author, body=draft.body,
            client_id=draft.client_id, seq=seq, created_at=now, thread_root_id=draft.thread_root,
        )
        message._state.adding, message._state.db = False, connection.alias  # a stored row, as if loaded
        outcomes.append((message, deleted))
    return outcomes


def _refusal(room_id: int) -> ChatError:
    """Why the writer found no room to write to: it is gone, or its project was archived meanwhile."""
    archived = Room.objects.filter(pk=room_id).values_list("project__archived", flat=True).first()
    if archived:
        return Forbidden("This project is archived; it is read-only.", code="archived")
    return NotFound("Room not found.")


def _insert_one_sqlite(draft: Draft, *, now: Any) -> Any:
    """The embedded database's writer: the counter, then the row, in one transaction."""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {Room._meta.db_table} SET last_message_seq = last_message_seq + 1, last_message_at = %s "
                    f"WHERE id = %s AND NOT EXISTS (SELECT 1 FROM {Project._meta.db_table} p "
                    f"WHERE p.id = {Room._meta.db_table}.project_id AND p.archived) "
                    "RETURNING last_message_seq, messages_deleted",
                    [now, draft.room.id],
                )
                counter = cursor.fetchone()
            if counter is None:
                return _refusal(draft.room.id)
            seq, deleted = int(counter[0]), int(counter[1])
            message = Message.objects.create(
                room=draft.room, author=draft.author, body=draft.body, client_id=draft.client_id, seq=seq,
                created_at=now, thread_root_id=draft.thread_root,
            )
    except IntegrityError:
        return _retried(draft)
    return (message, deleted)


def _insert_messages_sql() -> str:
    room, message, project = Room._meta, Message._meta, Project._meta
    column = message.get_field
    return (
        # The drafts, numbered in the order given.
        "WITH d AS (SELECT * FROM unnest(%(rooms)s::bigint[], %(authors)s::bigint[], %(bodies)s::text[], "
        "%(client_ids)s::text[], %(thread_roots)s::bigint[]) WITH ORDINALITY AS d(room, author, body, client_id, "
        "thread_root, ord)), "
        "n AS (SELECT room, count(*) AS n FROM d GROUP BY room), "
        # The rooms' locks, in id order (two writers never wait for each other in a circle); archived projects are read-only.
        f"l AS (SELECT r.id FROM {room.db_table} r JOIN {project.db_table} p ON p.id = r.{room.get_field('project').column} "
        "WHERE r.id IN (SELECT room FROM n) AND NOT p.archived ORDER BY r.id FOR UPDATE OF r), "
        f"r AS (UPDATE {room.db_table} SET last_message_seq = {room.db_table}.last_message_seq + n.n, "
        f"last_message_at = %(now)s FROM n WHERE {room.db_table}.id = n.room AND {room.db_table}.id IN (SELECT id FROM l) "
        f"RETURNING {room.db_table}.id, {room.db_table}.last_message_seq - n.n AS base, {room.db_table}.messages_deleted), "
        # Ids are drawn in (room, seq) order.
        f"m AS (INSERT INTO {message.db_table} ({column('room').column}, {column('author').column}, {column('seq').column}, "
        f"{column('body').column}, {column('created_at').column}, {column('client_id').column}, "
        f"{column('thread_root').column}) "
        "SELECT d.room, d.author, r.base + row_number() OVER (PARTITION BY d.room ORDER BY d.ord), d.body, %(now)s, "
        "d.client_id, d.thread_root FROM d JOIN r ON r.id = d.room ORDER BY d.room, d.ord "
        f"RETURNING id, {column('room').column} AS room, {column('seq').column} AS seq) "
        "SELECT m.id, m.room, m.seq, r.messages_deleted FROM m JOIN r ON r.id = m.room"
    )


INSERT_MESSAGES_SQL = _insert_messages_sql()


def _messages_created(*, created: list[tuple[Message, int]]) -> None:
    """Everything new messages set off, after their commit, in this order: the events, the caches, the count, mentions.

    Caches, in three round trips for the whole group: each message's entry
    is written through (history readers ask for it next), each room's tail
    stamp is dropped (the newest history page shows it), and each room's
    unread tail moves from the seq before the group to its last seq when it
    was cached (chat.selectors.unread): without that the first room list
    after every message would read the tail from the database.
    """
    replies = [message for message, _ in created if message.thread_root_id is not None]
    if replies:
        # Follows first: a client that hears of a reply and asks for its followed threads finds it there.
        thread_services.threads_replied(replies=replies)
    # Serialized (and its body rendered) once, for the event and the cache entry.
    dicts = {message.id: message_dict(message) for message, _ in created}
    for message, _ in created:
        events.publish_room_event(room_id=message.room_id, kind="message.new", payload={"message": dicts[message.id]}, seq=message.seq)
    per_room: dict[int, list[tuple[Message, int]]] = {}
    for message, deleted in created:
        per_room.setdefault(message.room_id, []).append((message, deleted))
    previous = {
        room_id: cache_keys.unread_tail_key(room_id, (group[0][0].seq - 1, group[0][1])) for room_id, group in per_room.items()
    }
    tails = perf_cache.get_many_counted({key: "unread" for key in previous.values()})
    entries = {
        cache_keys.message_cache_key(m.id): history_selectors.message_cache_entry(m, wire=dicts[m.id]) for m, _ in created
    }
    dropped = [cache_keys.room_tail_stamp_key(room_id) for room_id in per_room]
    for room_id, group in per_room.items():
        tail = tails.get(previous[room_id])
        if not isinstance(tail, list):
            continue
        for message, _ in group:
            if message.thread_root_id is None:  # replies are not in the room's unread count
                tail = unread_selectors.unread_tail_with(tail, message_id=message.id, author_id=message.author_id)
        last, deleted = group[-1]
        # Same lifetime as the message entries (CACHE_TTL_ENTRIES): one write for all.
        entries[cache_keys.unread_tail_key(room_id, (last.seq, deleted))] = tail
        dropped.append(previous[room_id])  # the older tail is never asked for again
    for message in replies:
        # The root's thread summary changed: its entry, and any history page showing it.
        dropped += [cache_keys.message_cache_key(message.thread_root_id), cache_keys.room_stamp_key(message.room_id)]
    perf_cache.store_many(entries, family="messages")
    perf_cache.invalidate(*dropped)
    metrics.MESSAGES_CREATED.inc(len(created))
    if replies:
        for message in replies:
            events.publish_summary(kind="thread.updated", room_id=message.room_id, message_id=message.thread_root_id)
    sharing = [message for message, _ in created if "/files/" in message.body]
    if sharing:
        upload_services.uploads_claim(messages=sharing)
    # The worker notifies @mentioned readers, and every other member of a DM (chat.background).
    dm_rooms = room_selectors.rooms_dm_ids(rooms=[group[0][0].room for group in per_room.values()])
    for message, _ in created:
        if "@" in message.body or message.room_id in dm_rooms:
            events.enqueue_background({"type": "message.created", "message_id": message.id, "room_id": message.room_id})


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
    thread = history_selectors.thread_summaries(root_ids=[message.id])[message.id] if message.thread_root_id is None else None
    reactions = history_selectors.message_reactions(message_id=message.id)
    (seq,) = room_changes_log(room_id=message.room_id, changes=[(RoomChange.Kind.EDIT, message.id)])
    payload = {"message": message_dict(message, reactions=reactions, thread=thread), "seq": seq}
    transaction.on_commit(
        partial(events.publish_room_event, room_id=message.room_id, kind="message.edited", payload=payload, seq=seq),
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
    invalidate_on_commit(
        cache_keys.message_cache_key(message.id),
        cache_keys.room_stamp_key(message.room_id),
    )
    # A new unread state for the room (messages_deleted counts it): every cached
    # unread entry of it (the shared tails, readers' counts) is named by the old
    # one and is not read again.
    (seq,) = room_changes_log(room_id=message.room_id, changes=[(RoomChange.Kind.DELETE, message.id)], deleted=1)
    payload = {"id": message.id, "room": message.room_id, "seq": seq, "thread_root": message.thread_root_id}
    transaction.on_commit(
        partial(events.publish_room_event, room_id=message.room_id, kind="message.deleted", payload=payload, seq=seq),
        robust=True,
    )
    if message.thread_root_id is not None:  # one reply fewer in its root's summary
        invalidate_on_commit(cache_keys.message_cache_key(message.thread_root_id))
        transaction.on_commit(
            partial(events.publish_summary, kind="thread.updated", room_id=message.room_id, message_id=message.thread_root_id),
            robust=True,
        )
    return message
