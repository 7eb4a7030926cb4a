"""The per-socket send buffer: batching, shedding order, overflow, and the event loop's one flush."""

from __future__ import annotations

import asyncio
from typing import Callable

import orjson
import pytest

from chat.outbox import MAX_BATCH_BYTES, PRIORITY_EPHEMERAL, PRIORITY_MESSAGE, PRIORITY_READ, PRIORITY_REPLY, Outbox
from perf import redis as perf_redis


class Sink:
    """A socket's send: ``gate`` cleared is a client that does not read (the send waits, as uvicorn's does)."""

    def __init__(self, fail: bool = False) -> None:
        self.frames: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail
        self.overflowed = 0
        self.waiting = 0  # sends under way
        self.cancelled = 0
        self.on_write: Callable[[], None] | None = None

    async def write(self, text: str) -> None:
        if self.fail:
            raise ConnectionError("transport closed")
        self.waiting += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.waiting -= 1
        if self.on_write:
            self.on_write()
        self.frames.append(text)

    async def overflow(self) -> None:
        self.overflowed += 1

    def events(self) -> list[dict]:
        out: list[dict] = []
        for frame in self.frames:
            decoded = orjson.loads(frame)
            out.extend(decoded if isinstance(decoded, list) else [decoded])
        return out


def ev(n: int, kind: str = "message.new") -> str:
    return orjson.dumps({"type": kind, "n": n}).decode()


def batch(*ns: int) -> str:
    return "[" + ",".join(ev(n) for n in ns) + "]"


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (a hang guard, not a deadline under test)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    assert condition()


async def settle() -> None:
    """Give the loop enough turns for a window-0 flush and its sends to run."""
    for _ in range(10):
        await asyncio.sleep(0)


def other_tasks() -> set[asyncio.Task]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_pending_events_leave_as_one_array_frame_in_order():
    sink = Sink()
    shed = []
    outbox = Outbox(sink.write, limit=10_000, window=0.005, on_overflow=sink.overflow, on_shed=lambda p, n: shed.append((p, n)))
    for n in range(10):
        outbox.put(PRIORITY_MESSAGE, ev(n))
    await until(lambda: sink.frames)
    assert len(sink.frames) == 1
    assert [e["n"] for e in sink.events()] == list(range(10))
    outbox.put(PRIORITY_MESSAGE, ev(10))
    await until(lambda: len(sink.frames) == 2)
    assert sink.frames[-1] == ev(10)  # a lone event is sent as a plain object
    assert not shed and sink.overflowed == 0
    await outbox.close()


async def test_low_priority_events_are_shed_first_and_messages_kept():
    sink = Sink()
    sink.gate.clear()  # the client is not reading
    shed: list[tuple[int, int]] = []
    # The limit is in bytes: 4 messages, 5 typing and 3 reads are 306.
    outbox = Outbox(sink.write, limit=300, window=0, on_overflow=sink.overflow, on_shed=lambda p, n: shed.append((p, n)))
    await asyncio.sleep(0)
    outbox.put(PRIORITY_MESSAGE, ev(0))
    await until(lambda: sink.waiting == 1)  # the writer is now blocked sending event 0
    for n in range(1, 5):
        outbox.put(PRIORITY_MESSAGE, ev(n))
    for n in range(5):
        outbox.put(PRIORITY_EPHEMERAL, ev(100 + n, "typing"))
    for n in range(3):
        outbox.put(PRIORITY_READ, ev(200 + n, "read"))
    # 306 bytes > 300: typing goes first, reads stay
    assert shed == [(PRIORITY_EPHEMERAL, 5)]
    kept = [ev(n) for n in range(1, 5)] + [ev(200 + n, "read") for n in range(3)]
    assert len(outbox) == 7 and outbox.pending_bytes == sum(map(len, kept))
    sink.gate.set()
    await until(lambda: len(outbox) == 0 and sink.waiting == 0)
    kinds = [e["type"] for e in sink.events()]
    assert kinds.count("message.new") == 5 and kinds.count("read") == 3 and "typing" not in kinds
    assert sink.overflowed == 0
    await outbox.close()


async def test_too_many_messages_is_an_overflow_not_a_drop():
    sink = Sink()
    sink.gate.clear()
    outbox = Outbox(sink.write, limit=100, window=0, on_overflow=sink.overflow)
    outbox.put(PRIORITY_REPLY, ev(0, "hello"))
    await until(lambda: sink.waiting == 1)
    for n in range(6):
        outbox.put(PRIORITY_MESSAGE, ev(n))
    await until(lambda: sink.overflowed)
    await settle()
    assert sink.overflowed == 1  # once, however many frames follow
    outbox.put(PRIORITY_MESSAGE, ev(99))  # ignored after overflow: the socket is being closed
    assert len(outbox) == 0
    await outbox.close()
    assert sink.cancelled == 1 and sink.frames == []


async def test_sockets_given_the_same_events_in_one_pass_flush_together_with_the_same_text():
    """One timer per loop: an outbox that got its first frame later still leaves in the same flush.

    With a timer per socket, the ten outboxes that got event 0 first would
    send before the other ten had even started their window.
    """
    loop = asyncio.get_running_loop()
    sinks = [Sink() for _ in range(20)]
    outboxes = [Outbox(s.write, limit=10_000, window=0.3, on_overflow=s.overflow) for s in sinks]
    marker_ran: list[bool] = []
    seen_marker: list[bool] = []

    def on_write() -> None:
        if not marker_ran:  # the flush's first send: anything after a loop turn would see the marker
            marker_ran.append(False)
            loop.call_soon(lambda: marker_ran.__setitem__(0, True))
        seen_marker.append(marker_ran[0])

    for sink in sinks:
        sink.on_write = on_write
    for outbox in outboxes[:10]:
        outbox.put(PRIORITY_MESSAGE, ev(0))
    await asyncio.sleep(0.01)  # well inside the window
    for outbox in outboxes:  # one hub pass
        outbox.put(PRIORITY_MESSAGE, ev(1))
        outbox.put(PRIORITY_MESSAGE, ev(2))
    await until(lambda: all(s.frames for s in sinks))
    assert seen_marker == [False] * 20  # all twenty sends in one turn of the loop
    assert [s.frames for s in sinks] == [[batch(0, 1, 2)]] * 10 + [[batch(1, 2)]] * 10
    assert not other_tasks()
    for outbox in outboxes:
        await outbox.close()


async def test_a_socket_whose_send_waits_does_not_delay_the_others():
    slow, fast, last = Sink(), Sink(), Sink()
    slow.gate.clear()  # a client that stopped reading: its send waits for the transport
    outboxes = [Outbox(s.write, limit=10_000, window=0.002, on_overflow=s.overflow) for s in (slow, fast, last)]
    for outbox in outboxes:  # the slow socket first in the flush
        outbox.put(PRIORITY_MESSAGE, ev(0))
    await until(lambda: fast.frames and last.frames)
    assert slow.waiting == 1 and slow.frames == []
    assert fast.frames == last.frames == [ev(0)]

    for outbox in outboxes:  # while the slow send still waits, the others' next flush goes out
        outbox.put(PRIORITY_MESSAGE, ev(1))
        outbox.put(PRIORITY_MESSAGE, ev(2))
    await until(lambda: len(fast.frames) == 2 and len(last.frames) == 2)
    assert slow.waiting == 1 and slow.frames == []
    assert fast.frames == last.frames == [ev(0), batch(1, 2)]
    assert len(outboxes[0]) == 2  # collected behind the waiting send

    slow.gate.set()
    await until(lambda: len(slow.frames) == 2)
    assert slow.frames == [ev(0), batch(1, 2)]  # in order, the backlog as soon as the send completed
    await settle()
    assert not other_tasks()  # idle again: no task left for any socket
    for outbox in outboxes:
        await outbox.close()


async def test_close_cancels_a_waiting_send_and_only_that_one():
    slow, fast = Sink(), Sink()
    slow.gate.clear()
    slow_box = Outbox(slow.write, limit=10_000, window=0, on_overflow=slow.overflow)
    fast_box = Outbox(fast.write, limit=10_000, window=0, on_overflow=fast.overflow)
    slow_box.put(PRIORITY_MESSAGE, ev(0))
    fast_box.put(PRIORITY_MESSAGE, ev(0))
    await until(lambda: slow.waiting == 1 and fast.frames)
    slow_box.put(PRIORITY_MESSAGE, ev(1))
    await slow_box.close()
    assert slow.cancelled == 1 and slow.waiting == 0 and len(slow_box) == 0
    fast_box.put(PRIORITY_MESSAGE, ev(1))
    await until(lambda: len(fast.frames) == 2)
    slow.gate.set()
    slow_box.put(PRIORITY_MESSAGE, ev(2))  # closed: dropped
    await settle()
    assert slow.frames == [] and fast.frames == [ev(0), ev(1)]
    assert not other_tasks()
    await fast_box.close()


async def test_close_before_the_flush_sends_nothing():
    sinks = [Sink() for _ in range(3)]
    outboxes = [Outbox(s.write, limit=10_000, window=0.002, on_overflow=s.overflow) for s in sinks]
    for outbox in outboxes:
        outbox.put(PRIORITY_MESSAGE, ev(0))
    await outboxes[1].close()
    await until(lambda: sinks[0].frames and sinks[2].frames)
    await settle()
    assert sinks[1].frames == [] and sinks[0].frames == sinks[2].frames == [ev(0)]
    for outbox in outboxes:
        await outbox.close()


async def test_a_dead_transport_ends_that_writer_only():
    dead, alive = Sink(fail=True), Sink()
    dead_box = Outbox(dead.write, limit=100, window=0, on_overflow=dead.overflow)
    alive_box = Outbox(alive.write, limit=10_000, window=0, on_overflow=alive.overflow)
    for outbox in (dead_box, alive_box):
        outbox.put(PRIORITY_MESSAGE, ev(0))
    await until(lambda: alive.frames)
    assert dead_box._failed
    # Nothing is sent any more: frames pile up to the limit, then it is a slow consumer (closed with 4408).
    for n in range(1, 8):
        dead_box.put(PRIORITY_MESSAGE, ev(n))
    await settle()
    assert dead.overflowed == 1 and dead_box.overflowed
    alive_box.put(PRIORITY_MESSAGE, ev(1))
    await until(lambda: len(alive.frames) == 2)
    assert alive.frames == [ev(0), ev(1)]
    for outbox in (dead_box, alive_box):
        await outbox.close()


async def test_a_backlog_larger_than_a_batch_leaves_in_order_in_several_frames():
    sink = Sink()
    counted: list[tuple[int, int]] = []
    outbox = Outbox(sink.write, limit=4 * MAX_BATCH_BYTES, window=0, on_overflow=sink.overflow, on_batch=lambda n, size: counted.append((n, size)))
    pad = "x" * 1000
    texts = [orjson.dumps({"type": "message.new", "n": n, "pad": pad}).decode() for n in range(1200)]
    for text in texts:
        outbox.put(PRIORITY_MESSAGE, text)
    await until(lambda: len(outbox) == 0)
    await settle()
    assert len(sink.frames) == 3 and all(len(frame) < MAX_BATCH_BYTES for frame in sink.frames)
    assert [e["n"] for e in sink.events()] == list(range(1200))
    assert counted == [(len(orjson.loads(f)), len(f)) for f in sink.frames]
    await outbox.close()


async def test_an_idle_outbox_holds_no_task_and_a_burst_makes_no_task_per_socket():
    sinks = [Sink() for _ in range(50)]
    outboxes = [Outbox(s.write, limit=10_000, window=0.002, on_overflow=s.overflow) for s in sinks]
    assert not other_tasks()
    for outbox in outboxes:
        outbox.put(PRIORITY_MESSAGE, ev(0))
    assert not other_tasks()  # waiting for the flush: a timer for the loop, no task
    await until(lambda: all(s.frames for s in sinks))
    await settle()
    assert not other_tasks()
    for outbox in outboxes:
        await outbox.close()


def test_flush_state_belongs_to_its_event_loop():
    """Each loop (each test's, each server's) has its own flusher; a closed loop's is forgotten."""
    seen: list[tuple[asyncio.AbstractEventLoop, object]] = []

    async def one_loop() -> list[str]:
        sink = Sink()
        outbox = Outbox(sink.write, limit=10_000, window=0.001, on_overflow=sink.overflow)
        outbox.put(PRIORITY_MESSAGE, ev(0))
        loop = asyncio.get_running_loop()
        seen.append((loop, perf_redis.existing_loop_resource(loop, "outbox-flushers")))
        await until(lambda: sink.frames)
        await outbox.close()
        return sink.frames

    assert asyncio.run(one_loop()) == [ev(0)]
    assert asyncio.run(one_loop()) == [ev(0)]
    (first_loop, first), (second_loop, second) = seen
    assert first is not None and second is not None and first is not second
    assert first_loop not in perf_redis._resources  # dropped when the next loop made its own


@pytest.mark.parametrize("window", [0, 0.002])
async def test_many_sockets_in_one_flush_keep_each_ones_order(window):
    sinks = [Sink() for _ in range(30)]
    outboxes = [Outbox(s.write, limit=100_000, window=window, on_overflow=s.overflow) for s in sinks]
    for round_ in range(5):
        for i, outbox in enumerate(outboxes):
            if (i + round_) % 3:  # not every socket every time
                outbox.put(PRIORITY_MESSAGE, ev(round_ * 100 + i))
        await asyncio.sleep(0.001 * (round_ % 2))
    await until(lambda: all(len(o) == 0 for o in outboxes))
    await settle()
    for i, sink in enumerate(sinks):
        assert [e["n"] for e in sink.events()] == [r * 100 + i for r in range(5) if (i + r) % 3]
    for outbox in outboxes:
        await outbox.close()


async def test_outboxes_keep_sending_after_the_loops_resources_are_closed():
    """aclose_loop_resources (server shutdown) stops the flusher; an outbox still in use gets the loop's next one."""
    sink = Sink()
    outbox = Outbox(sink.write, limit=10_000, window=0.002, on_overflow=sink.overflow)
    outbox.put(PRIORITY_MESSAGE, ev(0))
    await until(lambda: sink.frames)
    outbox.put(PRIORITY_MESSAGE, ev(1))
    await perf_redis.aclose_loop_resources()  # the pending flush is dropped with its timer
    outbox.put(PRIORITY_MESSAGE, ev(2))
    await until(lambda: len(outbox) == 0)
    await settle()
    assert sink.frames == [ev(0), batch(1, 2)]
    await outbox.close()


async def test_an_idle_outbox_holds_no_buffer():
    from collections import deque

    sink = Sink()
    outbox = Outbox(sink.write, limit=10_000, window=0, on_overflow=sink.overflow)
    assert not isinstance(outbox._items, deque)  # before its first frame
    outbox.put(PRIORITY_MESSAGE, ev(1))
    assert isinstance(outbox._items, deque) and len(outbox) == 1
    await until(lambda: sink.frames)
    assert not isinstance(outbox._items, deque) and len(outbox) == 0  # given back once sent
    outbox.put(PRIORITY_MESSAGE, ev(2))
    await until(lambda: len(sink.frames) == 2)
    assert [e["n"] for e in sink.events()] == [1, 2]
    await outbox.close()
