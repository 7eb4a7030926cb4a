"""What a room's sockets missed: its messages and changes after a ``seq``, in ``seq`` order (resume, gap fill).

Messages and changes (chat.models.RoomChange) share the room's ``seq``. A
missed message comes back as its ``message.new`` frame; a missed change as
the event it was live (``message.edited``, ``message.deleted``,
``reaction``, ``message.pinned``, ``message.unpinned``), showing its message
as it is now. So a later change of the same message and kind of state
(its content, its reactions, its pin) says everything an earlier one did:
only the last of each is sent, at its own place in the order. Roots whose
replies were missed follow with a ``thread.updated`` (no seq of its own).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.db import connection

from chat.models import Message, Pin, RoomChange
from chat.selectors import history as history_selectors
from chat.selectors import pins as pin_selectors
from chat.selectors.unread import _per_room
from chat.serialization import message_dict

# Changes that stand for one state of their message: the last of each wins.
_STATE = {
    RoomChange.Kind.EDIT: "content",
    RoomChange.Kind.DELETE: "content",
    RoomChange.Kind.REACTION: "reactions",
    RoomChange.Kind.PIN: "pin",
    RoomChange.Kind.UNPIN: "pin",
}


@dataclass
class Missed:
    """A room's missed events: ``frames`` oldest first, the ``last`` seq among them (None: none), and how
    many ``events`` they stand for (a later change of the same state replaces an earlier one's frame)."""

    frames: list[str] = field(default_factory=list)
    last: int | None = None
    events: int = 0


def _frame(kind: str, payload: dict[str, Any]) -> str:
    return orjson.dumps({"type": kind, **payload}).decode()


def new_frame(message: Message) -> str:
    """A missed message as its live ``message.new`` frame."""
    return _frame("message.new", {"message": message_dict(message)})


# A room's events after a point, messages and changes merged, at most ``limit + 1``
# of them. {start} is where they begin: the seq itself, or the seq of the room's
# newest message up to a message id.
_EVENTS_AFTER = (
    "SELECT e.seq, e.kind, e.message_id, {arg} AS point FROM ("
    "SELECT * FROM (SELECT seq, '' AS kind, id AS message_id FROM {table} "
    "WHERE room_id = {room} AND seq > {start} ORDER BY seq LIMIT %s) AS m "
    "UNION ALL "
    "SELECT * FROM (SELECT seq, kind, message_id FROM {changes} "
    "WHERE room_id = {room} AND seq > {start} ORDER BY seq LIMIT %s) AS c"
    ") AS e ORDER BY e.seq LIMIT %s"
)
_SEQ_OF_ID = (
    "COALESCE((SELECT p.seq FROM {table} p WHERE p.room_id = {room} AND p.id <= {arg} ORDER BY p.id DESC LIMIT 1), 0)"
)


def room_events_after_many(
    *, after_seq: list[tuple[int, int]] = (), after_id: list[tuple[int, int]] = (), limit: int
) -> dict[tuple[str, int, int], Missed | None]:
    """What each room had after a point, or None for more than ``limit`` events.

    Points are (room id, seq) in ``after_seq`` and (room id, message id) in
    ``after_id`` (what came after that message); answers are keyed
    ``("seq", room, seq)`` and ``("id", room, message id)``. One statement for
    the events of every point of a kind (message_room_seq_uniq and
    roomchange_room_seq_uniq, capped per room), then one for the new messages'
    rows and a few for the changed messages' state, only when there are any.
    """
    changes = connection.ops.quote_name(RoomChange._meta.db_table)
    wanted: dict[tuple[str, int, int], tuple[list[tuple[int, int]], list[tuple[int, str, int]]]] = {}
    for mode, points, start in (("seq", after_seq, "{arg}"), ("id", after_id, _SEQ_OF_ID)):
        points = list(dict.fromkeys(points))
        if not points:
            continue
        sql = _EVENTS_AFTER.replace("{start}", start).replace("{changes}", changes)
        rows = _per_room([room for room, _ in points], [point for _, point in points], sql, [limit + 1] * 3)
        for room, point in points:
            wanted[(mode, room, point)] = ([], [])
        for room, seq, kind, message_id, point in rows:
            new, changed = wanted[(mode, room, point)]
            if kind:
                changed.append((seq, kind, message_id))
            else:
                new.append((seq, message_id))
    within = {key: events for key, events in wanted.items() if len(events[0]) + len(events[1]) <= limit}
    rendered = _render({(key[1], i): events for i, (key, events) in enumerate(within.items())})
    answers: dict[tuple[str, int, int], Missed | None] = dict.fromkeys(wanted)
    for i, key in enumerate(within):
        answers[key] = rendered[(key[1], i)]
    return answers


def room_events_between(*, room_id: int, after_seq: int, before_seq: int) -> Missed:
    """The room's events with ``after_seq < seq < before_seq`` (a gap a socket fills before going on)."""
    new = list(
        Message.objects.filter(room_id=room_id, seq__gt=after_seq, seq__lt=before_seq).order_by("seq").values_list("seq", "id")
    )
    changed = list(
        RoomChange.objects.filter(room_id=room_id, seq__gt=after_seq, seq__lt=before_seq)
        .order_by("seq")
        .values_list("seq", "kind", "message_id")
    )
    return _render({(room_id, after_seq): (new, changed)})[(room_id, after_seq)]


def _render(
    wanted: dict[tuple[int, int], tuple[list[tuple[int, int]], list[tuple[int, str, int]]]],
) -> dict[tuple[int, int], Missed]:
    """Frames for each pair's (seq, message id) messages and (seq, kind, message id) changes, in seq order."""
    last_of: dict[tuple[int, int], dict[tuple[int, str], int]] = {}
    for pair, (_, changes) in wanted.items():
        last_of[pair] = {(message_id, _STATE[kind]): seq for seq, kind, message_id in changes}
    new_ids = {message_id for messages, _ in wanted.values() for _, message_id in messages}
    states = {key for kept in last_of.values() for key in kept}
    content = [message_id for message_id, state in states if state == "content"]
    reacted = [message_id for message_id, state in states if state == "reactions"]
    pinned_ids = [message_id for message_id, state in states if state == "pin"]
    messages = history_selectors.messages_by_id(ids=list(new_ids))
    dicts = history_selectors.message_dicts(ids=list(set(content) | set(pinned_ids))) if content or pinned_ids else {}
    version = time.time_ns()
    reactions = history_selectors.messages_reactions(message_ids=reacted) if reacted else {}
    pins = {pin.message_id: pin for pin in Pin.objects.filter(message_id__in=pinned_ids).select_related("pinned_by")}
    pin_payloads = dict(zip(pins, pin_selectors.pin_dicts(list(pins.values())))) if pins else {}

    found: dict[tuple[int, int], Missed] = {}
    roots_of: dict[tuple[int, int], set[int]] = {}
    for pair, (new, changes) in wanted.items():
        room_id = pair[0]
        events: list[tuple[int, str]] = []
        roots = roots_of[pair] = set()
        for seq, message_id in new:
            message = messages.get(message_id)
            if message is not None:
                events.append((seq, new_frame(message)))
                if message.thread_root_id is not None:
                    roots.add(message.thread_root_id)
        kept = last_of[pair]
        for seq, kind, message_id in changes:
            state = _STATE[kind]
            if kept[(message_id, state)] != seq:
                continue  # a later change of the same state follows
            if state == "content":
                entry = dicts.get(message_id)
                if entry is None:
                    continue
                if entry["deleted"]:
                    payload = {"id": message_id, "room": room_id, "seq": seq, "thread_root": entry["thread_root"]}
                    events.append((seq, _frame("message.deleted", payload)))
                    if entry["thread_root"] is not None:
                        roots.add(entry["thread_root"])
                else:
                    events.append((seq, _frame("message.edited", {"message": entry, "seq": seq})))
            elif state == "reactions":
                payload = {"room": room_id, "message": message_id, "version": version, "seq": seq,
                           "reactions": reactions.get(message_id, [])}  # fmt: skip
                events.append((seq, _frame("reaction", payload)))
            elif message_id in pin_payloads and not dicts.get(message_id, {}).get("deleted"):
                payload = {"room": room_id, **pin_payloads[message_id], "seq": seq}
                events.append((seq, _frame("message.pinned", payload)))
            else:
                events.append((seq, _frame("message.unpinned", {"room": room_id, "id": message_id, "seq": seq})))
        events.sort(key=lambda event: event[0])
        found[pair] = Missed([text for _, text in events], events[-1][0] if events else None, len(new) + len(changes))
    all_roots = sorted(set().union(*roots_of.values()))
    if all_roots:
        threads = history_selectors.thread_summaries(root_ids=all_roots)
        for pair, roots in roots_of.items():
            found[pair].frames += [
                _frame("thread.updated", {"room": pair[0], "root": root, "version": version, "thread": threads[root]})
                for root in sorted(roots)
            ]
    return found
