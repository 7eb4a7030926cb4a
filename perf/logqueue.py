"""Log lines written by a thread of their own, so no thread that logs waits for the output.

The server's event loop logs too (warnings, slow statements run from it, the
request log of async views). With a plain ``StreamHandler`` the thread that
logs formats the line and writes it to stderr itself, holding the handler's
lock: a burst of lines costs the loop that time, and a stderr pipe that its
reader has stopped draining (a stalled log collector) stops the loop outright.

:class:`QueuedStreamHandler` is what ``LOGGING`` names instead (Python 3.11's
``dictConfig`` has no ``"queue"`` handler of its own; 3.12's would do the
same). In the thread that logs it only merges the message with its arguments
(done there because the arguments may be objects that change, or that need
that thread) and puts a copy of the record on a queue; a writer
thread, ``log-writer``, formats it with the configured
formatter and writes it to the stream. The record the logger passes on is
left as it was, so other handlers (pytest's ``caplog``, the counting handlers
of ``perf.cache`` and ``perf.metrics``) still see its arguments.

* The writer starts at the first record, so a process that never logs runs
  no thread. ``close()`` (``logging.shutdown``, and every ``dictConfig`` that
  replaces the configuration, uvicorn's included) stops it after it has
  written everything queued; a record that comes after that starts it again.
* At exit (``atexit``) the writers are stopped, so nothing queued is lost;
  records logged after that are written directly.
* After ``fork()`` the child has a new, empty queue and starts its own
  writer at its first record (the parent's thread is not in the child).
  Before the fork the writer is held between two lines (waiting up to a
  second for the line it is writing), so the child does not inherit a stream
  whose lock is held by a thread that does not exist there.
* The queue holds at most ``capacity`` records. When the writer cannot keep
  up (the stream blocks), further records are dropped instead of queued, and
  the writer says how many once it gets going again: the process never waits
  for its log and never grows without bound.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import threading
import weakref
from typing import IO

THREAD_NAME = "log-writer"
DEFAULT_CAPACITY = 10_000
FORK_WAIT = 1.0  # seconds to wait before a fork for the writer to finish a line

_handlers: weakref.WeakSet[QueuedStreamHandler] = weakref.WeakSet()
_exiting = False


_STOP = object()  # queued by stop(): the writer ends after everything queued before it


class _Writer:
    """The ``log-writer`` thread of one :class:`QueuedStreamHandler`: writes queued records and reports dropped ones.

    A loop of its own rather than ``logging.handlers.QueueListener``, whose
    thread can be neither named nor reached through its public API.
    """

    def __init__(self, owner: QueuedStreamHandler) -> None:
        self.owner = owner
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        owner = self.owner
        records = owner.queue
        while True:
            record = records.get()
            if record is _STOP:
                return
            self.write(record)

    def write(self, record: logging.LogRecord) -> None:
        owner, target = self.owner, self.owner.target
        # Held while writing, so a fork can wait for the end of a line; only this
        # thread and the fork hook take it (never the logging module's lock).
        with owner.write_lock:
            if record.levelno >= target.level:
                target.handle(record)
            dropped = owner.dropped - owner.dropped_reported
            if dropped:
                owner.dropped_reported += dropped
                target.handle(
                    logging.makeLogRecord(
                        {
                            "name": __name__,
                            "levelno": logging.WARNING,
                            "levelname": "WARNING",
                            "msg": f"{dropped} log records dropped: more than {owner.capacity} were waiting to be written",
                        }
                    )
                )

    def stop(self) -> None:
        """Write everything queued, then end the thread."""
        self.owner.queue.put(_STOP)
        self.thread.join()


class QueuedStreamHandler(logging.handlers.QueueHandler):
    """A ``StreamHandler`` whose writing happens on a thread of its own.

    For ``dictConfig``: ``{"class": "perf.logqueue.QueuedStreamHandler",
    "formatter": ..., "level": ..., "stream": ...}``; ``stream`` defaults to
    ``sys.stderr`` as ``StreamHandler``'s does. The formatter is the stream
    handler's (applied on the writer thread); the level and filters are this
    handler's (applied in the thread that logs, before anything is queued).
    """

    def __init__(self, stream: IO[str] | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__(queue.SimpleQueue())
        self.target = logging.StreamHandler(stream)
        self.capacity = capacity
        self.dropped = 0
        self.dropped_reported = 0
        self.write_lock = threading.Lock()
        self._fork_held = False
        self._writer: _Writer | None = None
        _handlers.add(self)

    # The formatter belongs to the writer: this handler keeps none, so prepare()
    # merges only the message and its arguments (plus any traceback text).
    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        self.target.setFormatter(fmt)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """``QueueHandler.prepare`` at a third of the cost: a copy with the message merged, without args or exc_info.

        The stdlib's ``copy.copy`` of a record costs more than the rest of the
        call; copying its ``__dict__`` gives the same record. The original is
        left as it was for the handlers after this one.
        """
        if record.exc_info or record.exc_text or record.stack_info:
            message = self.format(record)  # the default formatter: message, then the traceback's text
        else:
            message = record.getMessage()
        queued = object.__new__(type(record))
        queued.__dict__.update(record.__dict__)
        queued.message = queued.msg = message
        queued.args = queued.exc_info = queued.exc_text = queued.stack_info = None
        return queued

    @property
    def writer(self) -> threading.Thread | None:
        """The writer thread, while it runs."""
        writer = self._writer
        return writer.thread if writer is not None else None

    def emit(self, record: logging.LogRecord) -> None:
        # Called with self.lock held (Handler.handle): starting and stopping are serialized.
        try:
            if self._writer is None:
                if _exiting:
                    self.target.handle(record)
                    return
                self._start()
            if self.queue.qsize() >= self.capacity:
                self.dropped += 1
                return
            self.enqueue(self.prepare(record))
        except Exception:
            self.handleError(record)

    def _start(self) -> None:
        self._writer = _Writer(self)

    def stop(self) -> None:
        """Write everything queued, then end the writer thread (it starts again at the next record)."""
        with self.lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.stop()
        try:
            self.target.flush()
        except (OSError, ValueError):  # a stream already closed (at exit, pytest's capture): as logging.shutdown
            pass

    def close(self) -> None:
        self.stop()
        super().close()

    def _before_fork(self) -> None:
        # A writer stuck on a blocked stream does not hold up the fork for ever.
        self._fork_held = self.write_lock.acquire(timeout=FORK_WAIT)

    def _after_fork_in_parent(self) -> None:
        if self._fork_held:
            self._fork_held = False
            self.write_lock.release()

    def _after_fork_in_child(self) -> None:
        # The parent's thread, and what it had yet to write, stay the parent's.
        # (logging itself gives every handler, the stream handler too, a new lock.)
        self._fork_held = False
        self.write_lock = threading.Lock()
        self.queue = queue.SimpleQueue()
        self._writer = None


def stop_all() -> None:
    """Write what every handler has queued and stop their threads; later records are written directly."""
    global _exiting
    _exiting = True
    for handler in list(_handlers):
        handler.stop()


def _before_fork() -> None:
    for handler in list(_handlers):
        handler._before_fork()


def _after_fork_in_parent() -> None:
    for handler in list(_handlers):
        handler._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._after_fork_in_child()


atexit.register(stop_all)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
