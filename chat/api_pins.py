"""JSON API endpoints for pinned and saved messages. Mounted by chatsite.api.

Thin, as chat.api: a message or room the caller may not read is 404
(chat.selectors), what they may read but not change is 403 (chat.services).
The schemas are here too: they document the items of
chat.selectors.pins.pin_dicts and saved_dicts.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from chat.api_schemas import MessageOut
from chat.selectors import history as history_selectors
from chat.selectors import pins as pin_selectors
from chat.selectors import rooms as room_selectors
from chat.services import pins as pin_services
from chat.services import saved as saved_services
from chatsite.api_schemas import (
    ERROR_RESPONSES,
    PageQuery,
    UserOut,
    fields_parse,
    fields_select,
    page_cursor_encode,
    page_cursor_key,
    page_limit,
    selectable,
)

router = Router()


# --- Schemas ----------------------------------------------------------------


class PinOut(Schema):
    """A pinned message."""

    message: MessageOut
    pinned_by: UserOut | None = Field(..., description="Who pinned it; null once that user is deleted.")
    pinned_at: str


class PinList(Schema):
    items: list[PinOut] = Field(..., description="Newest pin first; at most the room's pin limit (PINS_MAX).")


class SavedOut(Schema):
    """A message you saved."""

    message: MessageOut
    saved_at: str


SavedItem = selectable(SavedOut, name="SavedItem")


class SavedPage(Schema):
    items: list[SavedItem]  # type: ignore[valid-type]
    next_cursor: str | None


# --- Pins -------------------------------------------------------------------


@router.get("/rooms/{room_id}/pins", response={200: PinList, **ERROR_RESPONSES}, tags=["pins"])
def pin_list(request: HttpRequest, room_id: int) -> dict[str, Any]:
    """The room's pinned messages, newest pin first, in one page (a room has at most `PINS_MAX` pins)."""
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    return {"items": pin_selectors.pin_dicts(pin_selectors.room_pins(room=room))}


@router.put("/messages/{message_id}/pin", response={200: PinOut, 201: PinOut, **ERROR_RESPONSES}, tags=["pins"])
def pin_create(request: HttpRequest, message_id: int) -> Status:
    """Pin a message in its room (its author or a project admin); `message.pinned` goes to the room's sockets.

    201 when pinned now, 200 when it already was (nothing changes). 409
    `deleted` for a deleted message, 409 `too_many_pins` when the room has
    `PINS_MAX` pins, 403 `archived` in an archived project.
    """
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    pin, created = pin_services.pin_create(message=message, by=request.auth)
    return Status(201 if created else 200, pin_selectors.pin_dicts([pin])[0])


@router.delete("/messages/{message_id}/pin", response={204: None, **ERROR_RESPONSES}, tags=["pins"])
def pin_delete(request: HttpRequest, message_id: int) -> Status:
    """Unpin a message (its author or a project admin); 204 whether or not it was pinned."""
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    pin_services.pin_delete(message=message, by=request.auth)
    return Status(204, None)


# --- Saved messages ---------------------------------------------------------


@router.get("/me/saved", response={200: SavedPage, **ERROR_RESPONSES}, tags=["saved"], exclude_unset=True)
def saved_list(request: HttpRequest, page: Query[PageQuery]) -> dict[str, Any]:
    """Your saved messages, newest save first, only those you can still read (and not deleted).

    Page size: `limit` (default 50; values above 100 are treated as 100);
    `next_cursor` fetches older saves. `fields` picks the item fields returned.
    """
    fields = fields_parse(page.fields, schema=SavedOut)
    limit = page_limit(page.limit)
    before = page_cursor_key(page.cursor, key="b", kind=int)
    saved = pin_selectors.saved_for_user(user=request.auth, before=before, limit=limit + 1)
    items = saved[:limit]
    next_cursor = page_cursor_encode({"b": items[-1].id}) if len(saved) > limit else None
    return {"items": fields_select(pin_selectors.saved_dicts(items), fields), "next_cursor": next_cursor}


@router.put("/messages/{message_id}/saved", response={200: SavedOut, 201: SavedOut, **ERROR_RESPONSES}, tags=["saved"])
def saved_create(request: HttpRequest, message_id: int) -> Status:
    """Save a message for yourself (any reader of its room); `message.saved` goes to your sockets.

    201 when saved now, 200 when it already was. 409 `deleted` for a deleted message.
    """
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    saved, created = saved_services.message_save(message=message, user=request.auth)
    return Status(201 if created else 200, pin_selectors.saved_dicts([saved])[0])


@router.delete("/messages/{message_id}/saved", response={204: None, **ERROR_RESPONSES}, tags=["saved"])
def saved_delete(request: HttpRequest, message_id: int) -> Status:
    """Forget your save of a message; 204 whether or not it was saved."""
    message = history_selectors.message_get_for_user(user=request.auth, message_id=message_id)
    saved_services.message_unsave(message=message, user=request.auth)
    return Status(204, None)
