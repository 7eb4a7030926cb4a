"""Reads of rooms: access to one room, room lists with unread counts, room members.

A room the user may not read is NotFound, the same answer as a room that
does not exist: a guessed id never reveals that a room exists.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce

from chat.cache_keys import UnreadState, room_access_key, room_cache_key, room_list_key, unread_key
from chat.models import Message, ReadMarker, Room, RoomMember
from chat.selectors.unread import UNREAD_CAP, _per_room, _unread_from_tail, room_unread_tails
from chatsite.errors import NotFound
from chatsite.users import USER_DISPLAY_FIELDS
from perf import cache as perf_cache
from perf.replica import may_lag
from projects.models import Membership, Project

User = get_user_model()

# Room id -> is it a DM, as this process has learned it. A room's kind is set
# when it is created and room ids are never reused, so an answer never goes stale.
_DM_ROOMS: dict[int, bool] = {}
_DM_ROOMS_MAX = 100_000


def _dm_learn(room: Room) -> None:
    """Keep whether ``room`` (read from the database or the cache) is a DM, for rooms_dm_ids."""
    if len(_DM_ROOMS) >= _DM_ROOMS_MAX:
        _DM_ROOMS.clear()  # a bound on memory; what is dropped is learned again
    _DM_ROOMS[room.id] = room.kind == Room.Kind.DM


def _readable_rooms(user: Any) -> QuerySet[Room]:
    """Rooms the user may read, each annotated with ``my_role`` in its project."""
    role = Membership.objects.filter(project=OuterRef("project_id"), user=user).values("role")[:1]
    in_room = RoomMember.objects.filter(room=OuterRef("pk"), user=user)
    return (
        Room.objects.annotate(my_role=Subquery(role))
        .filter(my_role__isnull=False)
        .filter(Q(is_private=False) | Exists(in_room))
    )


def readable_room_ids(user: Any) -> QuerySet[Room]:
    """The ids of the rooms the user may read, as a subquery for another query's filter (the access rule above)."""
    return _readable_rooms(user).values("id")


def room_get_for_user(*, user: Any, room_id: int) -> Room:
    """The room ``room_id`` with its project, if ``user`` may read it (and so post to it).

    Raises NotFound when the room does not exist *or* the user may not read it:
    a guessed id never reveals that a room exists. The result carries
    ``my_role`` (the user's role in the project).

    Cached: the room with its project (family ``rooms``, without the
    fast-changing ``last_message_*`` columns, which load lazily if read) and
    the user's access to it (family ``access``: the role, or "" for none).
    Memoized per request. Invalidated (chat.signals) when the project, a
    membership or a room membership changes, whoever changes it.
    """
    if not user.is_authenticated:
        raise NotFound("Room not found.")
    memo = perf_cache.request_memo()
    memo_key = ("room", room_id)
    if memo is not None and memo_key in memo:
        return memo[memo_key]
    room = rooms_get_for_users([(user, room_id)])[0]
    if isinstance(room, NotFound):
        raise room
    if memo is not None:
        memo[memo_key] = room
    return room


def rooms_get_for_users(requests: list[tuple[Any, int]]) -> list[Room | NotFound]:
    """:func:`room_get_for_user` for many (user, room id) pairs at once: one cache round trip for all.

    Each answer is the room with its own ``my_role``, or the NotFound that
    refuses it. A reconnect storm's subscribes come here together (chat.resuming).
    """
    keys: dict[str, str] = {}
    for user, room_id in requests:
        if user.is_authenticated:
            keys.update(_room_access_keys(user.id, room_id))
    found = perf_cache.get_many_counted(keys) if keys else {}
    answers: list[Room | NotFound] = []
    answered: set[str] = set()
    for user, room_id in requests:
        if not user.is_authenticated:
            answers.append(NotFound("Room not found."))
            continue
        room_key = room_cache_key(room_id)
        if room_key in answered:
            # Another answer holds this room object: this one gets its own, for its own role.
            found[room_key] = copy.copy(found[room_key])
        try:
            room = _room_access_resolve(user=user, room_id=room_id, found=found)
        except NotFound as exc:
            answers.append(exc)
            continue
        # Fills land in the group's view too: the next request for this room reads them.
        found[room_key] = room
        _dm_learn(room)  # a socket's later sends to it ask nothing more
        answered.add(room_key)
        found.setdefault(room_access_key(user.id, room_id), room.my_role)
        answers.append(room)
    return answers


def _room_access_keys(user_id: int, room_id: int) -> dict[str, str]:
    return {room_cache_key(room_id): "rooms", room_access_key(user_id, room_id): "access"}


def _room_access_resolve(*, user: Any, room_id: int, found: dict[str, Any]) -> Room:
    """The room with ``my_role`` from the cache entries in ``found``; fills (database, cache) what is missing."""
    room_key, access_key = room_cache_key(room_id), room_access_key(user.id, room_id)
    room = found.get(room_key)
    if room is None:
        room = _cacheable_rooms().filter(pk=room_id).first()
        perf_cache.store(room_key, room, family="rooms")
    if not isinstance(room, Room):
        raise NotFound("Room not found.")
    role = found.get(access_key)
    if role is None:
        role = _room_role(user=user, room=room)
        perf_cache.store(access_key, role, family="access")
    if not role:
        raise NotFound("Room not found.")
    room.my_role = role
    return room


def _room_role(*, user: Any, room: Room) -> str:
    """The user's project role if they may read ``room``, else ""."""
    role = Membership.objects.filter(project_id=room.project_id, user=user).values_list("role", flat=True).first()
    if role is None:
        return ""
    if room.is_private and not RoomMember.objects.filter(room=room, user=user).exists():
        return ""
    return role


def _cacheable_rooms() -> QuerySet[Room]:
    """Rooms as the ``rooms`` family stores them: with the project, without the fast-changing counters."""
    return Room.objects.select_related("project").defer("last_message_seq", "last_message_at", "messages_deleted")


def rooms_cached(*, room_ids: list[int]) -> dict[int, Room]:
    """Several rooms with their projects, as room_get_for_user caches them (family ``rooms``); no access check."""

    def fill(missing: list[int]) -> dict[int, Room]:
        return {room.id: room for room in _cacheable_rooms().filter(pk__in=missing)}

    found = perf_cache.cached_many("rooms", {rid: room_cache_key(rid) for rid in room_ids}, fill)
    return {rid: room for rid, room in found.items() if isinstance(room, Room)}  # not the "no such room" marker


def rooms_dm_ids(*, rooms: list[Room]) -> set[int]:
    """Which of ``rooms`` are direct-message rooms: the message writer's question for every new message.

    A room read from the database or the cache answers itself. A room known
    by its id only (``Room(id=...)``, the socket's sends) is answered from a
    per-process memo, and rooms it has not seen yet from the ``rooms`` cache
    family (one round trip, a query on a miss). Missing rooms are not DMs.
    """
    answers: dict[int, bool] = {}
    for room in rooms:
        if not room._state.adding and "kind" in room.__dict__:
            _dm_learn(room)
            answers[room.id] = room.kind == Room.Kind.DM
        elif room.id in _DM_ROOMS:
            answers[room.id] = _DM_ROOMS[room.id]
    missing = [room.id for room in rooms if room.id not in answers]
    if missing:
        for found in rooms_cached(room_ids=missing).values():
            _dm_learn(found)
            answers[found.id] = found.kind == Room.Kind.DM
    return {room_id for room_id, is_dm in answers.items() if is_dm}


def rooms_unread_states(*, room_ids: list[int]) -> dict[int, UnreadState]:
    """Each room's unread state (the key of its current unread tail), read now."""
    rows = Room.objects.filter(id__in=room_ids).values_list("id", "last_message_seq", "messages_deleted")
    return {rid: (seq, deleted) for rid, seq, deleted in rows}


def rooms_recently_active(*, limit: int) -> list[int]:
    """Ids of the ``limit`` rooms with the newest messages, newest first; rooms without any last."""
    rooms = Room.objects.order_by(F("last_message_at").desc(nulls_last=True), "-id")
    return list(rooms.values_list("id", flat=True)[:limit])


def rooms_readable(*, user: Any, room_ids: list[int]) -> set[int]:
    """Which of ``room_ids`` the user may read now: one query, never the cache (an open socket checking again)."""
    if not room_ids or not user.is_authenticated:
        return set()
    return set(_readable_rooms(user).filter(id__in=room_ids).values_list("id", flat=True))


def room_get_by_slug_for_user(*, user: Any, project: Project, slug: str) -> Room:
    if not user.is_authenticated:
        raise NotFound("Room not found.")
    room = _readable_rooms(user).select_related("project").filter(project=project, slug=slug).first()
    if room is None:
        raise NotFound("Room not found.")
    return room


@may_lag
def rooms_for_user(
    *, user: Any, project: Project, select: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
) -> list[Room]:
    """Rooms of ``project`` the user may read, by name, each with ``unread`` and ``last_read``.

    ``select`` picks, from the listed rooms (dicts with ``id``, ``name`` and
    ``kind``, by name), the ones to return, in its own order: only those get
    their counters, markers and unread counts read (a page of a long list
    costs the page, not the list).

    Direct messages are among them (``kind`` DM, with their ``dm_key``):
    callers that show rooms and DMs apart split the one list
    (chat.selectors.dms.rooms_split), so both share its queries and caches.

    ``unread`` counts live messages by others newer than the user's read
    marker, up to ``UNREAD_CAP``.

    Cached in two parts. The room list (family ``room_lists``) per user and
    project, invalidated by room_create (the project's lists), room_member_add
    and membership changes (that user's list); filling it also fills the
    user's access to each listed room (family ``access``). Unread counts (family
    ``unread``) come from each room's tail, its newest UNREAD_TAIL messages as
    (id, author, deleted), shared by all its readers under a key that embeds
    the room's unread state (``last_message_seq``, ``messages_deleted``): a
    new message or a delete moves to a fresh key by itself (a new message's
    writer fills that key from the previous one when it is cached:
    unread_tail_with), and each reader's count is computed from the tail and
    their marker. Only when a marker is older than a full tail and the tail
    alone cannot reach the cap does that reader get an exact capped count,
    cached per user, room, state and marker. One cheap query (room counters
    and markers) runs every time.

    With caching off there is nothing to share, and the whole list, markers
    and capped counts included, is one statement.
    """
    last_read = ReadMarker.objects.filter(room=OuterRef("pk"), user=user).values("last_read_message_id")[:1]
    marker = Coalesce(Subquery(last_read), Value(0))
    if not perf_cache.caching_enabled():
        # No cache to share tails or keep the list: one statement, the readable
        # rooms with their counters, the user's markers and capped counts.
        rows = list(
            _readable_rooms(user)
            .filter(project=project)
            .annotate(last_read=marker, unread=_unread_count_sql(user.id))
            .order_by("name", "id")
            .values("id", "slug", "name", "topic", "is_private", "kind", "dm_key", "my_role", "last_message_seq",
                    "last_message_at", "last_read", "unread")
        )  # fmt: skip
        return [_listed_room(row, row, project, row["unread"]) for row in (select(rows) if select else rows)]

    def readable() -> list[dict[str, Any]]:
        rows = list(
            _readable_rooms(user)
            .filter(project=project)
            .order_by("name", "id")
            .values("id", "slug", "name", "topic", "is_private", "kind", "dm_key", "my_role")
        )
        # The same query answers room_get_for_user for each of these rooms:
        # keep the user's access to them (family ``access``), so opening one
        # after the list asks the database nothing more. Invalidated with the
        # list, by the same writes.
        perf_cache.store_many({room_access_key(user.id, r["id"]): r["my_role"] for r in rows}, family="access")
        return rows

    rows = perf_cache.cached("room_lists", room_list_key(project.id, user.id), readable)
    if select is not None:
        rows = select(rows)
    if not rows:
        return []
    live = {
        r["id"]: r
        for r in Room.objects.filter(id__in=[r["id"] for r in rows])
        .annotate(last_read=marker)
        .values("id", "last_message_seq", "messages_deleted", "last_message_at", "last_read")
    }
    present = [r["id"] for r in rows if r["id"] in live]
    states = {rid: (live[rid]["last_message_seq"], live[rid]["messages_deleted"]) for rid in present}
    tails = room_unread_tails(states=states)
    unread: dict[int, int] = {}
    exact: list[int] = []
    for rid in present:
        counted = _unread_from_tail(tails.get(rid, []), last_read=live[rid]["last_read"], user_id=user.id)
        if counted is None:
            exact.append(rid)
        else:
            unread[rid] = counted

    def count(missing: list[int]) -> dict[int, int]:
        # One capped count per room: a room the user never opened costs at
        # most UNREAD_CAP index entries, not its whole history.
        rows = _per_room(missing, [live[rid]["last_read"] for rid in missing], _UNREAD_COUNT, [user.id, UNREAD_CAP])
        return {int(rid): int(n) for rid, n in rows}

    if exact:
        keys = {rid: unread_key(rid, user.id, states[rid], live[rid]["last_read"]) for rid in exact}
        unread.update(perf_cache.cached_many("unread", keys, count))
    return [_listed_room(row, live[row["id"]], project, unread.get(row["id"], 0)) for row in rows if row["id"] in live]


def _listed_room(row: dict[str, Any], live: dict[str, Any], project: Project, unread: int) -> Room:
    room = Room(
        id=row["id"], project=project, slug=row["slug"], name=row["name"], topic=row["topic"],
        is_private=row["is_private"], last_message_seq=live["last_message_seq"], last_message_at=live["last_message_at"],
        # Lists cached before rooms had a kind hold rooms only.
        kind=row.get("kind", Room.Kind.ROOM), dm_key=row.get("dm_key"),
    )  # fmt: skip
    room.my_role = row["my_role"]
    room.last_read = live["last_read"]
    room.unread = unread
    return room


# Live messages by others after a marker in one room, counted up to a cap: at
# most UNREAD_CAP entries of message_room_main_idx (index-only; replies are not counted). {room} and
# {arg} (the marker) are SQL; the placeholders take the user id and the cap.
_UNREAD_COUNT = (
    "SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE room_id = {room} AND id > {arg} "
    "AND deleted_at IS NULL AND author_id <> %s AND thread_root_id IS NULL LIMIT %s) capped"
)


def _unread_count_sql(user_id: int) -> RawSQL:
    """_UNREAD_COUNT as a column of a query on rooms, with the user's marker of each room."""
    qn = connection.ops.quote_name
    room = f"{qn(Room._meta.db_table)}.{qn('id')}"
    marker = (
        f"COALESCE((SELECT {qn('last_read_message_id')} FROM {qn(ReadMarker._meta.db_table)} "
        f"WHERE {qn('room_id')} = {room} AND {qn('user_id')} = %s), 0)"
    )
    sql = _UNREAD_COUNT.format(table=qn(Message._meta.db_table), room=room, arg=marker)
    return RawSQL(sql, [user_id, user_id, UNREAD_CAP], output_field=IntegerField())


def room_members(*, room: Room) -> QuerySet[Any]:
    """Users who can read ``room``: project members, or the room's members if private."""
    qs = User.objects.filter(memberships__project_id=room.project_id)
    if room.is_private:
        qs = qs.filter(room_memberships__room=room)
    return qs.only("id", *USER_DISPLAY_FIELDS).order_by("username")


def room_member_get(*, room: Room, user_id: int) -> Any:
    """A member of ``room`` (the user), or NotFound."""
    user = User.objects.filter(pk=user_id, room_memberships__room=room).first()
    if user is None:
        raise NotFound("Not a member of this room.", code="not_a_member")
    return user
