"""Subscribes with resume, read in groups: what a reconnect storm costs is per group, not per socket.

A ``subscribe`` (with ``last_seq`` or ``last_id`` after a reconnect) needs
the user's access to the room, the subscribe rate limit, the room's counter
and the events the socket missed (chat.selectors.room_events: messages and
changes, in seq order). Subscribes that arrive together go to one database
thread together (chat.batching): one cache round trip for every access, one
rate-limit round trip at most, one query for every counter and a few for
every backlog, however many sockets came back at once. Sockets of one room
that saw the same last event share one read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.batching import ThreadBatcher, batcher
from chat.selectors import history as history_selectors
from chat.selectors import room_events
from chat.selectors import rooms as room_selectors
from chatsite import ratelimit
from chatsite.errors import ChatError


@dataclass
class Resume:
    """One subscribe: ``last_seq`` is the room event the socket has seen last; for clients that only
    know messages, ``last_id`` is the newest message it has (both None: no backlog wanted).

    More than ``cap`` missed events, or more than ``budget`` bytes of them,
    is an overflow: the client reloads history over HTTP instead.
    """

    user: Any
    room_id: int
    last_id: int | None
    cap: int
    budget: int
    last_seq: int | None = None


@dataclass
class Resumed:
    project_id: int
    cursor: int  # the seq the socket's live events continue from
    frames: list[str]  # the missed events' frames, oldest first
    overflowed: bool


def resume_group(requests: list[Resume]) -> list[Resumed | ChatError]:
    """Access, rate limit, counter and backlog of each subscribe (in a database thread).

    Called after the sockets joined their rooms' groups. The counters are read
    *before* the missed events, so every event is either in the backlog or
    arrives later as a live event with a higher seq; live duplicates are
    dropped by seq. A ``last_id`` stands for the seq of that message: what
    came after it is replayed, changes the client may have seen live included
    (they carry the state as it is now, so a second copy changes nothing).
    """
    rooms = room_selectors.rooms_get_for_users([(r.user, r.room_id) for r in requests])
    answers: list[Resumed | ChatError | None] = [None] * len(requests)
    readable: list[int] = []
    for i, room in enumerate(rooms):
        if isinstance(room, ChatError):
            answers[i] = room
        else:
            readable.append(i)
    live: list[int] = []
    # One rate-limit round trip at most for the group: a storm's users are new to the process's counters.
    for i, refusal in zip(readable, ratelimit.hit_many("subscribe", [requests[i].user.pk for i in readable])):
        if refusal is not None:
            answers[i] = refusal
        else:
            live.append(i)
    seqs = history_selectors.rooms_last_seqs(room_ids=[requests[i].room_id for i in live])
    wanted: dict[int, tuple[str, int, int]] = {}
    for i in live:
        request = requests[i]
        if request.last_seq is not None:
            wanted[i] = ("seq", request.room_id, request.last_seq)
        elif request.last_id is not None:
            wanted[i] = ("id", request.room_id, request.last_id)
    cap = max((requests[i].cap for i in live), default=0)
    missed = room_events.room_events_after_many(
        after_seq=[key[1:] for key in wanted.values() if key[0] == "seq"],
        after_id=[key[1:] for key in wanted.values() if key[0] == "id"],
        limit=cap,
    )
    for i in live:
        request, project_id = requests[i], rooms[i].project_id  # type: ignore[union-attr]
        last_seq = seqs.get(request.room_id, 0)
        if i not in wanted:
            answers[i] = Resumed(project_id, last_seq, [], False)
            continue
        backlog = missed[wanted[i]]
        if backlog is None or backlog.events > request.cap or sum(len(f) for f in backlog.frames) > request.budget:
            answers[i] = Resumed(project_id, last_seq, [], True)
            continue
        # The counter was read first; a client's own point beyond it is not trusted.
        cursor = max(last_seq, backlog.last or 0)
        answers[i] = Resumed(project_id, cursor, backlog.frames, False)
    return answers  # type: ignore[return-value]


def resumer() -> ThreadBatcher:
    """This event loop's subscribe reader: ``await resumer().submit(Resume(...))`` is its :class:`Resumed`."""
    return batcher("resume", resume_group, slots=settings.CHAT_RESUME_GROUPS, max_group=settings.CHAT_RESUME_GROUP_MAX)
