"""Log lines are written by the log-writer thread, never by the thread that logs (perf.logqueue)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from perf.logqueue import THREAD_NAME, QueuedStreamHandler

ROOT = Path(__file__).resolve().parents[2]


class RecordingStream:
    """A stream that remembers each write and the thread that made it; ``gate`` can hold writes back."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.writes: list[tuple[str, str]] = []
        self.gate = gate

    def write(self, text: str) -> int:
        if self.gate is not None:
            self.gate.wait(30)
        self.writes.append((threading.current_thread().name, text))
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return "".join(text for _, text in self.writes).splitlines()

    def writers(self) -> set[str]:
        return {name for name, _ in self.writes}


@contextmanager
def queued_logger(stream: RecordingStream, **kwargs: object) -> Iterator[tuple[logging.Logger, QueuedStreamHandler]]:
    """A logger of its own (not propagating) with a QueuedStreamHandler writing to ``stream``."""
    handler = QueuedStreamHandler(stream, **kwargs)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger(f"tests.logqueue.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        yield log, handler
    finally:
        log.removeHandler(handler)
        handler.close()


def configured_handler() -> QueuedStreamHandler:
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, QueuedStreamHandler)]
    return handler


def test_settings_put_the_console_output_behind_a_queue() -> None:
    handler = configured_handler()
    assert isinstance(handler.target, logging.StreamHandler)
    assert handler.formatter is None  # the message is merged where it is logged, formatted by the writer
    assert handler.target.formatter is not None and "%(asctime)s" in handler.target.formatter._fmt


async def test_a_line_logged_on_the_event_loop_is_written_by_the_writer_thread() -> None:
    """The configured root handler: the loop's thread queues, log-writer writes."""
    handler = configured_handler()
    stream = RecordingStream()
    previous = handler.target.setStream(stream)  # type: ignore[arg-type]
    try:
        logging.getLogger("tests.logqueue").warning("from the loop %s", "thread")
        logging_thread = threading.current_thread()
        handler.stop()  # everything queued is written before it returns
    finally:
        handler.target.setStream(previous)
    assert logging_thread is threading.main_thread()  # where pytest-asyncio runs the event loop
    mine = [(name, text) for name, text in stream.writes if "from the loop thread" in text]
    assert [name for name, _ in mine] == [THREAD_NAME]
    assert " WARNING tests.logqueue from the loop thread" in mine[0][1]


def test_other_handlers_still_see_the_record_as_it_was_logged(caplog: pytest.LogCaptureFixture) -> None:
    """caplog, like the counting handlers, gets the record with its arguments and exception."""
    argument = ["room", 12]
    with caplog.at_level(logging.INFO, logger="tests.logqueue"):
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tests.logqueue").exception("failed for %s", argument)
    [record] = [r for r in caplog.records if r.name == "tests.logqueue"]
    assert record.args == (argument,) and record.args[0] is argument
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert record.getMessage() == "failed for ['room', 12]"


def test_the_writer_gets_the_message_and_the_traceback_as_text() -> None:
    stream = RecordingStream()
    with queued_logger(stream) as (log, handler):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed for %s", {"room": 12})
        handler.stop()
    text = "".join(t for _, t in stream.writes)
    assert "ERROR" in text and "failed for {'room': 12}" in text
    assert "Traceback (most recent call last)" in text and "ValueError: boom" in text
    assert stream.writers() == {THREAD_NAME}


def test_nothing_queued_is_lost_when_the_handler_stops() -> None:
    """Thousands of lines queued faster than they are written: stop() writes them all, in order."""
    gate = threading.Event()
    stream = RecordingStream(gate)
    with queued_logger(stream) as (log, handler):
        for i in range(3000):
            log.info("line %d", i)
        assert handler.queue.qsize() > 0  # the writer is held: the lines wait in the queue
        gate.set()
        handler.stop()
        assert handler.writer is None
        assert [line.rsplit(" ", 1)[1] for line in stream.lines()] == [str(i) for i in range(3000)]
        # A record after a stop (logging.shutdown, a later dictConfig such as uvicorn's) starts the writer again.
        log.info("after the stop")
        assert handler.writer is not None and handler.writer.name == THREAD_NAME
        handler.stop()
    assert stream.lines()[-1].endswith("after the stop")
    assert stream.writers() == {THREAD_NAME}


def test_a_full_queue_drops_records_and_the_writer_says_how_many() -> None:
    """A stream that blocks never blocks the thread that logs: past the capacity, records are dropped and counted."""
    gate = threading.Event()
    stream = RecordingStream(gate)
    with queued_logger(stream, capacity=10) as (log, handler):
        for i in range(50):
            log.warning("line %d", i)  # returns at once although nothing can be written
        dropped = handler.dropped
        assert dropped >= 50 - 10 - 1  # at most one record in the writer's hands and ten in the queue
        gate.set()
        handler.stop()
    lines = stream.lines()
    written = [line for line in lines if " line " in line]
    [report] = [line for line in lines if "dropped" in line]
    assert len(written) + dropped == 50
    assert f"{dropped} log records dropped" in report and report.startswith("WARNING perf.logqueue ")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings.test", **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def test_a_process_writes_every_line_before_it_exits() -> None:
    """At exit the writer empties the queue (atexit): a burst logged just before exiting is all there."""
    done = run_python(
        "import django, logging\n"
        "django.setup()\n"
        "log = logging.getLogger('tests.burst')\n"
        "for i in range(5000):\n"
        "    log.warning('burst %d', i)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if " tests.burst burst " in line]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [str(i) for i in range(5000)]


def test_a_forked_child_writes_its_own_lines_once() -> None:
    """A fork-based server: the child starts a writer of its own and does not repeat the parent's queue."""
    done = run_python(
        "import django, logging, os, sys\n"
        "django.setup()\n"
        "log = logging.getLogger('tests.fork')\n"
        "for i in range(500):\n"
        "    log.warning('parent before %d', i)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    for i in range(500):\n"
        "        log.warning('child %d', i)\n"
        "    sys.exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "log.warning('parent after, child status %d', status)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    parent = [line.rsplit(" ", 1)[1] for line in lines if " tests.fork parent before " in line]
    child = [line.rsplit(" ", 1)[1] for line in lines if " tests.fork child " in line]
    assert parent == [str(i) for i in range(500)]
    assert child == [str(i) for i in range(500)]
    assert any("parent after, child status 0" in line for line in lines)


def test_logging_a_burst_from_the_loop_thread_does_not_wait_for_the_stream() -> None:
    """With the stream blocked, a thousand records still return: the thread that logs only queues them."""
    gate = threading.Event()
    stream = RecordingStream(gate)
    with queued_logger(stream) as (log, handler):
        finished = threading.Event()

        def burst() -> None:
            for i in range(1000):
                log.warning("held %d", i)
            finished.set()

        thread = threading.Thread(target=burst)
        thread.start()
        assert finished.wait(30)  # while nothing at all has been written
        assert stream.writes == []
        gate.set()
        thread.join(30)
        handler.stop()
    assert len(stream.lines()) == 1000
