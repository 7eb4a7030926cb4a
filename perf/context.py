"""Who is running the current database work: request id, view, consumer, command.

Values live in context variables, so they follow the code that runs on behalf
of one HTTP request or one WebSocket connection: asyncio tasks copy the context
when they start, and asgiref's ``sync_to_async`` (and so Channels'
``database_sync_to_async``) runs the thread's function in a copy of the
caller's context. A value bound in a consumer's ``connect`` is therefore
visible to the query wrapper in the database thread.

Per-request query totals are one mutable ``DbTotals`` object shared by
reference: the copies of the context made for threads all point at the same
object, so the counts made in a view thread add up where the middleware reads
them.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")


@dataclass
class DbTotals:
    """Queries run and time spent in the database for one unit of work."""

    queries: int = 0
    seconds: float = 0.0

    @property
    def ms(self) -> float:
        return self.seconds * 1000.0


@dataclass
class Scope:
    """What the current code runs for. ``request`` gives the view name lazily."""

    request_id: str | None = None
    view: str | None = None
    consumer: str | None = None
    command: str | None = None
    request: Any = None

    def view_name(self) -> str | None:
        if self.view:
            return self.view
        match = getattr(self.request, "resolver_match", None)
        return match.view_name if match is not None else None


_scope: ContextVar[Scope | None] = ContextVar("perf_scope", default=None)
_totals: ContextVar[DbTotals | None] = ContextVar("perf_db_totals", default=None)


def request_id_from(value: Any) -> str:
    """``value`` when it is a sane request id (what a proxy would send), else a new uuid4 hex."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str) and _REQUEST_ID_RE.match(value):
        return value
    return uuid.uuid4().hex


def scope_request_id(scope: dict[str, Any]) -> str:
    """The request id of an ASGI connection: its X-Request-ID header if sane, else a new one."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-request-id":
            return request_id_from(value)
    return request_id_from(None)


def bind(
    *,
    request_id: str | None = None,
    view: str | None = None,
    consumer: str | None = None,
    command: str | None = None,
    request: Any = None,
    totals: bool = False,
) -> Token[Scope | None]:
    """Name the work that follows in this context; returns a token for ``unbind``.

    A WebSocket consumer calls this once in ``connect``; the binding lasts for
    the connection's task and reaches every ``database_sync_to_async`` call.
    With ``totals=True`` a fresh ``DbTotals`` starts counting as well.
    """
    if totals:
        _totals.set(DbTotals())
    return _scope.set(
        Scope(request_id=request_id, view=view, consumer=consumer, command=command, request=request)
    )


def unbind(token: Token[Scope | None]) -> None:
    _scope.reset(token)


def start_totals() -> Token[DbTotals | None]:
    return _totals.set(DbTotals())


def stop_totals(token: Token[DbTotals | None]) -> None:
    _totals.reset(token)


def current_totals() -> DbTotals | None:
    """The query count and database time of the current request (None outside one)."""
    return _totals.get()


def record_query(seconds: float) -> None:
    totals = _totals.get()
    if totals is not None:
        totals.queries += 1
        totals.seconds += seconds


def _process_command() -> dict[str, str]:
    """The fallback when nothing was bound: ``manage.py <command>`` or the program name."""
    argv = sys.argv or [""]
    path = argv[0] or ""
    program = os.path.basename(path)
    is_django = program in ("manage.py", "django-admin") or (
        program == "__main__.py" and os.path.basename(os.path.dirname(path)) == "django"
    )
    if is_django and len(argv) > 1:
        return {"command": argv[1]}
    if program == "__main__.py":  # python -m <package>
        program = os.path.basename(os.path.dirname(path))
    return {"process": program or "python"}


def current() -> dict[str, str]:
    """The bound names as a dict without empty values; the process fallback when unbound."""
    scope = _scope.get()
    if scope is None:
        return _process_command()
    found = {
        "request_id": scope.request_id,
        "view": scope.view_name(),
        "consumer": scope.consumer,
        "command": scope.command,
    }
    return {key: value for key, value in found.items() if value}
