"""Writes of pins: pin and unpin a message in its room.

Who may: the message's author, and the project's owners and admins (as for
edits and deletes). Both writes are idempotent. A real change takes the
room's next ``seq`` (chat.services.room_changes), so resume replays it; after
commit it publishes ``message.pinned`` / ``message.unpinned`` to the room with
that ``seq`` and drops the room's history stamp, so a cached history page
never shows a stale pin mark.

Deleting a message leaves its pin row; every read (chat.selectors.pins)
and the cap leave out pins of deleted messages, so a delete costs no extra
statement, and clients drop the pin on ``message.deleted``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from chat import cache_keys, events
from chat.models import Message, Pin, RoomChange
from chat.selectors import pins as pin_selectors
from chat.services.room_changes import room_changes_log
from chatsite.errors import Conflict, Forbidden
from perf.cache import invalidate_on_commit
from projects.models import Membership


def _require_pinner(*, message: Message, user: Any) -> None:
    """Authors may pin their messages; project admins and owners may pin any."""
    if message.author_id == user.id:
        return
    if getattr(message.room, "my_role", None) in (Membership.Role.OWNER, Membership.Role.ADMIN):
        return
    raise Forbidden("Only the author or a project admin can pin or unpin this message.")


def _require_writable(message: Message) -> None:
    if message.room.project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")


def _lock_room_pins(room_id: int) -> None:
    """Serialize pin writes of one room until commit, so two pins at once cannot both pass the cap.

    An advisory lock, not the room row's: that row is the message writer's
    lock, and a pin takes it only for its last two statements (its seq) so
    as not to hold up the room's senders. SQLite writes one transaction at a
    time anyway.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended('chat.pins', %s))", [room_id])


@transaction.atomic
def pin_create(*, message: Message, by: Any) -> tuple[Pin, bool]:
    """Pin ``message`` in its room: ``(pin, created)``; an existing pin comes back with ``created=False``.

    ``message.room`` must carry ``my_role`` (chat.selectors.history.message_get_for_user).
    Refuses a deleted message (Conflict ``deleted``), an archived project
    (Forbidden ``archived``) and a room that already has ``CHAT_PINS_MAX``
    pins (Conflict ``too_many_pins``). Two pins of the same message at once
    make one pin: the loser's insert fails on pin_message_uniq inside a
    savepoint and it returns the winner's. Publishes ``message.pinned`` after
    commit, only when created.
    """
    _require_pinner(message=message, user=by)
    if message.deleted_at is not None:
        raise Conflict("A deleted message cannot be pinned.", code="deleted")
    _require_writable(message)
    _lock_room_pins(message.room_id)
    existing = Pin.objects.filter(message=message).select_related("pinned_by").first()
    if existing is not None:
        return existing, False
    limit = settings.CHAT_PINS_MAX
    # Pins of deleted messages are listed nowhere, so they do not count either.
    if Pin.objects.filter(room_id=message.room_id, message__deleted_at__isnull=True).count() >= limit:
        raise Conflict(f"This room already has {limit} pinned messages; unpin one first.", code="too_many_pins")
    try:
        with transaction.atomic():
            pin = Pin.objects.create(room_id=message.room_id, message=message, pinned_by=by)
    except IntegrityError:
        # Pinned meanwhile by a writer the lock did not order (SQLite has none): theirs stands.
        existing = Pin.objects.filter(message=message).select_related("pinned_by").first()
        if existing is None:
            raise
        return existing, False
    invalidate_on_commit(cache_keys.room_stamp_key(message.room_id))
    payload = {"room": message.room_id, **pin_selectors.pin_dicts([pin])[0]}
    (payload["seq"],) = room_changes_log(room_id=message.room_id, changes=[(RoomChange.Kind.PIN, message.id)])
    transaction.on_commit(
        partial(events.publish_room_event, room_id=message.room_id, kind="message.pinned", payload=payload, seq=payload["seq"]),
        robust=True,
    )
    return pin, True


@transaction.atomic
def pin_delete(*, message: Message, by: Any) -> bool:
    """Unpin ``message``; True if a pin was removed. Idempotent: unpinning an unpinned message is not an error.

    Same rules as :func:`pin_create` for who may and for archived projects (a
    deleted message may be unpinned). Publishes ``message.unpinned`` after
    commit, only when a pin was removed.
    """
    _require_pinner(message=message, user=by)
    _require_writable(message)
    deleted, _ = Pin.objects.filter(message_id=message.id).delete()
    if not deleted:
        return False
    invalidate_on_commit(cache_keys.room_stamp_key(message.room_id))
    (seq,) = room_changes_log(room_id=message.room_id, changes=[(RoomChange.Kind.UNPIN, message.id)])
    payload = {"room": message.room_id, "id": message.id, "seq": seq}
    transaction.on_commit(
        partial(events.publish_room_event, room_id=message.room_id, kind="message.unpinned", payload=payload, seq=seq),
        robust=True,
    )
    return True
