"""Requests from many sockets that arrive together go to a database thread together.

A :class:`ThreadBatcher` wraps a function that handles a list of requests in
one trip to a database thread (``chat.asyncdb.db_async``) and answers each:
its result, or the ChatError that refused it. A request that finds one of
``slots`` trips free goes at once, alone; requests that arrive while every
slot is busy wait and then go together, up to ``max_group``. So groups grow
with the load (a reconnect storm, a burst of sends) and an idle server adds
no delay. One per event loop and job (perf.redis.loop_resource).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Generic, TypeVar

from chat.asyncdb import db_async
from chatsite.errors import ChatError
from perf.redis import loop_resource

Request = TypeVar("Request")


class ThreadBatcher(Generic[Request]):
    def __init__(self, work: Callable[[list[Request]], list[Any]], *, slots: int, max_group: int) -> None:
        self.work = db_async(work)
        self.slots = slots
        self.max_group = max_group
        self.pending: list[tuple[Request, asyncio.Future]] = []
        self.busy = 0
        self.scheduled = False
        self.tasks: set[asyncio.Task] = set()
        self.groups = 0
        self.requests = 0

    async def submit(self, request: Request) -> Any:
        """Handle ``request`` with whatever else is waiting; its result, or raise its refusal."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        if not self.scheduled:
            # Requests decoded in the same turn of the loop go together.
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        result = await future
        if isinstance(result, ChatError):
            raise result
        return result

    def _start(self) -> None:
        self.scheduled = False
        while self.pending and self.busy < self.slots:
            group, self.pending = self.pending[: self.max_group], self.pending[self.max_group :]
            self.busy += 1
            task = asyncio.ensure_future(self._run(group))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, group: list[tuple[Request, asyncio.Future]]) -> None:
        try:
            results = await self.work([request for request, _ in group])
        except Exception as exc:  # noqa: BLE001 - the whole trip failed (the database): each request hears why
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:
            for _, future in group:
                future.cancel()
            raise
        else:
            self.groups += 1
            self.requests += len(group)
            for (_, future), result in zip(group, results):
                if not future.done():
                    future.set_result(result)
        finally:
            self.busy -= 1
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


def batcher(name: str, work: Callable[[list[Any]], list[Any]], *, slots: int, max_group: int) -> ThreadBatcher:
    """This event loop's batcher for the job ``name``."""
    return loop_resource(f"batcher:{name}", lambda: ThreadBatcher(work, slots=slots, max_group=max_group), ThreadBatcher.stop)
