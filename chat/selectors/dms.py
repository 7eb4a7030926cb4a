"""Reads of direct-message conversations: a user's DMs with their people and unread counts.

DMs are rooms (chat.selectors.rooms.rooms_for_user lists them with the
rest, unread counts and caches included); this splits them off and adds
who each conversation is with.
"""

from __future__ import annotations

from typing import Any

from chat.models import Room
from chat.selectors.history import user_profiles
from chat.selectors.rooms import rooms_for_user
from chatsite.users import user_display_name
from projects.models import Project


def rooms_split(rooms: list[Room]) -> tuple[list[Room], list[Room]]:
    """``rooms`` (a room list) as its ordinary rooms and its DMs, each in the order given."""
    plain = [r for r in rooms if r.kind != Room.Kind.DM]
    return plain, [r for r in rooms if r.kind == Room.Kind.DM]


def dm_person_ids(room: Room) -> list[int]:
    """Everyone the DM was started with, by id (its ``dm_key``)."""
    return [int(i) for i in (room.dm_key or "").split(",") if i]


def dms_with_people(*, user: Any, dms: list[Room]) -> list[Room]:
    """``dms`` newest activity first, each with ``people`` (the others, as user dicts) and ``title``.

    ``people`` are the conversation's people as it was started (its key), so
    someone who has since left the project still shows; deleted users do
    not. Display data comes from the ``profiles`` cache family: one round
    trip for every DM at once, a query only for profiles not cached.
    """
    ids = sorted({i for room in dms for i in dm_person_ids(room)})
    profiles = user_profiles(ids=ids) if ids else {}
    for room in dms:
        room.people = [profiles[i] for i in dm_person_ids(room) if i != user.pk and i in profiles]
        room.title = dm_title(user=user, people=room.people)
    # Newest activity first; a conversation with no message yet by when it was started.
    return sorted(dms, key=lambda r: (r.last_message_at is not None, r.last_message_at, r.id), reverse=True)


def dm_title(*, user: Any, people: list[dict[str, Any]]) -> str:
    """How ``user`` sees a DM named: the others' display names, or their own for notes to self."""
    if not people:
        return f"{user_display_name(user)} (you)"
    return ", ".join(p["display_name"] for p in people)


def dms_for_user(*, user: Any, project: Project) -> list[Room]:
    """The user's DMs in ``project``, newest activity first, with ``unread``, ``people`` and ``title``.

    The room list's queries and caches (rooms_for_user) plus one profiles lookup.
    """
    return dms_with_people(user=user, dms=rooms_split(rooms_for_user(user=user, project=project))[1])
