"""The one public shape of a user: the API, the WebSocket and the pages show a user this way."""

from __future__ import annotations

from typing import Any

# The user fields user_dict shows besides the id: what a query for it loads, and
# what a save must touch to change it (chat.signals).
USER_DISPLAY_FIELDS = ("username", "first_name", "last_name")


def user_display_name(user: Any) -> str:
    full = f"{user.first_name} {user.last_name}".strip()
    return full or user.username


def user_dict(user: Any) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "display_name": user_display_name(user)}
