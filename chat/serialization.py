"""The one shape of a message and a room on the wire (API items and WebSocket events); a user's is chatsite.users."""

from __future__ import annotations

from typing import Any

from chat.models import Message, Room
from chat.rendering import body_html
from chatsite.users import user_dict


def message_dict(message: Message, *, reactions: Any = (), thread: dict[str, Any] | None = None) -> dict[str, Any]:
    """``reactions``: the message's summary (chat.selectors.reactions.with_names); a new message has none.

    ``thread``: for the first message of a thread, its replies' summary
    (chat.selectors.history.thread_summaries); None while it has no replies.
    """
    deleted = message.deleted_at is not None
    return {
        "id": message.id,
        "room": message.room_id,
        "seq": message.seq,
        "author": user_dict(message.author),
        "body": "" if deleted else message.body,
        "html": "" if deleted else body_html(message.body),
        "created_at": message.created_at.isoformat(),
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "deleted": deleted,
        "client_id": message.client_id,
        "reactions": list(reactions),
        "thread_root": message.thread_root_id,
        "thread": thread,
    }


def room_dict(room: Room) -> dict[str, Any]:
    return {
        "id": room.id,
        "slug": room.slug,
        "name": room.name,
        "topic": room.topic,
        "is_private": room.is_private,
        "kind": getattr(room, "kind", Room.Kind.ROOM),
        "project": getattr(room, "project_slug", None) or room.project.slug,
        "last_message_at": room.last_message_at.isoformat() if room.last_message_at else None,
        "unread": getattr(room, "unread", None),
    }
