"""Subscribes with resume, read in groups: what a reconnect storm costs is per group, not per socket.

A ``subscribe`` (with ``last_id`` after a reconnect) needs the user's access
to the room, the subscribe rate limit, the room's counter and the messages
the socket missed. Subscribes that arrive together go to one database thread
together (chat.batching): one cache round trip for every access, one
rate-limit round trip at most, one query for every counter and two for every
backlog, however many sockets came back at once. Sockets of one room that saw the same last message share one read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from chat.batching import ThreadBatcher, batcher
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.serialization import message_dict
from chatsite import ratelimit
from chatsite.errors import ChatError


@dataclass
class Resume:
    """One subscribe: ``last_id`` is the newest message the socket has (None: no backlog wanted).

    More than ``cap`` missed messages, or more than ``budget`` bytes of them,
    is an overflow: the client reloads history over HTTP instead.
    """

    user: Any
    room_id: int
    last_id: int | None
    cap: int
    budget: int


@dataclass
class Resumed:
    project_id: int
    cursor: int  # the seq the socket's live events continue from
    frames: list[str]  # the missed message.new frames, oldest first
    overflowed: bool


def new_frame(message: Any) -> str:
    return orjson.dumps({"type": "message.new", "message": message_dict(message)}).decode()


def resume_group(requests: list[Resume]) -> list[Resumed | ChatError]:
    """Access, rate limit, counter and backlog of each subscribe (in a database thread).

    Called after the sockets joined their rooms' groups. The counters are read
    *before* the missed messages, so every message is either in the backlog
    or arrives later as a live event with a higher seq; live duplicates are
    dropped by seq.
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
    wanted = [(requests[i].room_id, requests[i].last_id) for i in live if requests[i].last_id is not None]
    cap = max((requests[i].cap for i in live), default=0)
    missed = history_selectors.messages_after_many(after=wanted, limit=cap + 1) if wanted else {}
    texts: dict[int, str] = {}
    for i in live:
        request, project_id = requests[i], rooms[i].project_id  # type: ignore[union-attr]
        last_seq = seqs.get(request.room_id, 0)
        if request.last_id is None:
            answers[i] = Resumed(project_id, last_seq, [], False)
            continue
        backlog = missed[(request.room_id, request.last_id)]
        if len(backlog) > request.cap:
            answers[i] = Resumed(project_id, last_seq, [], True)
            continue
        frames = [texts.get(m.id) or texts.setdefault(m.id, new_frame(m)) for m in backlog]
        if sum(len(f) for f in frames) > request.budget:
            answers[i] = Resumed(project_id, last_seq, [], True)
            continue
        cursor = max(last_seq, backlog[-1].seq) if backlog else last_seq
        answers[i] = Resumed(project_id, cursor, frames, False)
    return answers  # type: ignore[return-value]


def resumer() -> ThreadBatcher:
    """This event loop's subscribe reader: ``await resumer().submit(Resume(...))`` is its :class:`Resumed`."""
    return batcher("resume", resume_group, slots=settings.CHAT_RESUME_GROUPS, max_group=settings.CHAT_RESUME_GROUP_MAX)
