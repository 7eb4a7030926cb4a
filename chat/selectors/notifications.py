"""Reads of notification settings: a user's settings, whether they muted a room."""

from __future__ import annotations

from typing import Any

from chat.models import NotificationSettings, RoomMute


def notification_settings_get(*, user: Any) -> NotificationSettings:
    """The user's settings, or the defaults (unsaved) when they never changed them."""
    return NotificationSettings.objects.filter(user=user).first() or NotificationSettings(user=user)


def room_muted(*, user: Any, room_id: int) -> bool:
    """Whether ``user`` muted the room (one query on roommute_user_room_uniq)."""
    return RoomMute.objects.filter(user=user, room_id=room_id).exists()


def muted_room_ids(*, user: Any) -> list[int]:
    return sorted(RoomMute.objects.filter(user=user).values_list("room_id", flat=True))
