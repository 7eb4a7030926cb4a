"""Writes of direct-message conversations: get-or-create for a set of people.

A DM is a private room of kind DM whose RoomMembers are its people, so
history, sending, resume, read markers, unread counts and access rules are
the rooms' own. ``dm_key`` (the people's sorted ids) is unique per project:
the same set of people always finds the same room, also when two of them
start it at the same moment.

Membership of a DM is fixed: nobody is added, removed or leaves
(chat.services.rooms refuses it), because ``dm_key`` names its people.
Someone who leaves the project loses access like any private room's member
(chat.signals); if they come back and the conversation is asked for again,
they are its member again.

Caches: the room's and its members' saves drop the project's room lists
and the members' access entries (chat.signals), as for any room.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q

from chat.models import Room, RoomMember
from chatsite import ratelimit
from chatsite.api_schemas import MAX_ID
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from chatsite.users import USER_DISPLAY_FIELDS
from projects.models import Project

User = get_user_model()

# The people of one conversation, its starter included.
DM_MAX_PEOPLE = 9
# What every DM slug starts with; room_create refuses slugs of this form.
DM_SLUG_PREFIX = "dm-"


def dm_key_for(user_ids: Sequence[int]) -> str:
    """The key of a set of people: their distinct ids, sorted, joined by commas."""
    return ",".join(str(i) for i in sorted(set(user_ids)))


def dm_slug_for(dm_key: str) -> str:
    """The DM's slug: ``dm-`` and 16 hex digits of a hash of its key (unique in practice, never a person's name)."""
    return DM_SLUG_PREFIX + hashlib.blake2b(dm_key.encode(), digest_size=8).hexdigest()


def dm_get_or_create(*, project: Project, by: Any, users: Sequence[Any]) -> tuple[Room, bool]:
    """The DM of ``by`` and ``users`` in ``project``, and whether it was created now.

    ``users`` names the others: usernames (strings, a leading ``@`` is
    ignored) or user ids (integers), 1 to 8 of them besides ``by``; naming
    ``by`` alone is a conversation with oneself. The caller checked that
    ``by`` is a project member.

    Raises InvalidInput (nobody named, more than DM_MAX_PEOPLE people, a
    name that is neither), NotFound ``user_not_found`` (a name that is not a
    project member: unknown users and non-members answer alike), Forbidden
    ``archived`` when a new DM would be created in an archived project (an
    existing one is still found), RateLimited (creating counts against
    ``room_create``; finding does not).

    Idempotent: an existing DM is returned, and any of its people missing
    from its members (they left the project and came back) are members
    again. Two requests racing to create it both get the one room: the
    loser's insert fails on ``room_project_dm_key_uniq`` inside a savepoint
    and it reads the winner's.
    """
    people = _dm_people(project=project, by=by, users=users)
    key = dm_key_for([u.pk for u in people])
    room = _dm_find(project=project, key=key)
    if room is not None:
        _dm_restore_members(room=room, people=people)
        return room, False
    if project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")
    ratelimit.hit("room_create", by.pk)
    try:
        with transaction.atomic():
            room = Room.objects.create(
                project=project,
                kind=Room.Kind.DM,
                dm_key=key,
                slug=dm_slug_for(key),
                name=", ".join(sorted(u.username for u in people))[:100],
                is_private=True,
                created_by=by,
            )
            # One save each (at most nine): chat.signals drops each member's access and room list.
            for person in people:
                RoomMember.objects.create(room=room, user=person)
    except IntegrityError:
        # Someone started the same conversation at the same moment: theirs committed first.
        room = _dm_find(project=project, key=key)
        if room is None:
            raise Conflict("The conversation could not be created; try again.", code="dm_conflict") from None
        _dm_restore_members(room=room, people=people)
        return room, False
    return room, True


def _dm_people(*, project: Project, by: Any, users: Sequence[Any]) -> list[Any]:
    """``by`` and the project members named by ``users``, each once; raises for anything else."""
    if not isinstance(users, (list, tuple)):
        raise InvalidInput("Name the people as a list of usernames or ids.", code="invalid_user")
    if not users:
        raise InvalidInput("Name at least one person (yourself for notes to self).", code="no_people")
    if len(users) > DM_MAX_PEOPLE:
        raise InvalidInput(f"A conversation has at most {DM_MAX_PEOPLE} people, you included.", code="too_many_people")
    names: set[str] = set()
    ids: set[int] = set()
    for item in users:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise InvalidInput("Name people by username (a string) or id (an integer).", code="invalid_user")
        if isinstance(item, int):
            ids.add(item)
            continue
        name = item.strip().removeprefix("@")
        if not name or "\x00" in name:
            raise InvalidInput("A username must not be empty.", code="invalid_user")
        names.add(name)
    # Ids no bigint can hold are nobody; asking the database for them would be an error.
    lookup_ids = {i for i in ids if 0 < i <= MAX_ID}
    found = list(
        User.objects.filter(memberships__project=project)
        .filter(Q(username__in=sorted(names)) | Q(pk__in=sorted(lookup_ids)))
        .only("id", *USER_DISPLAY_FIELDS)
    )
    missing = sorted(names - {u.username for u in found}) + [str(i) for i in sorted(ids - {u.pk for u in found})]
    if missing:
        listed = ", ".join(f"'{m}'" for m in missing)
        raise NotFound(f"No project member named {listed}.", code="user_not_found")
    people = {u.pk: u for u in found}
    people.setdefault(by.pk, by)
    if len(people) > DM_MAX_PEOPLE:
        raise InvalidInput(f"A conversation has at most {DM_MAX_PEOPLE} people, you included.", code="too_many_people")
    return list(people.values())


def _dm_find(*, project: Project, key: str) -> Room | None:
    return Room.objects.select_related("project").filter(project=project, dm_key=key).first()


def _dm_restore_members(*, room: Room, people: list[Any]) -> None:
    """Make every one of ``people`` a member of ``room`` again (someone who left the project and came back)."""
    present = set(RoomMember.objects.filter(room=room).values_list("user_id", flat=True))
    for person in people:
        if person.pk not in present:
            # get_or_create: another request may restore them at the same moment; its save's signal drops the caches.
            RoomMember.objects.get_or_create(room=room, user=person)
