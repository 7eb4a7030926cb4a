"""The one shape of a user and a message on the wire (API items and WebSocket events)."""

from __future__ import annotations

from typing import Any

from chat.models import Message, Room


# The user fields user_dict shows besides the id: what a query for it loads, and
# what a save must touch to change it (chat.signals).
USER_DISPLAY_FIELDS = ("username", "first_name", "last_name")


def user_display_name(user: Any) -> str:
    full = f"{user.first_name} {user.last_name}".strip()
    return full or user.username


def user_dict(user: Any) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "display_name": user_display_name(user)}


def message_dict(message: Message) -> dict[str, Any]:
    deleted = message.deleted_at is not None
    return {
        "id": message.id,
        "room": message.room_id,
        "seq": message.seq,
        "author": user_dict(message.author),
        "body": "" if deleted else message.body,
        "created_at": message.created_at.isoformat(),
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "deleted": deleted,
        "client_id": message.client_id,
    }


def room_dict(room: Room) -> dict[str, Any]:
    return {
        "id": room.id,
        "slug": room.slug,
        "name": room.name,
        "topic": room.topic,
        "is_private": room.is_private,
        "project": getattr(room, "project_slug", None) or room.project.slug,
        "last_message_at": room.last_message_at.isoformat() if room.last_message_at else None,
        "unread": getattr(room, "unread", None),
    }
