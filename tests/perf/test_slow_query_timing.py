"""Whose clock says a statement is slow: PostgreSQL's own, when the role may ask for it (perf.db)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from django.db import connection, connections
from django.test import override_settings
from prometheus_client import REGISTRY

from perf import context
from perf.db import SERVER_CLOCK_ATTR, _server_timing_denied
from tests.perf.conftest import extra_database, raw_connection

THRESHOLD = 0.2  # seconds
# Transactional tests: checkouts happen in autocommit, where a session can be told the threshold.
timed_db = pytest.mark.django_db(transaction=True)

# A C call that keeps the GIL: while it runs no other Python thread runs, as
# when the event loop is busy in one long call (or simply has the GIL when a
# database thread's result arrives).
_hold_gil = ctypes.PyDLL(None).usleep
_hold_gil.argtypes = [ctypes.c_uint]
HOLD = 0.5  # seconds


def slow_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "perf.slow_query"]


def delayed_count() -> float:
    return REGISTRY.get_sample_value("chat_db_statements_delayed_total") or 0.0


@pytest.fixture
def timed() -> Iterator[None]:
    """SLOW_QUERY_THRESHOLD = 0.2 s, with the connection checked out again so its session uses it."""
    with override_settings(SLOW_QUERY_THRESHOLD=THRESHOLD):
        connections.close_all()
        yield
        connections.close_all()


def clock_of(wrapper: Any) -> Any:
    wrapper.ensure_connection()
    return getattr(wrapper.connection, SERVER_CLOCK_ATTR, None)


@timed_db
def test_the_session_is_told_the_threshold(timed: None) -> None:
    clock = clock_of(connection)
    assert clock is not None and clock.threshold_ms == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('log_min_duration_statement'), current_setting('client_min_messages')")
        assert cursor.fetchone() == ("200ms", "log")


@timed_db
def test_a_slow_statement_is_logged_with_the_time_postgresql_measured(timed: None, caplog: pytest.LogCaptureFixture) -> None:
    slow_before = REGISTRY.get_sample_value("chat_db_slow_queries_total") or 0.0
    with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.25), %s", ["secret-parameter"])
    [record] = [r for r in slow_records(caplog) if r["sql"] == "SELECT pg_sleep(0.25), %s"]
    assert record["measured"] == "database"
    assert record["duration_ms"] >= 250.0
    assert record["wall_ms"] >= record["duration_ms"]
    # PostgreSQL's message quotes the statement with its literal; the log line keeps the template.
    assert "secret-parameter" not in caplog.text
    assert (REGISTRY.get_sample_value("chat_db_slow_queries_total") or 0.0) == slow_before + 1


@timed_db
def test_postgresql_sends_nothing_for_fast_statements(timed: None) -> None:
    """Below the threshold the server is silent: timing costs fast statements no message and no round trip."""
    connection.ensure_connection()
    notices: list[tuple[str | None, str | None]] = []

    def seen(diagnostic: Any) -> None:  # a Diagnostic is readable only while the handler runs
        notices.append((diagnostic.severity_nonlocalized, diagnostic.message_primary))

    connection.connection.add_notice_handler(seen)
    try:
        with connection.cursor() as cursor:
            for _ in range(200):
                cursor.execute("SELECT 1")
            assert notices == []
            cursor.execute("SELECT pg_sleep(0.21)")
    finally:
        connection.connection.remove_notice_handler(seen)
    [(severity, message)] = notices
    assert severity == "LOG" and message is not None and message.startswith("duration: ")


def hold_the_gil_once_started(started: threading.Event) -> None:
    """Wait for the statement to be on its way, then keep the GIL for HOLD seconds."""
    assert started.wait(30)
    _hold_gil(int(HOLD * 1_000_000))


@contextmanager
def signal_when_sent(started: threading.Event) -> Iterator[None]:
    def wrapper(execute: Any, sql: str, params: Any, many: bool, ctx: dict) -> Any:
        started.set()  # inside the slow-query wrapper's timing, just before the statement is sent
        return execute(sql, params, many, ctx)

    with connection.execute_wrapper(wrapper):
        yield


def run_in_database_thread(sql: str, started: threading.Event) -> float:
    """``sql`` on a worker thread, as chat.asyncdb runs a socket's queries; returns its wall time (request totals)."""
    totals_token = context.start_totals()
    try:
        with signal_when_sent(started), connection.cursor() as cursor:
            cursor.execute(sql)
        return context.current_totals().seconds  # type: ignore[union-attr]
    finally:
        context.stop_totals(totals_token)
        connections.close_all()


async def statement_while_the_loop_holds_the_gil(sql: str) -> float:
    started = threading.Event()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        future = loop.run_in_executor(pool, run_in_database_thread, sql, started)
        hold_the_gil_once_started(started)  # on the event loop's thread
        return await future


@timed_db
async def test_a_fast_statement_held_up_by_the_gil_is_not_a_slow_database_statement(
    timed: None, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL runs it in 50 ms; the thread gets its result 500 ms later: counted as delayed, not logged."""
    delayed_before = delayed_count()
    with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        wall = await statement_while_the_loop_holds_the_gil("SELECT pg_sleep(0.05)")
    assert wall >= THRESHOLD  # by the wall clock it was slow ...
    assert [r for r in slow_records(caplog) if "pg_sleep" in r["sql"]] == []  # ... but not on the database
    assert delayed_count() == delayed_before + 1


@timed_db
async def test_a_slow_statement_held_up_by_the_gil_is_logged_with_its_database_time(
    timed: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        wall = await statement_while_the_loop_holds_the_gil("SELECT pg_sleep(0.25)")
    [record] = [r for r in slow_records(caplog) if "pg_sleep" in r["sql"]]
    assert record["measured"] == "database"
    assert 250.0 <= record["duration_ms"] < HOLD * 1000.0  # the database's 250 ms, not the 500 ms held
    assert record["wall_ms"] >= HOLD * 1000.0 and wall >= HOLD


@timed_db
def test_a_statement_that_fails_is_judged_by_the_wall_clock(timed: None, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL reports no duration for a statement that ends in an error (a timeout, a cancel)."""
    sql = "DO $$ BEGIN PERFORM pg_sleep(0.25); RAISE EXCEPTION 'late failure'; END $$"
    with caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        with pytest.raises(Exception, match="late failure"):
            with connection.cursor() as cursor:
                cursor.execute(sql)
    [record] = [r for r in slow_records(caplog) if "late failure" in r["sql"]]
    assert record["measured"] == "wall" and record["failed"] is True
    assert record["duration_ms"] >= 250.0 and record["duration_ms"] == record["wall_ms"]


def test_a_role_that_may_not_set_the_parameter_is_timed_by_the_wall_clock(
    django_db_setup: None, django_db_blocker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    role = f"perf_plain_{uuid.uuid4().hex[:8]}"
    alias = f"plain_{role}"
    with raw_connection() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with django_db_blocker.unblock(), extra_database(alias, USER=role) as plain:
            with caplog.at_level(logging.WARNING):
                for _ in range(2):  # two checkouts: the role is asked once
                    with plain.cursor() as cursor:
                        cursor.execute("SELECT pg_sleep(0.21)")
                    plain.close()
            assert clock_of(plain) is None
        records = [r for r in slow_records(caplog) if r["db"] == alias]
        assert [r["measured"] for r in records] == ["wall", "wall"]
        assert all(r["duration_ms"] >= 210.0 for r in records)
        refusals = [r for r in caplog.records if r.name == "perf.db" and "may not set log_min_duration_statement" in r.getMessage()]
        assert len(refusals) == 1
    finally:
        _server_timing_denied.discard(alias)
        with raw_connection() as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@timed_db
def test_a_threshold_below_the_sessions_is_judged_by_the_wall_clock(caplog: pytest.LogCaptureFixture) -> None:
    """Until its next idle checkout a session keeps the threshold it was told: what it would not report is judged by the wall clock."""
    with override_settings(SLOW_QUERY_THRESHOLD=THRESHOLD):
        connections.close_all()
        assert clock_of(connection).threshold_ms == 200
    with override_settings(SLOW_QUERY_THRESHOLD=0.05), caplog.at_level(logging.WARNING, logger="perf.slow_query"):
        with connection.cursor() as cursor:  # the same checkout: still told 200 ms
            cursor.execute("SELECT pg_sleep(0.06)")
    [record] = [r for r in slow_records(caplog) if "pg_sleep" in r["sql"]]
    assert record["measured"] == "wall" and record["duration_ms"] >= 60.0
    connections.close_all()
