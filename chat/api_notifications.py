"""JSON API endpoints for notification settings: the digest, do not disturb, muted rooms. Mounted by chatsite.api."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from chat.selectors import notifications as notification_selectors
from chat.selectors import rooms as room_selectors
from chat.services import notifications as notification_services
from chatsite.api_schemas import ERROR_RESPONSES

router = Router()


class NotificationsOut(Schema):
    digest: bool = Field(..., description="An e-mail of mentions and DMs still unread NOTIFY_DIGEST_DELAY minutes later.")
    quiet_until: str | None = Field(..., description="Do not disturb until then: no desktop alerts, no digest.")
    muted_rooms: list[int] = Field(..., description="Rooms and DMs you muted: no notifications or digest lines for them.")


class NotificationsIn(Schema):
    digest: bool | None = None
    quiet_until: datetime | None = Field(None, description="With a time zone; at most 30 days ahead. null ends it.")


class MuteOut(Schema):
    room: int
    muted: bool


def _settings_dict(user: Any) -> dict[str, Any]:
    current = notification_selectors.notification_settings_get(user=user)
    return {
        "digest": current.digest,
        "quiet_until": current.quiet_until.isoformat() if current.quiet_until else None,
        "muted_rooms": notification_selectors.muted_room_ids(user=user),
    }


@router.get("/me/notifications", response={200: NotificationsOut, **ERROR_RESPONSES}, tags=["notifications"])
def notifications_get(request: HttpRequest) -> dict[str, Any]:
    """Your notification settings."""
    return _settings_dict(request.auth)


@router.put("/me/notifications", response={200: NotificationsOut, **ERROR_RESPONSES}, tags=["notifications"])
def notifications_update(request: HttpRequest, payload: NotificationsIn) -> dict[str, Any]:
    """Change the digest or do not disturb; fields left out stay as they are (`quiet_until: null` ends it)."""
    changes: dict[str, Any] = {"digest": payload.digest}
    if "quiet_until" in payload.model_fields_set:
        changes["quiet_until"] = payload.quiet_until
    notification_services.notification_settings_update(user=request.auth, **changes)
    return _settings_dict(request.auth)


@router.put("/rooms/{room_id}/mute", response={200: MuteOut, 201: MuteOut, **ERROR_RESPONSES}, tags=["notifications"])
def room_mute(request: HttpRequest, room_id: int) -> Status:
    """Mute a room or DM you read: 201 when muted now, 200 when it was."""
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    created = notification_services.room_mute(user=request.auth, room=room)
    return Status(201 if created else 200, {"room": room.id, "muted": True})


@router.delete("/rooms/{room_id}/mute", response={204: None, **ERROR_RESPONSES}, tags=["notifications"])
def room_unmute(request: HttpRequest, room_id: int) -> Status:
    """Unmute; 204 whether or not it was muted."""
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    notification_services.room_unmute(user=request.auth, room=room)
    return Status(204, None)
