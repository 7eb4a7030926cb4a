"""Every non-trivial read of rooms and messages."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from chatsite.errors import NotFound
from projects.models import Membership, Project
from chat.models import ApiToken, Message, Room, RoomMember

User = get_user_model()

# Columns a message needs on the wire; history queries load nothing else.
MESSAGE_FIELDS = (
    "id",
    "room_id",
    "seq",
    "body",
    "created_at",
    "edited_at",
    "deleted_at",
    "client_id",
    "author__id",
    "author__username",
    "author__first_name",
    "author__last_name",
)


def _messages() -> QuerySet[Message]:
    return Message.objects.select_related("author").only(*MESSAGE_FIELDS)


def _readable_rooms(user: Any) -> QuerySet[Room]:
    """Rooms the user may read, each annotated with ``my_role`` in its project."""
    role = Membership.objects.filter(project=OuterRef("project_id"), user=user).values("role")[:1]
    in_room = RoomMember.objects.filter(room=OuterRef("pk"), user=user)
    return (
        Room.objects.annotate(my_role=Subquery(role))
        .filter(my_role__isnull=False)
        .filter(Q(is_private=False) | Exists(in_room))
    )


def room_get_for_user(*, user: Any, room_id: int) -> Room:
    """The room ``room_id`` with its project, if ``user`` may read it (and so post to it).

    Raises NotFound when the room does not exist *or* the user may not read it:
    a guessed id never reveals that a room exists. The result carries
    ``my_role`` (the user's role in the project).
    """
    if not user.is_authenticated:
        raise NotFound("Room not found.")
    room = _readable_rooms(user).select_related("project").filter(pk=room_id).first()
    if room is None:
        raise NotFound("Room not found.")
    return room


def room_get_by_slug_for_user(*, user: Any, project: Project, slug: str) -> Room:
    if not user.is_authenticated:
        raise NotFound("Room not found.")
    room = _readable_rooms(user).select_related("project").filter(project=project, slug=slug).first()
    if room is None:
        raise NotFound("Room not found.")
    return room


def rooms_for_user(*, user: Any, project: Project) -> list[Room]:
    """Rooms of ``project`` the user may read, by name, each with ``unread``.

    ``unread`` counts live messages by others newer than the user's read marker.
    One query whatever the number of rooms.
    """
    last_read = RoomMember.objects.filter(room=OuterRef("pk"), user=user).values("last_read_message_id")[:1]
    unread = (
        Message.objects.filter(
            room=OuterRef("pk"),
            id__gt=Coalesce(OuterRef("last_read"), Value(0)),
            deleted_at__isnull=True,
        )
        .exclude(author=user)
        .order_by()
        .values("room")
        .annotate(c=Count("id"))
        .values("c")
    )
    return list(
        _readable_rooms(user)
        .filter(project=project)
        .annotate(last_read=Subquery(last_read), unread=Coalesce(Subquery(unread, output_field=IntegerField()), 0))
        .order_by("name", "id")
    )


def room_history(*, room: Room, before: int | None = None, after: int | None = None, limit: int) -> list[Message]:
    """A page of a room's messages in increasing id order.

    With ``after``: the ``limit`` oldest messages newer than ``after`` (catch-up).
    Otherwise the ``limit`` newest messages older than ``before`` (or the newest).
    Deleted messages are included as tombstones so cursors never skip.
    """
    qs = _messages().filter(room=room)
    if after is not None:
        return list(qs.filter(id__gt=after).order_by("id")[:limit])
    if before is not None:
        qs = qs.filter(id__lt=before)
    page = list(qs.order_by("-id")[:limit])
    page.reverse()
    return page


def messages_after(*, room_id: int, after_id: int, limit: int) -> list[Message]:
    """Messages of a room with id > ``after_id``, oldest first (resume)."""
    return list(_messages().filter(room_id=room_id, id__gt=after_id).order_by("id")[:limit])


def messages_seq_between(*, room_id: int, after_seq: int, before_seq: int) -> list[Message]:
    """Messages of a room with ``after_seq < seq < before_seq`` (gap fill), by seq."""
    return list(
        _messages().filter(room_id=room_id, seq__gt=after_seq, seq__lt=before_seq).order_by("seq")
    )


def room_last_seq(*, room_id: int) -> int:
    return Room.objects.filter(pk=room_id).values_list("last_message_seq", flat=True).first() or 0


def message_get_for_user(*, user: Any, message_id: int) -> Message:
    """A message in a room the user may read; NotFound otherwise. Carries ``room`` with ``my_role``."""
    message = _messages().filter(pk=message_id).first()
    if message is None:
        raise NotFound("Message not found.")
    try:
        message.room = room_get_for_user(user=user, room_id=message.room_id)
    except NotFound:
        raise NotFound("Message not found.") from None
    return message


def room_members(*, room: Room) -> QuerySet[Any]:
    """Users who can read ``room``: project members, or the room's members if private."""
    qs = User.objects.filter(memberships__project_id=room.project_id)
    if room.is_private:
        qs = qs.filter(room_memberships__room=room)
    return qs.only("id", "username", "first_name", "last_name").order_by("username")


def user_for_token(*, raw_key: str) -> Any | None:
    """The active user owning the bearer token ``raw_key``, or None."""
    if not raw_key:
        return None
    key_hash = hashlib.sha256(raw_key.encode()).hexdigest()
    token = ApiToken.objects.select_related("user").filter(key_hash=key_hash).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


def page_limit(limit: int | None) -> int:
    """Clamp a requested page size to [1, CHAT_PAGE_SIZE_MAX]; None means the default."""
    if limit is None:
        return settings.CHAT_PAGE_SIZE
    return max(1, min(int(limit), settings.CHAT_PAGE_SIZE_MAX))


MENTION_RE = re.compile(r"(?<![\w@])@([\w.@+-]{1,150})")


def message_with_room(*, message_id: int) -> Message | None:
    return _messages().select_related("room").filter(pk=message_id).first()


def mentioned_readers(*, room: Room, body: str) -> list[Any]:
    """Users named as ``@username`` in ``body`` who can read ``room`` (at most 50)."""
    names = {m.rstrip(".") for m in MENTION_RE.findall(body)}
    if not names:
        return []
    return list(room_members(room=room).filter(username__in=list(names)[:50]))
