"""Waiting for an event in tests: poll until a predicate holds.

The timeout only keeps a broken build from hanging: it is a liveness bound,
never a claim about speed, so it is generous and no test asserts on it.
``wait_until`` and ``await_until`` share one set of rules (:class:`_Deadline`);
they differ only in how they sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT = 10.0
INTERVAL = 0.05
# Reprs longer than this (a whole metrics scrape) would bury the message.
MAX_REPR = 500

Message = str | Callable[[], str]


class _Deadline:
    """The loop rules: try, and after each falsy value pause, until the time is up; then fail with the last value."""

    def __init__(self, *, timeout: float, interval: float, message: Message) -> None:
        self.timeout, self.interval, self.message = timeout, interval, message
        self.ends = time.monotonic() + timeout

    def pause(self, value: object) -> float:
        """Seconds to sleep before the next try, after ``value`` was falsy; AssertionError once the time is up.

        The last pause ends at the deadline, so the predicate is always tried once at the deadline.
        """
        left = self.ends - time.monotonic()
        if left <= 0:
            message = self.message() if callable(self.message) else self.message
            last = repr(value)
            if len(last) > MAX_REPR:
                last = last[:MAX_REPR] + "..."
            raise AssertionError(f"{message} (not within {self.timeout:g} s; last value: {last})")
        return min(self.interval, left)


def wait_until(
    predicate: Callable[[], T], *, timeout: float = TIMEOUT, interval: float = INTERVAL, message: Message = "condition not met"
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Raises AssertionError naming ``message`` (a string, or a callable that
    builds one at failure time, such as a log tail) and the last value when
    ``timeout`` seconds pass first. Exceptions from ``predicate`` propagate.
    """
    deadline = _Deadline(timeout=timeout, interval=interval, message=message)
    while not (value := predicate()):
        time.sleep(deadline.pause(value))
    return value


async def await_until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    message: Message = "condition not met",
) -> T:
    """:func:`wait_until` for a running event loop: sleeps without blocking it, and awaits ``predicate`` when it is a coroutine function."""
    deadline = _Deadline(timeout=timeout, interval=interval, message=message)
    while not (value := await _result(predicate())):
        await asyncio.sleep(deadline.pause(value))
    return value


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
