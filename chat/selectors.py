"""Every non-trivial read of rooms and messages."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce

from chat.models import ApiToken, Message, ReadMarker, Room, RoomMember
from chat.serialization import message_dict
from chatsite import env
from chatsite.errors import NotFound
from chatsite.users import USER_DISPLAY_FIELDS, user_dict
from perf import cache as perf_cache
from perf.cache import cache_key
from projects.models import Membership, Project

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
    found = perf_cache.get_many_counted(_room_access_keys(user.id, room_id))
    room = _room_access_resolve(user=user, room_id=room_id, found=found)
    if memo is not None:
        memo[memo_key] = room
    return room


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


def rooms_unread_states(*, room_ids: list[int]) -> dict[int, UnreadState]:
    """Each room's unread state (the key of its current unread tail), read now."""
    rows = Room.objects.filter(id__in=room_ids).values_list("id", "last_message_seq", "messages_deleted")
    return {rid: (seq, deleted) for rid, seq, deleted in rows}


def rooms_recently_active(*, limit: int) -> list[int]:
    """Ids of the ``limit`` rooms with the newest messages, newest first; rooms without any last."""
    rooms = Room.objects.order_by(F("last_message_at").desc(nulls_last=True), "-id")
    return list(rooms.values_list("id", flat=True)[:limit])


def room_cache_key(room_id: int) -> str:
    return cache_key("room", room_id)


def room_access_key(user_id: int, room_id: int) -> str:
    return cache_key("room_access", user_id, room_id)


def room_access_pattern(user_id: int) -> str:
    """Every room-access entry of one user."""
    return cache_key("room_access", user_id, "*")


def room_access_room_pattern(room_id: int) -> str:
    """Every user's access entry for one room."""
    return cache_key("room_access", "*", room_id)


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


# Unread counts stop here; clients show "99+".
UNREAD_CAP = 100


def rooms_for_user(*, user: Any, project: Project) -> list[Room]:
    """Rooms of ``project`` the user may read, by name, each with ``unread`` and ``last_read``.

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
            .values("id", "slug", "name", "topic", "is_private", "my_role", "last_message_seq", "last_message_at",
                    "last_read", "unread")
        )  # fmt: skip
        return [_listed_room(row, row, project, row["unread"]) for row in rows]

    def readable() -> list[dict[str, Any]]:
        rows = list(
            _readable_rooms(user)
            .filter(project=project)
            .order_by("name", "id")
            .values("id", "slug", "name", "topic", "is_private", "my_role")
        )
        # The same query answers room_get_for_user for each of these rooms:
        # keep the user's access to them (family ``access``), so opening one
        # after the list asks the database nothing more. Invalidated with the
        # list, by the same writes.
        perf_cache.store_many({room_access_key(user.id, r["id"]): r["my_role"] for r in rows}, family="access")
        return rows

    rows = perf_cache.cached("room_lists", room_list_key(project.id, user.id), readable)
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
    )  # fmt: skip
    room.my_role = row["my_role"]
    room.last_read = live["last_read"]
    room.unread = unread
    return room


# Live messages by others after a marker in one room, counted up to a cap: at
# most UNREAD_CAP entries of message_room_id_idx (index-only). {room} and
# {arg} (the marker) are SQL; the placeholders take the user id and the cap.
_UNREAD_COUNT = (
    "SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE room_id = {room} AND id > {arg} "
    "AND deleted_at IS NULL AND author_id <> %s LIMIT %s) capped"
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


def room_list_key(project_id: int, user_id: int) -> str:
    return cache_key("room_list", project_id, user_id)


def room_list_pattern(project_id: int) -> str:
    return cache_key("room_list", project_id, "*")


# A room's unread state: (last_message_seq, messages_deleted). Every unread
# entry of the room is named by it, so a new message (the seq) or a delete
# (the count) moves readers to new entries, and the old ones are never read
# again (their TTL removes them): no writer has to find and drop them.
UnreadState = tuple[int, int]


def unread_key(room_id: int, user_id: int, state: UnreadState, last_read: int) -> str:
    return cache_key("unread", room_id, user_id, *state, last_read)


def unread_tail_key(room_id: int, state: UnreadState) -> str:
    return cache_key("unread", room_id, "tail", *state)


# Newest messages per room kept for unread counts (rooms_for_user). Longer
# than the cap, so a reader who wrote a few of the room's last messages (or
# saw a few deleted) still reaches the cap inside the tail: with a tail of
# exactly UNREAD_CAP, each of them needed a count of their own, read again
# after every new message of the room (docs/PERFORMANCE.md).
UNREAD_TAIL = UNREAD_CAP + UNREAD_CAP // 4
# A tail under a given state is right for good (an edit changes no count), and
# the writer of the next message replaces it (services._advance_unread_tail):
# only the current tail of each room stays, so it may live as long as the other
# exact entries.
UNREAD_TAIL_TTL = env.CACHE_TTL_ENTRIES


def room_unread_tails(*, states: dict[int, UnreadState]) -> dict[int, list[tuple[int, int, bool]]]:
    """Each room's current unread tail (see _room_tails), by room id; ``states``: each room's unread state.

    Family ``unread``, one entry per room under its state, shared by all
    its readers: a new message or a delete moves the room to a new key.
    """
    return perf_cache.cached_many(
        "unread", {rid: unread_tail_key(rid, state) for rid, state in states.items()}, _room_tails, ttl=UNREAD_TAIL_TTL
    )


def _room_tails(room_ids: list[int]) -> dict[int, list[tuple[int, int, bool]]]:
    """The newest UNREAD_TAIL messages of each room, newest first, as (id, author id, deleted).

    Shared by every reader of the room, so one cache entry per room and
    message (the key embeds the room's last seq) serves all its members'
    unread counts. One statement, index-only on message_room_id_idx.
    """
    rows = _per_room(
        room_ids,
        [0] * len(room_ids),
        "SELECT id, author_id, deleted_at IS NOT NULL FROM {table} WHERE room_id = {room} ORDER BY id DESC LIMIT %s",
        [UNREAD_TAIL],
    )
    tails: dict[int, list[tuple[int, int, bool]]] = {rid: [] for rid in room_ids}
    for rid, mid, author, deleted in rows:
        tails[int(rid)].append((int(mid), int(author), bool(deleted)))
    for tail in tails.values():
        tail.sort(reverse=True)
    return tails


def unread_tail_with(tail: list[tuple[int, int, bool]], *, message_id: int, author_id: int) -> list[tuple[int, int, bool]]:
    """``tail`` with one more live message, newest first and at most UNREAD_TAIL long.

    How a writer moves a room's cached tail to its new seq (write-through):
    the tail under seq ``n - 1`` holds every message up to it (a reader may
    have seen later ones too), so with message ``n`` it is the tail under ``n``.
    """
    merged = {entry[0]: entry for entry in tail}
    merged.setdefault(message_id, (message_id, author_id, False))
    return sorted(merged.values(), reverse=True)[:UNREAD_TAIL]


def _per_room(room_ids: list[int], args: list[int], sql: str, params: list[Any]) -> list[tuple]:
    """One statement: the subquery ``sql`` once per room, each row prefixed with its room id.

    ``sql`` names the messages table ``{table}``, the room ``{room}`` and the
    room's own integer argument ``{arg}`` (``args[i]`` for ``room_ids[i]``);
    ``params`` fill its ``%s`` placeholders, the same for every room.

    On PostgreSQL the rooms arrive as two arrays and the subquery runs in a
    LATERAL join: one small plan, whatever the number of rooms. A UNION ALL
    of one branch per room (what other databases get) costs PostgreSQL more
    to plan than to run: 3.8 ms against 0.6 ms for 25 rooms of capped
    counts, measured on the 1,000,000-message data set (docs/PERFORMANCE.md).
    """
    if not room_ids:
        return []
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT t.room_id, x.* FROM unnest(%s::bigint[], %s::bigint[]) AS t(room_id, arg) "
                f"CROSS JOIN LATERAL ({sql.format(table=table, room='t.room_id', arg='t.arg')}) x",
                [list(room_ids), list(args), *params],
            )
        else:
            branches = [
                f"SELECT {int(rid)}, x.* FROM ({sql.format(table=table, room=int(rid), arg=int(arg))}) x"
                for rid, arg in zip(room_ids, args)
            ]
            cursor.execute(" UNION ALL ".join(branches), list(params) * len(branches))
        return cursor.fetchall()


def _unread_from_tail(tail: list[tuple[int, int, bool]], *, last_read: int, user_id: int) -> int | None:
    """Live messages by others newer than ``last_read``, capped at UNREAD_CAP; None when the tail cannot tell.

    It cannot tell when the marker is older than the whole tail, the tail is
    full (older messages exist) and fewer than the cap counted in it.
    """
    counted = 0
    for message_id, author_id, deleted in tail:
        if message_id <= last_read:
            return counted
        if not deleted and author_id != user_id:
            counted += 1
            if counted >= UNREAD_CAP:
                return UNREAD_CAP
    return counted if len(tail) < UNREAD_TAIL else None


def room_history(*, room: Room, before: int | None = None, after: int | None = None, limit: int) -> list[Message]:
    """A page of a room's messages in increasing id order.

    With ``after``: the ``limit`` oldest messages newer than ``after`` (catch-up).
    Otherwise the ``limit`` newest messages older than ``before`` (or the newest).
    Deleted messages are included as tombstones so cursors never skip.

    The page's ids are chosen first, in a subquery that can only be answered
    from ``message_room_id_idx``: written as one ORDER BY id … LIMIT over the
    joined rows, PostgreSQL may walk the primary key backwards instead, which
    is fast for a busy room and very slow for one that went quiet long ago.
    """
    ids = Message.objects.filter(room=room)
    if after is not None:
        ids = ids.filter(id__gt=after).order_by("id")
    else:
        if before is not None:
            ids = ids.filter(id__lt=before)
        ids = ids.order_by("-id")
    return list(_messages().filter(id__in=ids.values("id")[:limit]).order_by("id"))


def rooms_newest_message_ids(*, room_ids: list[int], count: int) -> list[int]:
    """The ids of the ``count`` newest messages (tombstones included) of each room, in one statement.

    Index-only on message_room_id_idx, one LATERAL branch per room (_per_room).
    """
    rows = _per_room(room_ids, [0] * len(room_ids), "SELECT id FROM {table} WHERE room_id = {room} ORDER BY id DESC LIMIT %s", [count])
    return [int(mid) for _, mid in rows]


def messages_changed_since(*, room_ids: list[int], from_id: int, since: Any) -> list[tuple[int, int]]:
    """(id, room id) of the messages of ``room_ids`` from id ``from_id`` on, edited or deleted at ``since`` or later.

    A range of message_room_id_idx per room: a few ms for thousands of
    messages, where a list of their ids costs PostgreSQL twice that.
    """
    changed = Message.objects.filter(room_id__in=room_ids, id__gte=from_id)
    return list(changed.filter(Q(edited_at__gte=since) | Q(deleted_at__gte=since)).values_list("id", "room_id"))


def message_cache_key(message_id: int) -> str:
    return cache_key("message", message_id)


# Older history pages a cache miss fills beyond the page asked for (room_history_dicts),
# for the newest page as for an older one.
HISTORY_READ_AHEAD_PAGES = 2


def message_dicts(*, ids: list[int], with_authors: bool = True, read_ahead: list[int] = ()) -> dict[int, dict[str, Any]]:
    """Serialized messages by id: two cache round trips, the database only for misses.

    Message bodies (family ``messages``) are cached without the author's
    display data, which comes from the profiles cache (family ``profiles``),
    so a profile change never leaves stale names in cached messages.
    message_create writes the new message's entry after commit;
    message_edit and message_delete drop it after commit.

    ``read_ahead``: ids likely asked for next (the older pages of a scroll).
    When ``ids`` miss, the same query loads these too and caches them, so a
    reader scrolling back pays one larger query per few pages instead of one
    per page. They are not counted as lookups and not returned.
    """

    def fill(missing: list[int]) -> dict[int, dict[str, Any]]:
        wanted = set(missing)
        filled, extra = {}, {}
        for m in _messages().filter(id__in=[*missing, *read_ahead]):
            (filled if m.id in wanted else extra)[m.id] = message_cache_entry(m)
        if extra:
            perf_cache.store_many({message_cache_key(i): e for i, e in extra.items()}, family="messages")
        return filled

    entries = perf_cache.cached_many("messages", {i: message_cache_key(i) for i in ids}, fill)
    if not with_authors:
        return entries
    profiles = user_profiles(ids=list({e["author"]["id"] for e in entries.values()}))
    return {i: {**e, "author": profiles.get(e["author"]["id"], e["author"])} for i, e in entries.items()}


def message_cache_entry(message: Message) -> dict[str, Any]:
    """What the message cache stores: the wire dict with the author reduced to its id."""
    entry = message_dict(message)
    entry["author"] = {"id": message.author_id}
    return entry


def user_profiles(*, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Display data of several users at once (family ``profiles``)."""

    def fill(missing: list[int]) -> dict[int, dict[str, Any]]:
        return {u.id: user_dict(u) for u in User.objects.filter(pk__in=missing).only("id", *USER_DISPLAY_FIELDS)}

    return perf_cache.cached_many("profiles", {i: profile_key(i) for i in ids}, fill)


def room_history_dicts(
    *,
    room: Room,
    before: int | None = None,
    after: int | None = None,
    limit: int,
    fields: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """room_history as serialized dicts: an index-only id query plus the message cache.

    ``fields`` (API field selection) narrows the work: ids alone need no
    cache at all, and without ``author`` the profiles are not looked up.
    Cache misses still store whole entries, so the cache stays complete.
    """
    ids = Message.objects.filter(room=room)
    ahead: list[int] = []
    if after is not None:
        page = list(ids.filter(id__gt=after).order_by("id").values_list("id", flat=True)[:limit])
    else:
        if before is not None:
            ids = ids.filter(id__lt=before)
        # Opening a room and scrolling back: the ids of the next older pages come
        # with this page's (the same index range, a little longer), so a cache
        # miss can fill them too. A reader who opens a room often scrolls back.
        span = limit * (1 + HISTORY_READ_AHEAD_PAGES)
        newest_first = list(ids.order_by("-id").values_list("id", flat=True)[:span])
        page, ahead = newest_first[:limit], newest_first[limit:]
        page.reverse()
    if fields is not None and set(fields) <= {"id"}:
        return [{"id": i} for i in page]
    found = message_dicts(ids=page, with_authors=fields is None or "author" in fields, read_ahead=ahead)
    return [found[i] for i in page if i in found]


def history_page_key(room_id: int, before: int | None, limit: int) -> str:
    # "page_br": pages are stored encoded (perf.compression.precompress);
    # entries of the plain format, under "page", are never read.
    return cache_key("page_br", room_id, "newest" if before is None else before, limit)


def room_stamp_key(room_id: int) -> str:
    """Changes (is dropped) whenever a message of the room is edited or deleted: every page may show it."""
    return cache_key("stamp", "room", room_id)


def room_tail_stamp_key(room_id: int) -> str:
    """Changes (is dropped) whenever a message is added to the room: only the newest page shows it.

    Ids within a room commit in order (services.message_create holds the
    room's row lock from drawing the id to the commit), so a new message is
    newer than every page already read.
    """
    return cache_key("stamp", "tail", room_id)


def profiles_stamp_key() -> str:
    """Changes (is dropped) whenever a user's display data changes or a user is deleted."""
    return cache_key("stamp", "profiles")


def room_history_page(*, room: Room, before: int | None, limit: int, render: Any) -> Any:
    """A rendered page of history (``render()``'s result, encoded), cached while what it shows is unchanged.

    The newest page and the older pages (``before``) of a room, family
    ``pages``: one cache round trip on a hit, instead of the id query and
    the message and profile lookups. An edit or a delete in the room drops
    the room's stamp, a new message its tail stamp (which only the newest
    page carries), a display-data change the profiles stamp
    (perf.cache.cached_stamped), so a stored page is never served stale.
    """
    stamps = history_page_stamps(room.id, before)
    return perf_cache.cached_stamped("pages", history_page_key(room.id, before, limit), stamps, render)


def history_page_stamps(room_id: int, before: int | None) -> list[str]:
    """The stamps a cached history page is valid under (see room_history_page)."""
    stamps = [room_stamp_key(room_id), profiles_stamp_key()]
    if before is None:
        stamps.append(room_tail_stamp_key(room_id))
    return stamps


def messages_after(*, room_id: int, after_id: int, limit: int) -> list[Message]:
    """Messages of a room with id > ``after_id``, oldest first (resume). Ids first, as in room_history."""
    ids = Message.objects.filter(room_id=room_id, id__gt=after_id).order_by("id").values("id")[:limit]
    return list(_messages().filter(id__in=ids).order_by("id"))


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
    return qs.only("id", *USER_DISPLAY_FIELDS).order_by("username")


def room_member_get(*, room: Room, user_id: int) -> Any:
    """A member of ``room`` (the user), or NotFound."""
    user = User.objects.filter(pk=user_id, room_memberships__room=room).first()
    if user is None:
        raise NotFound("Not a member of this room.", code="not_a_member")
    return user


def profile_key(user_id: int) -> str:
    return cache_key("profile", user_id)


def user_for_token(*, raw_key: str) -> Any | None:
    """The active user owning the bearer token ``raw_key``, or None.

    Cached by token hash (family ``tokens``: the user, or a miss marker);
    dropped when the token is deleted or its user is saved (chat.signals).
    """
    if not raw_key:
        return None
    key_hash = ApiToken.hash_key(raw_key)

    def fill() -> Any | None:
        token = (
            ApiToken.objects.select_related("user")
            .only("id", "user__id", "user__username", "user__first_name", "user__last_name", "user__is_active", "user__is_staff", "user__is_superuser")
            .filter(key_hash=key_hash)
            .first()
        )
        return token.user if token is not None and token.user.is_active else None

    return perf_cache.cached("tokens", token_cache_key(key_hash), fill)


def token_cache_key(key_hash: str) -> str:
    return cache_key("token", key_hash)


# Largest id a bigint holds: a larger one names no token (and PostgreSQL would refuse it).
TOKEN_ID_MAX = 2**63 - 1


def tokens_for_user(*, user: Any, before: int | None = None, limit: int) -> list[ApiToken]:
    """The user's own API tokens, newest first: up to ``limit`` with an id below ``before``.

    Never cached; the key hash is not loaded.
    """
    tokens = ApiToken.objects.filter(user=user).only("id", "user_id", "name", "created_at", "last_used_at")
    if before is not None and before <= TOKEN_ID_MAX:  # every id is below a larger one
        tokens = tokens.filter(id__lt=before)
    return list(tokens.order_by("-id")[:limit])


def token_get_for_user(*, user: Any, token_id: int) -> ApiToken:
    """One of the user's own tokens; NotFound for an id that is missing or anyone else's (the same answer)."""
    token = None
    if 0 < token_id <= TOKEN_ID_MAX:
        token = ApiToken.objects.filter(user=user, id=token_id).first()
    if token is None:
        raise NotFound("Token not found.")
    return token


def token_get_by_key_for_user(*, user: Any, raw_key: str) -> ApiToken | None:
    """The user's own token whose raw key is ``raw_key``, or None."""
    if not raw_key:
        return None
    return ApiToken.objects.filter(user=user, key_hash=ApiToken.hash_key(raw_key)).first()


MENTION_RE = re.compile(r"(?<![\w@])@([\w.@+-]{1,150})")


def message_with_room(*, message_id: int) -> Message | None:
    return _messages().select_related("room").filter(pk=message_id).first()


def mentioned_readers(*, room: Room, body: str) -> list[Any]:
    """Users named as ``@username`` in ``body`` who can read ``room`` (at most 50)."""
    names = {m.rstrip(".") for m in MENTION_RE.findall(body)}
    if not names:
        return []
    return list(room_members(room=room).filter(username__in=list(names)[:50]))
