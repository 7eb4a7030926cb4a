"""The per-socket send buffer: batching, shedding order, overflow."""

from __future__ import annotations

import asyncio

import orjson

from chat.outbox import PRIORITY_EPHEMERAL, PRIORITY_MESSAGE, PRIORITY_READ, PRIORITY_REPLY, Outbox


class Sink:
    def __init__(self, delay: float = 0.0) -> None:
        self.frames: list[str] = []
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.overflowed = 0

    async def write(self, text: str) -> None:
        await self.gate.wait()
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


async def test_pending_events_leave_as_one_array_frame_in_order():
    sink = Sink()
    shed = []
    outbox = Outbox(sink.write, limit=10_000, window=0.005, on_overflow=sink.overflow, on_shed=lambda p, n: shed.append((p, n)))
    for n in range(10):
        outbox.put(PRIORITY_MESSAGE, ev(n))
    await asyncio.sleep(0.05)
    assert len(sink.frames) == 1
    assert [e["n"] for e in sink.events()] == list(range(10))
    outbox.put(PRIORITY_MESSAGE, ev(10))
    await asyncio.sleep(0.05)
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
    await asyncio.sleep(0.01)  # the writer is now blocked sending event 0
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
    await asyncio.sleep(0.05)
    kinds = [e["type"] for e in sink.events()]
    assert kinds.count("message.new") == 5 and kinds.count("read") == 3 and "typing" not in kinds
    assert sink.overflowed == 0
    await outbox.close()


async def test_too_many_messages_is_an_overflow_not_a_drop():
    sink = Sink()
    sink.gate.clear()
    outbox = Outbox(sink.write, limit=100, window=0, on_overflow=sink.overflow)
    outbox.put(PRIORITY_REPLY, ev(0, "hello"))
    await asyncio.sleep(0.01)
    for n in range(6):
        outbox.put(PRIORITY_MESSAGE, ev(n))
    await asyncio.sleep(0.01)
    assert sink.overflowed == 1
    outbox.put(PRIORITY_MESSAGE, ev(99))  # ignored after overflow: the socket is being closed
    assert len(outbox) == 0
    await outbox.close()
