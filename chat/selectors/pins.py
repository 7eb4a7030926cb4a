"""Reads of pins and saved messages: a room's pins, a user's saved list, which messages are pinned.

Each is one query whatever the number of rows: the message, its author and
the pinner come in the same statement. Deleted messages are never listed,
nor marked pinned (a delete leaves the pin row: chat.services.pins).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet

from chat.models import Pin, Room, RoomMember, SavedMessage
from chat.selectors.history import MESSAGE_FIELDS
from chatsite.users import USER_DISPLAY_FIELDS
from projects.models import Membership

_MESSAGE_COLUMNS = tuple(f"message__{name}" for name in MESSAGE_FIELDS)


def room_pins(*, room: Room) -> list[Pin]:
    """The room's pins, newest first, at most ``CHAT_PINS_MAX``; each with ``message`` (and its author) and ``pinned_by``.

    The caller has checked that the user reads ``room`` (room_get_for_user).
    One query on pin_room_id_idx, read backwards.
    """
    pins: QuerySet[Pin] = (
        Pin.objects.filter(room=room, message__deleted_at__isnull=True)
        .select_related("message__author", "pinned_by")
        .only("id", "room_id", "created_at", *_MESSAGE_COLUMNS, "pinned_by__id",
              *(f"pinned_by__{name}" for name in USER_DISPLAY_FIELDS))
        .order_by("-id")
    )  # fmt: skip
    return list(pins[: settings.CHAT_PINS_MAX])


def pinned_message_ids(*, message_ids: list[int]) -> set[int]:
    """Which of ``message_ids`` are pinned (deleted ones never are): one query on pin_message_uniq, none for no ids."""
    if not message_ids:
        return set()
    pinned = Pin.objects.filter(message_id__in=message_ids, message__deleted_at__isnull=True)
    return set(pinned.values_list("message_id", flat=True))


def saved_for_user(*, user: Any, before: int | None = None, limit: int) -> list[SavedMessage]:
    """The user's saved messages that they can still read, newest save first, with ``message`` and its author.

    Paged by save id (``before``: the id of the oldest save already shown).
    Access is checked in the same query, now: a save in a project the user
    left, or a private room they left, is not listed (the row stays, and
    shows again if access comes back). Deleted messages are left out. One
    query walking saved_user_id_idx backwards.
    """
    if not user.is_authenticated:
        return []
    in_project = Membership.objects.filter(project_id=OuterRef("message__room__project_id"), user=user)
    in_room = RoomMember.objects.filter(room_id=OuterRef("message__room_id"), user=user)
    saved = (
        SavedMessage.objects.filter(user=user, message__deleted_at__isnull=True)
        .filter(Exists(in_project))
        .filter(Q(message__room__is_private=False) | Exists(in_room))
        .select_related("message__author")
        .only("id", "created_at", "user_id", *_MESSAGE_COLUMNS)
        .order_by("-id")
    )
    if before is not None:
        saved = saved.filter(id__lt=before)
    return list(saved[:limit])
