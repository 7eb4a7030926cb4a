"""JSON API endpoints for direct-message conversations. Mounted by chatsite.api.

A DM is a private room: its history, sending, read marker and room detail
are the rooms' endpoints (``/rooms/{id}/…``) with its id. These two list
the caller's DMs and start (or find) one.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from chat.models import Room
from chat.selectors import dms as dm_selectors
from chat.services import dms as dm_services
from chatsite.api_schemas import (
    ERROR_RESPONSES,
    PageQuery,
    UserOut,
    fields_parse,
    fields_select,
    invalid_cursor,
    page_cursor_decode,
    page_cursor_encode,
    page_limit,
    selectable,
)
from projects.selectors import project_get_for_user

router = Router()


class DmCreateIn(Schema):
    # Items are checked by the service: one short error for the whole list, however long or wrong it is.
    users: list[Any] = Field(
        ...,
        description=(
            "The other people: usernames (strings) or user ids (integers), 1 to 8 of them; "
            "your own name alone is a conversation with yourself."
        ),
        json_schema_extra={"items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
    )


class DmOut(Schema):
    id: int = Field(..., description="The DM's room id: its history, sending and read marker are the room endpoints'.")
    slug: str
    project: str
    people: list[UserOut] = Field(..., description="The others in the conversation (empty for notes to self).")
    last_message_at: str | None
    unread: int | None = Field(None, description="Unread messages by others; only in the list.")


DmItem = selectable(DmOut, name="DmItem")


class DmPage(Schema):
    items: list[DmItem]  # type: ignore[valid-type]
    next_cursor: str | None


def _dm_dict(room: Room, project_slug: str) -> dict[str, Any]:
    return {
        "id": room.id,
        "slug": room.slug,
        "project": project_slug,
        "people": room.people,
        "last_message_at": room.last_message_at.isoformat() if room.last_message_at else None,
        "unread": getattr(room, "unread", None),
    }


def _activity_position(room: Room) -> dict[str, int]:
    """Where a DM stands in the list (newest activity first): its last message time in microseconds, and its id."""
    if room.last_message_at is None:
        return {"i": room.id}
    return {"t": int(room.last_message_at.timestamp() * 1_000_000), "i": room.id}


def _rank(position: dict[str, int]) -> tuple[int, int, int]:
    """Sorts like the list: rooms with messages (newest first), then those without (newest first)."""
    if "t" in position:
        return (0, -position["t"], -position["i"])
    return (1, 0, -position["i"])


@router.get("/projects/{slug}/dms", response={200: DmPage, **ERROR_RESPONSES}, tags=["dms"], exclude_unset=True)
def dm_list(request: HttpRequest, slug: str, page: Query[PageQuery]) -> dict[str, Any]:
    """The caller's direct messages in a project, newest activity first, with unread counts and the other people.

    Page size: `limit` (default 50; values above 100 are treated as 100).
    `fields` picks the fields returned. A conversation with new activity
    moves to the front: a client paging through the list starts again from
    the first page to see it.
    """
    fields = fields_parse(page.fields, schema=DmOut)
    project, _ = project_get_for_user(user=request.auth, slug=slug)
    limit = page_limit(page.limit)
    dms = dm_selectors.dms_for_user(user=request.auth, project=project)
    if page.cursor is not None:
        after = page_cursor_decode(page.cursor, fields={"t": int, "i": int})
        if "i" not in after:
            raise invalid_cursor()
        dms = [room for room in dms if _rank(_activity_position(room)) > _rank(after)]
    items = dms[:limit]
    next_cursor = page_cursor_encode(_activity_position(items[-1])) if len(dms) > limit else None
    return {"items": fields_select((_dm_dict(room, project.slug) for room in items), fields), "next_cursor": next_cursor}


@router.post("/projects/{slug}/dms", response={200: DmOut, 201: DmOut, **ERROR_RESPONSES}, tags=["dms"])
def dm_create(request: HttpRequest, slug: str, payload: DmCreateIn) -> Status:
    """Start a direct message with up to 8 other project members, or get the one you already have.

    The same set of people always gets the same conversation: 201 when it
    was created now, 200 when it existed. Creating counts against the
    `room_create` rate limit; finding does not.
    """
    project, _ = project_get_for_user(user=request.auth, slug=slug)
    room, created = dm_services.dm_get_or_create(project=project, by=request.auth, users=payload.users)
    (room,) = dm_selectors.dms_with_people(user=request.auth, dms=[room])
    return Status(201 if created else 200, _dm_dict(room, project.slug))
