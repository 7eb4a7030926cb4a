"""Reads of pins and saved messages: a room's pins, a user's saved list, which messages are pinned.

The rows are one query whatever their number; their messages are shown as
history shows them (chat.selectors.history.message_dicts: the message cache,
reactions and thread summaries included), a fixed number of queries more
on a cache miss. Deleted messages are never listed, nor marked pinned (a
delete leaves the pin row: chat.services.pins).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from chat.models import Pin, Room, SavedMessage
from chat.selectors.history import message_dicts
from chat.selectors.rooms import readable_room_ids
from chatsite.users import USER_DISPLAY_FIELDS, user_dict


def room_pins(*, room: Room) -> list[Pin]:
    """The room's pins, newest first, at most ``CHAT_PINS_MAX``, each with ``pinned_by`` (see :func:`pin_dicts`).

    The caller has checked that the user reads ``room`` (room_get_for_user).
    One query on pin_room_id_idx, read backwards.
    """
    pins: QuerySet[Pin] = (
        Pin.objects.filter(room=room, message__deleted_at__isnull=True)
        .select_related("pinned_by")
        .only("id", "room_id", "message_id", "created_at", "pinned_by__id",
              *(f"pinned_by__{name}" for name in USER_DISPLAY_FIELDS))
        .order_by("-id")
    )  # fmt: skip
    return list(pins[: settings.CHAT_PINS_MAX])


def pin_dicts(pins: list[Pin]) -> list[dict[str, Any]]:
    """Pins on the wire: ``{"message", "pinned_by" (null once that user is deleted), "pinned_at"}``.

    ``pinned_by`` must be loaded with the pins (room_pins, or the pin just written).
    """
    messages = message_dicts(ids=[pin.message_id for pin in pins])
    return [
        {
            "message": messages[pin.message_id],
            "pinned_by": user_dict(pin.pinned_by) if pin.pinned_by_id is not None else None,
            "pinned_at": pin.created_at.isoformat(),
        }
        for pin in pins
        if pin.message_id in messages
    ]


def pinned_message_ids(*, message_ids: list[int]) -> set[int]:
    """Which of ``message_ids`` are pinned (deleted ones never are): one query on pin_message_uniq, none for no ids."""
    if not message_ids:
        return set()
    pinned = Pin.objects.filter(message_id__in=message_ids, message__deleted_at__isnull=True)
    return set(pinned.values_list("message_id", flat=True))


def saved_for_user(*, user: Any, before: int | None = None, limit: int) -> list[SavedMessage]:
    """The user's saved messages that they can still read, newest save first (see :func:`saved_dicts`).

    Paged by save id (``before``: the id of the oldest save already shown).
    Access is checked in the same query, now: a save in a project the user
    left, or a private room they left, is not listed (the row stays, and
    shows again if access comes back). Deleted messages are left out. One
    query walking saved_user_id_idx backwards.
    """
    if not user.is_authenticated:
        return []
    saved = (
        SavedMessage.objects.filter(user=user, message__deleted_at__isnull=True)
        .filter(message__room_id__in=readable_room_ids(user))
        .only("id", "created_at", "user_id", "message_id")
        .order_by("-id")
    )
    if before is not None:
        saved = saved.filter(id__lt=before)
    return list(saved[:limit])


def saved_dicts(saved: list[SavedMessage]) -> list[dict[str, Any]]:
    """Saved messages on the wire: ``{"message", "saved_at"}``."""
    messages = message_dicts(ids=[row.message_id for row in saved])
    return [
        {"message": messages[row.message_id], "saved_at": row.created_at.isoformat()}
        for row in saved
        if row.message_id in messages
    ]
