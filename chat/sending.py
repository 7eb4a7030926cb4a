"""The WebSocket's message sends, committed in groups.

Every ``message.send`` of a server process goes through its event loop's
:class:`GroupCommit`. A send that finds a commit slot free is written at
once, alone; sends that arrive while ``CHAT_SEND_GROUPS`` groups are being
written wait and then go together: one trip to a database thread, one
statement and one commit for all of them (chat.services.messages.messages_create,
the one writer), and one round of cache updates after it. So the group grows
with the load and an idle server adds no delay.

A socket handles its frames one at a time, so it has at most one send in a
group; the per-room ``seq``, the commit order and ``client_id`` idempotency
are the writer's, unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.asyncdb import db_async
from chat.models import Room
from chat.selectors import rooms as room_selectors
from chat.services import messages as message_services
from chatsite import ratelimit
from chatsite.errors import ChatError
from perf.redis import loop_resource


@dataclass
class Send:
    """One ``message.send``. ``room`` is given when the socket is subscribed to it (its access is known:
    changes reach the socket as events); else the access is checked here."""

    user: Any
    room_id: int
    body: Any
    client_id: str
    room: Room | None = None


def ack_frame(room_id: int, client_id: str, message: Any, created: bool) -> dict[str, Any]:
    return {
        "type": "message.ack",
        "room": room_id,
        "client_id": client_id,
        "id": message.id,
        "seq": message.seq,
        "created_at": message.created_at.isoformat(),
        "duplicate": not created,
    }


def write_group(sends: list[Send]) -> list[dict[str, Any] | ChatError]:
    """Check, count and write a group of sends (in a database thread): the ack frame or the refusal of each."""
    results: list[dict[str, Any] | ChatError | None] = [None] * len(sends)
    drafts: list[tuple[int, message_services.Draft]] = []
    for i, send in enumerate(sends):
        try:
            room = send.room or room_selectors.room_get_for_user(user=send.user, room_id=send.room_id)
            ratelimit.hit("message", send.user.pk)
        except ChatError as exc:
            results[i] = exc
            continue
        drafts.append((i, message_services.Draft(room=room, author=send.user, body=send.body, client_id=send.client_id)))
    outcomes = message_services.messages_create([draft for _, draft in drafts])
    for (i, _), outcome in zip(drafts, outcomes):
        send = sends[i]
        results[i] = outcome if isinstance(outcome, ChatError) else ack_frame(send.room_id, send.client_id, *outcome)
    return results  # type: ignore[return-value]


class GroupCommit:
    """One per event loop: queues sends and writes them in groups, at most ``slots`` groups at a time."""

    def __init__(self, *, slots: int, max_group: int) -> None:
        self.slots = slots
        self.max_group = max_group
        self.pending: list[tuple[Send, asyncio.Future]] = []
        self.writing = 0
        self.scheduled = False
        self.tasks: set[asyncio.Task] = set()
        self.groups = 0
        self.sends = 0

    async def send(self, send: Send) -> dict[str, Any]:
        """Write ``send`` with whatever else is waiting; its ack frame, or raise its refusal."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append((send, future))
        if not self.scheduled:
            # Sends decoded in the same turn of the loop go together.
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        result = await future
        if isinstance(result, ChatError):
            raise result
        return result

    def _start(self) -> None:
        self.scheduled = False
        while self.pending and self.writing < self.slots:
            group, self.pending = self.pending[: self.max_group], self.pending[self.max_group :]
            self.writing += 1
            task = asyncio.ensure_future(self._write(group))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _write(self, group: list[tuple[Send, asyncio.Future]]) -> None:
        try:
            results = await db_async(write_group)([send for send, _ in group])
        except BaseException as exc:  # noqa: BLE001 - the database failed the whole group: each send hears why
            for _, future in group:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
        else:
            self.groups += 1
            self.sends += len(group)
            for (_, future), result in zip(group, results):
                if not future.done():
                    future.set_result(result)
        finally:
            self.writing -= 1
            if self.pending and not self.scheduled:
                self._start()

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass


def group_commit() -> GroupCommit:
    """This event loop's group commit (perf.redis.loop_resource: stopped with the loop's other resources)."""
    return loop_resource(
        "group-commit",
        lambda: GroupCommit(slots=settings.CHAT_SEND_GROUPS, max_group=settings.CHAT_SEND_GROUP_MAX),
        GroupCommit.stop,
    )
