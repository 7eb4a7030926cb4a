"""Writes of rooms: read markers, rooms, room members.

Caches: rooms and room members (like projects and memberships) change rarely
and also through the admin, so their cache entries are invalidated by model
hooks (chat.signals) on every save and delete, whichever code made it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from chat.models import Message, ReadMarker, Room, RoomMember
from chat.services.dms import DM_SLUG_PREFIX
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from projects.models import Membership, Project

User = get_user_model()


def room_mark_read(*, room: Room, user: Any, last_read_message_id: int) -> int:
    """Move the user's read marker in ``room`` forward (never back). Returns the marker.

    The marker is clamped to the room's newest message id.
    """
    if not isinstance(last_read_message_id, int) or last_read_message_id < 0:
        raise InvalidInput("last_id must be a non-negative integer.")
    newest = Message.objects.filter(room=room).order_by("-id").values_list("id", flat=True).first() or 0
    marker = min(last_read_message_id, newest)
    updated = ReadMarker.objects.filter(room=room, user=user, last_read_message_id__lt=marker).update(
        last_read_message_id=marker
    )
    if not updated:
        try:
            with transaction.atomic():
                ReadMarker.objects.get_or_create(room=room, user=user, defaults={"last_read_message_id": marker})
        except IntegrityError:
            pass
    return marker


@transaction.atomic
def room_create(
    *, project: Project, user: Any, name: str, slug: str | None = None, topic: str = "", is_private: bool = False
) -> Room:
    """Create a room; its creator becomes a RoomMember. The caller checked project membership."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("Room name must not be empty.")
    if "\x00" in name or "\x00" in (topic or ""):
        raise InvalidInput("Room name and topic must not contain NUL characters.")
    if len(name) > 100:
        raise InvalidInput("Room name is longer than 100 characters.")
    if len(topic or "") > 250:
        raise InvalidInput("Room topic is longer than 250 characters.")
    slug = slugify(slug or name)[:64]
    if not slug:
        raise InvalidInput("Room slug must contain letters or digits.")
    if slug.startswith(DM_SLUG_PREFIX):
        # Direct messages' slugs have this form (chat.services.dms): a room must never take one.
        raise InvalidInput(
            f"Room slugs starting with '{DM_SLUG_PREFIX}' are kept for direct messages: choose another name or slug.",
            code="reserved_slug",
        )
    if project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")
    try:
        with transaction.atomic():
            room = Room.objects.create(
                project=project, slug=slug, name=name, topic=topic or "", is_private=is_private, created_by=user
            )
    except IntegrityError:
        raise Conflict(f"A room with slug '{slug}' already exists in this project.", code="slug_taken") from None
    RoomMember.objects.create(room=room, user=user)
    return room


@transaction.atomic
def room_member_add(*, room: Room, username: str, by: Any) -> RoomMember:
    """Add a project member to a private room. Room members and project admins only; never to a DM."""
    _refuse_dm(room)
    by_role = Membership.objects.filter(project_id=room.project_id, user=by).values_list("role", flat=True).first()
    is_admin = by_role in (Membership.Role.OWNER, Membership.Role.ADMIN)
    if not is_admin and not RoomMember.objects.filter(room=room, user=by).exists():
        raise Forbidden("Only room members and project admins can invite to this room.")
    user = User.objects.filter(username=(username or "").strip()).first()
    if user is None or not Membership.objects.filter(project_id=room.project_id, user=user).exists():
        raise NotFound(f"No project member named '{username}'.", code="user_not_found")
    member, _ = RoomMember.objects.get_or_create(room=room, user=user)
    return member


@transaction.atomic
def room_member_remove(*, room: Room, user: Any, by: Any) -> None:
    """Take ``user`` out of the room's members: themselves leaving, or a project admin removing them.

    Their open sockets drop the room at once if it is private (chat.signals).
    The last member of a private room cannot leave it: nobody could read it
    or add anyone again. Nobody leaves or is removed from a DM: its people
    are what names it (chat.services.dms).
    """
    _refuse_dm(room)
    if by.pk != user.pk:
        by_role = Membership.objects.filter(project_id=room.project_id, user=by).values_list("role", flat=True).first()
        if by_role not in (Membership.Role.OWNER, Membership.Role.ADMIN):
            raise Forbidden("Only project admins can remove someone else from a room.")
    member = RoomMember.objects.select_for_update().filter(room=room, user=user).first()
    if member is None:
        raise NotFound("Not a member of this room.", code="not_a_member")
    if room.is_private and not RoomMember.objects.filter(room=room).exclude(pk=member.pk).exists():
        raise Conflict("The last member of a private room cannot leave it.", code="last_member")
    member.delete()


def _refuse_dm(room: Room) -> None:
    if room.kind == Room.Kind.DM:
        raise Forbidden(
            "The people of a direct message are fixed: start a new conversation with the people you want.",
            code="dm_members_fixed",
        )
