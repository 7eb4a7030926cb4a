"""tests.waiting: the polling helpers every test waits with."""

from __future__ import annotations

import pytest

from tests.waiting import MAX_REPR, await_until, wait_until


def countdown(tries: int):
    """A predicate that is falsy ``tries - 1`` times, then returns how often it was called."""
    calls: list[int] = []

    def predicate() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= tries else 0

    return predicate


def test_wait_until_returns_the_first_truthy_value() -> None:
    assert wait_until(countdown(3), interval=0) == 3


def test_wait_until_fails_with_the_message_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"the room never filled \(not within 0 s; last value: \[\]\)"):
        wait_until(lambda: [], timeout=0, message="the room never filled")


class LongFalsy:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "x" * 10_000


def test_a_message_built_at_failure_time_and_a_long_last_value_shortened() -> None:
    built = []

    def message() -> str:
        built.append(1)
        return "see the log"

    assert wait_until(countdown(2), interval=0, message=message) == 2
    assert built == []  # only a failure builds it
    with pytest.raises(AssertionError) as failure:
        wait_until(LongFalsy, timeout=0, message=message)
    assert built == [1]
    assert str(failure.value) == f"see the log (not within 0 s; last value: {'x' * MAX_REPR}...)"


def test_a_zero_timeout_tries_once() -> None:
    predicate = countdown(2)
    with pytest.raises(AssertionError):
        wait_until(predicate, timeout=0)
    assert predicate() == 2  # the second call: the wait made exactly one


def test_exceptions_from_the_predicate_propagate() -> None:
    def broken() -> bool:
        raise RuntimeError("server exited")

    with pytest.raises(RuntimeError, match="server exited"):
        wait_until(broken)


async def test_await_until_takes_plain_and_async_predicates() -> None:
    assert await await_until(countdown(3), interval=0) == 3
    plain = countdown(2)

    async def async_predicate() -> int:
        return plain()

    assert await await_until(async_predicate, interval=0) == 2
    with pytest.raises(AssertionError, match=r"nobody joined \(not within 0 s; last value: None\)"):
        await await_until(lambda: None, timeout=0, message="nobody joined")
